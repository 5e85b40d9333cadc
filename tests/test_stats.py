"""Core/shell and per-layer statistics (kernels.stats) against hand-computed numbers."""

import numpy as np
import pandas as pd
import pytest

from pvq_dask.kernels.stats import (
    describe,
    format_summary,
    group_statistics,
    histogram,
    layer_statistics,
    region_histograms,
    summarize_octahedra,
)
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

EXACT = 1e-12                    # hand-computed sums (value units)
SEM_CALIBRATION_TOL = 0.1        # relative: mean sem vs the spread of means (Monte Carlo)
TRUTH_PLATEAU_TOL_DEG = 1e-3     # generator matches its region means to the request


def test_describe_matches_hand_computed_values():
    d = describe([8.5, 9.0, 9.5, 10.0, np.nan, np.inf])
    assert d["n"] == 4
    assert d["mean"] == pytest.approx(9.25, abs=EXACT)
    std = np.sqrt((0.75 ** 2 + 0.25 ** 2 + 0.25 ** 2 + 0.75 ** 2) / 3)
    assert d["std"] == pytest.approx(std, abs=EXACT)
    assert d["sem"] == pytest.approx(std / np.sqrt(4), abs=EXACT)
    assert d["median"] == pytest.approx(9.25, abs=EXACT)


def test_weighted_statistics_match_hand_computed_values():
    d = describe([1.0, 3.0, 5.0], errors=[1.0, 2.0, np.nan])
    assert d["n"] == 3 and d["n_weighted"] == 2
    assert d["weighted_mean"] == pytest.approx((1.0 + 3.0 / 4) / (1 + 1 / 4), abs=EXACT)
    assert d["weighted_sem"] == pytest.approx(1 / np.sqrt(1.25), abs=EXACT)
    # chi2 = (1 - 1.4)^2 / 1 + (3 - 1.4)^2 / 4 = 0.8 with one degree of freedom
    assert d["reduced_chi2"] == pytest.approx(0.8, abs=EXACT)


def test_small_and_empty_samples_are_nan_not_errors():
    one = describe([2.0])
    assert one["n"] == 1 and one["mean"] == 2.0 and np.isnan(one["sem"])
    none = describe([], errors=[])
    assert none["n"] == 0 and np.isnan(none["mean"]) and np.isnan(none["weighted_mean"])


def test_standard_error_is_calibrated():
    rng = np.random.default_rng(0)
    samples = rng.normal(10.0, 0.7, size=(2000, 25))
    sems = np.array([describe(s)["sem"] for s in samples[:400]])
    spread = samples.mean(axis=1).std(ddof=1)
    assert sems.mean() == pytest.approx(spread, rel=SEM_CALIBRATION_TOL)


def test_group_and_layer_statistics():
    g = group_statistics([1.0, 2.0, 3.0, 10.0], ["a", "a", "a", "b"], groups=["b", "a", "c"])
    assert list(g) == ["b", "a", "c"]
    assert g["a"]["mean"] == 2.0 and g["b"]["n"] == 1 and g["c"]["n"] == 0
    layers = layer_statistics([8.0, 8.4, 9.0, 11.0, 11.2, 11.4], [0, 0, 1, 2, 5, 7],
                              max_layer=2)
    assert sorted(layers) == [0, 1, 2]
    assert layers[0]["mean"] == pytest.approx(8.2, abs=EXACT)
    assert layers[2]["n"] == 3 and layers[2]["mean"] == pytest.approx(11.2, abs=EXACT)
    with pytest.raises(ValueError, match="labels"):
        group_statistics([1.0, 2.0], ["a"])


def test_histograms_share_edges_and_count_everything():
    rng = np.random.default_rng(1)
    v = np.r_[rng.normal(11, 0.5, 300), rng.normal(9, 0.5, 200), np.nan]
    reg = np.r_[["core"] * 300, ["shell"] * 200, ["core"]]
    h = region_histograms(v, reg, bins=20)
    assert h["core"].sum() == 300 and h["shell"].sum() == 200
    assert len(h["edges"]) == 21
    counts, edges = histogram(v, bins=10)
    assert counts.sum() == 500 and edges[0] == np.nanmin(v)


def _table():
    """Hand-made table: 3 shell, 3 core, 1 edge-excluded octahedron."""
    return pd.DataFrame({
        "x_px": np.arange(7.0), "y_px": np.zeros(7),
        "theta3_deg": [8.0, 9.0, 10.0, 11.0, 11.5, 12.5, 40.0],
        "theta3_err_deg": [0.5, 0.5, 1.0, 0.5, 0.5, 0.5, 0.1],
        "L1_nm": [0.63, 0.632, 0.634, 0.64, 0.64, 0.64, 0.1],
        "surface_distance_uc": [0, 1, 2, 3, 4, 5, 0],
        "region": ["shell", "shell", "shell", "core", "core", "core", "edge_excluded"],
    })


def test_summarize_octahedra_core_and_shell_by_hand():
    s = summarize_octahedra(_table(), metrics=("theta3_deg", "L1_nm", "absent_deg"))
    assert (s["n_octahedra"], s["n_core"], s["n_shell"], s["n_edge_excluded"]) == (7, 3, 3, 1)
    th = s["metrics"]["theta3_deg"]
    assert "absent_deg" not in s["metrics"]
    assert th["shell"]["mean"] == pytest.approx(9.0, abs=EXACT)
    assert th["shell"]["sem"] == pytest.approx(1.0 / np.sqrt(3), abs=EXACT)
    assert th["core"]["mean"] == pytest.approx(35.0 / 3, abs=EXACT)
    core_std = np.std([11.0, 11.5, 12.5], ddof=1)
    assert th["core"]["sem"] == pytest.approx(core_std / np.sqrt(3), abs=EXACT)
    assert th["core_minus_shell"]["diff"] == pytest.approx(35.0 / 3 - 9.0, abs=EXACT)
    assert th["core_minus_shell"]["sem"] == pytest.approx(
        np.hypot(core_std / np.sqrt(3), 1 / np.sqrt(3)), abs=EXACT)
    # Weighted shell mean: (8/0.25 + 9/0.25 + 10/1) / (4 + 4 + 1)
    assert th["shell"]["weighted_mean"] == pytest.approx((32 + 36 + 10) / 9, abs=EXACT)
    assert th["all"]["n"] == 6                                  # edge-excluded left out
    layers = s["layers"]["theta3_deg"]
    assert sorted(layers) == [0, 1, 2, 3, 4, 5] and layers[0]["n"] == 1   # not the 40 deg
    assert layers[0]["mean"] == 8.0
    assert "weighted_mean" not in s["metrics"]["L1_nm"]["core"]  # no L1_err_nm column


def test_shell_width_is_a_parameter():
    s = summarize_octahedra(_table(), shell_width_uc=1, metrics=("theta3_deg",))
    assert (s["n_core"], s["n_shell"]) == (5, 1)
    assert s["metrics"]["theta3_deg"]["shell"]["mean"] == 8.0
    with pytest.raises(ValueError, match="shell_width_uc"):
        summarize_octahedra(_table(), shell_width_uc=-1)
    with pytest.raises(ValueError, match="region"):
        summarize_octahedra({"theta3_deg": np.ones(3)})


def test_summary_of_synthetic_truth_reproduces_the_requested_plateaus():
    p = SynthParams.preset("coreshell", shape=(512, 512), dot_size_nm=7.0)
    f = synthesize_frame(p, rng=np.random.default_rng(5))
    s = summarize_octahedra(f.octahedra, shell_width_uc=p.shell_width_uc)
    th = s["metrics"]["theta3_deg"]
    want_core = 0.5 * (p.core_theta1_deg + p.core_theta2_deg)
    want_shell = 0.5 * (p.shell_theta1_deg + p.shell_theta2_deg)
    assert th["core"]["mean"] == pytest.approx(want_core, abs=TRUTH_PLATEAU_TOL_DEG)
    assert th["shell"]["mean"] == pytest.approx(want_shell, abs=TRUTH_PLATEAU_TOL_DEG)
    text = format_summary(s)
    assert text.splitlines()[0].startswith(f"octahedra: {len(f.octahedra)}")
    assert f"theta3_deg: core {want_core:.3f}" in text
