"""Line profiles with the paper's four-line integration (kernels.profiles)."""

import numpy as np
import pytest

from pvq_dask.kernels.profiles import line_profile, octahedra_profile

SPACING_NM = 0.62
STEP_AT_NM = 4.3                 # where the synthetic field jumps, along the segment
NOISE_DEG = 0.4                  # per-site noise of the synthetic field
PLATEAU_Z_MAX = 4.0              # bin means away from the step: |mean - plateau| / (noise / sqrt n)
SEM_RATIO_MAX = 0.65             # four lines vs one: sem should drop by ~1/2
SEM_CALIBRATION_TOL = 0.25       # relative: median sem vs noise / sqrt(n)


def _lattice(n=24, rotation_deg=17.0):
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    t = np.deg2rad(rotation_deg)
    x = 1.0 + SPACING_NM * (np.cos(t) * ii - np.sin(t) * jj) + 5.0
    y = 1.0 + SPACING_NM * (np.sin(t) * ii + np.cos(t) * jj)
    return x.ravel(), y.ravel(), t


def _segment(t, length=10.0):
    """A segment through the lattice along its u axis, starting inside it."""
    start = np.array([6.0 + 2 * SPACING_NM * np.cos(t) - 6 * SPACING_NM * np.sin(t),
                      1.0 + 2 * SPACING_NM * np.sin(t) + 6 * SPACING_NM * np.cos(t)])
    start = start + 0.5 * SPACING_NM * np.array([-np.sin(t), np.cos(t)])
    end = start + length * np.array([np.cos(t), np.sin(t)])
    return start, end


def _step_field(x, y, start, end, rng):
    tdir = (end - start) / np.linalg.norm(end - start)
    along = (np.c_[x, y] - start) @ tdir
    return np.where(along < STEP_AT_NM, 8.0, 11.0) + rng.normal(0, NOISE_DEG, len(x))


def test_step_is_found_at_the_right_distance():
    rng = np.random.default_rng(0)
    x, y, t = _lattice()
    start, end = _segment(t)
    v = _step_field(x, y, start, end, rng)
    p = line_profile(x, y, v, start, end, spacing=SPACING_NM)
    d = p["distance_nm"]
    half = p["spacing_nm"] / 2                      # bins are one spacing long
    low = d + half <= STEP_AT_NM
    high = d - half >= STEP_AT_NM
    assert low.sum() >= 5 and high.sum() >= 5
    z_low = (p["mean"][low] - 8.0) / (NOISE_DEG / np.sqrt(p["n"][low]))
    z_high = (p["mean"][high] - 11.0) / (NOISE_DEG / np.sqrt(p["n"][high]))
    assert np.all(np.abs(z_low) < PLATEAU_Z_MAX) and np.all(np.abs(z_high) < PLATEAU_Z_MAX)
    # The first bin above the midpoint 9.5 is the one holding the step (or just after it).
    k = int(np.argmax(p["mean"] > 9.5))
    assert abs(d[k] - STEP_AT_NM) <= 1.5 * p["spacing_nm"]
    # Four lines, one site per spacing each: ~4 sites per bin on average (any rotation).
    assert p["n"].mean() == pytest.approx(4.0, rel=0.15)
    assert p["line_mean"].shape == (4, len(d))


def test_four_line_integration_reduces_the_standard_error():
    rng = np.random.default_rng(1)
    x, y, t = _lattice()
    start, end = _segment(t)
    v = 9.0 + rng.normal(0, NOISE_DEG, len(x))
    bw = 2 * SPACING_NM                             # >= 2 sites per bin on a single line
    one = line_profile(x, y, v, start, end, spacing=SPACING_NM, n_lines=1, bin_width=bw)
    four = line_profile(x, y, v, start, end, spacing=SPACING_NM, n_lines=4, bin_width=bw)
    full = (one["n"] >= 2) & (four["n"] >= 2)
    assert np.median(four["n"][full]) >= 3.5 * np.median(one["n"][full])
    ratio = np.nanmedian(four["sem"][full]) / np.nanmedian(one["sem"][full])
    assert ratio < SEM_RATIO_MAX
    expected = NOISE_DEG / np.sqrt(np.median(four["n"][full]))
    assert np.nanmedian(four["sem"][full]) == pytest.approx(expected, rel=SEM_CALIBRATION_TOL)


def test_band_excludes_far_sites_and_errors_propagate():
    x = np.array([0.5, 1.5, 2.5, 0.5, 1.5])
    y = np.array([0.0, 0.1, -0.1, 5.0, -5.0])          # last two far from the segment
    v = np.array([1.0, 2.0, 3.0, 100.0, 100.0])
    p = line_profile(x, y, v, (0, 0), (3, 0), spacing=1.0, errors=[0.3, 0.4, 0.5, 1, 1])
    assert p["mean"].tolist() == [1.0, 2.0, 3.0]
    assert p["n"].tolist() == [1, 1, 1] and np.all(np.isnan(p["sem"]))
    np.testing.assert_allclose(p["err_propagated"], [0.3, 0.4, 0.5])
    np.testing.assert_allclose(p["offset_nm"], [-1.5, -0.5, 0.5, 1.5])


def test_table_helper_in_px_and_nm_agree_and_skips_edge_excluded():
    ps = 0.0168
    x, y, t = _lattice(n=16, rotation_deg=0.0)
    table = {"x_px": x / ps, "y_px": y / ps, "theta3_deg": 9.0 + 0.1 * x,
             "theta3_err_deg": np.full(len(x), 0.2),
             "region": np.where(x > 12.0, "edge_excluded", "core")}
    table["theta3_deg"][x > 12.0] = 99.0
    start, end = (6.0, 4.0), (16.0, 4.0)
    nm = octahedra_profile(table, start, end, pixel_size_nm=ps)
    px = octahedra_profile(table, np.divide(start, ps), np.divide(end, ps), units="px",
                           pixel_size_nm=ps)
    np.testing.assert_allclose(nm["distance_nm"], px["distance_nm"])
    np.testing.assert_allclose(nm["mean"], px["mean"], equal_nan=True)
    assert np.nanmax(nm["mean"]) < 99.0
    assert "err_propagated" in nm


@pytest.mark.parametrize("kwargs, match", [
    (dict(end=(0.0, 0.0)), "empty"),
    (dict(n_lines=0), "n_lines"),
    (dict(spacing=-1.0), "spacing"),
    (dict(values=[1.0]), "differ in length"),
    (dict(errors=[1.0]), "errors"),
])
def test_bad_input_is_rejected(kwargs, match):
    args = dict(x=[0.0, 1.0], y=[0.0, 0.0], values=[1.0, 2.0], start=(0.0, 0.0),
                end=(2.0, 0.0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        line_profile(**args)
    with pytest.raises(ValueError, match="units"):
        octahedra_profile({"x_px": [0.0], "y_px": [0.0], "theta3_deg": [1.0]}, (0, 0), (1, 0),
                          pixel_size_nm=0.1, units="inch")
