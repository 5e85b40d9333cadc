"""In-situ series on a result store: drift, tracks and the time table against synthetic truth."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.kernels.register import fit_drift
from pvq_dask.kernels.synth import SynthParams, synthesize_series
from pvq_dask.kernels.track import TRACK_COLUMNS, fit_lattice
from pvq_dask.parallel.series import TIME_COLUMNS, analyze_series
from pvq_dask.store import ResultStore, open_result

#: Drift error allowed against the truth drift of the particle (px).
DRIFT_TOL_PX = 0.1
#: Share of analysed octahedra whose track is their own truth site.
MIN_LINKED_CORRECT = 0.99
#: Matching radius between an analysed Pb and its truth column (px).
TRUTH_MATCH_PX = 4.0
#: Shell theta3 trend (truth: -0.5 deg per frame): allowed error of the fitted slope.
SLOPE_TOL_DEG_PER_FRAME = 0.2
#: Shell theta3 of one frame against the truth (deg): low-dose bias plus ~0.1 deg sem.
SHELL_THETA3_TOL_DEG = 0.35
#: Noise put on the truth tables standing in for fits (px, deg).
TABLE_NOISE_PX = 0.1
TABLE_NOISE_DEG = 0.5

SHAPE = (352, 352)
PARAMS = SynthParams.preset("series", shape=SHAPE, dot_size_nm=4.0, n_frames=3,
                            drift_px_per_frame=(4.5, -3.0), drift_jitter_px=0.5,
                            shell_tilt_rate_deg_per_frame=-0.5)


def _truth_drift(frames):
    """Drift of the particle centre per frame, from the truth Pb columns."""
    pb = (frames[0].atoms["species"] == "Pb").to_numpy()
    ref = frames[0].atoms[["x_px", "y_px"]].to_numpy()[pb]
    return np.array([fit_drift(ref, f.atoms[["x_px", "y_px"]].to_numpy()[pb],
                               height_px=SHAPE[0]).shift_px for f in frames])


def _truth_shell_theta3(frames):
    return np.array([f.octahedra.loc[f.octahedra["region"] == "shell", "theta3_deg"].mean()
                     for f in frames])


def _slope(values):
    return np.polyfit(np.arange(len(values)), values, 1)[0]


def _store(tmp_path, frames, name="s.pvq"):
    store = ResultStore.create(tmp_path / name, n_frames=len(frames), shape=SHAPE,
                               pixel_size_nm=PARAMS.pixel_size_nm)
    for f in frames:
        store.write_frame("raw", f.frame, f.image)
        store.set_done("ingest", f.frame)
    return store


def _link_correctness(frames, octs, tracks):
    """Share of tracked octahedra whose global index maps to their truth site's index by
    one common offset (truth site = nearest truth octahedron to the analysed Pb)."""
    rows = []
    m = tracks.merge(octs[["frame", "oct_id", "x_px", "y_px"]], on=["frame", "oct_id"])
    for f in frames:
        mt = m[m["frame"] == f.frame]
        truth = f.octahedra
        d, idx = cKDTree(truth[["x_px", "y_px"]].to_numpy()).query(
            mt[["x_px", "y_px"]].to_numpy(), distance_upper_bound=TRUTH_MATCH_PX)
        ok = np.isfinite(d)
        tij = truth[["i", "j"]].to_numpy()[idx[ok]]
        rows.append(tij - mt[["i_global", "j_global"]].to_numpy()[ok])
    off = np.concatenate(rows)
    _, counts = np.unique(off, axis=0, return_counts=True)
    return counts.max() / len(tracks)


@pytest.fixture(scope="module")
def frames():
    return synthesize_series(PARAMS, rng=4)


def _analysed(store, frames, rng):
    """Write truth octahedra + fit-like noise as each frame's analysis, every frame numbered
    from its own origin; return the tables."""
    tables = []
    for f in frames:
        o = f.octahedra.copy()
        o[["i", "j"]] += rng.integers(-9, 9, size=2)
        o[["x_px", "y_px"]] += rng.normal(0, TABLE_NOISE_PX, (len(o), 2))
        o["theta3_deg"] += rng.normal(0, TABLE_NOISE_DEG, len(o))
        store.write_table("octahedra", f.frame, o)
        store.set_done("network", f.frame)
        tables.append(o)
    return tables


def test_series_from_analysed_tables(tmp_path, frames):
    """Frames already analysed: nothing is re-analysed, drift/tracks/time table come out
    right."""
    _analysed(_store(tmp_path, frames), frames, np.random.default_rng(1))
    table = analyze_series(tmp_path / "s.pvq", scheduler="threads")
    assert list(table.columns) == list(TIME_COLUMNS)
    assert table["frame"].tolist() == [0, 1, 2]
    assert (table["drift_source"] == "lattice").all()
    got = table[["drift_x_px", "drift_y_px"]].to_numpy()
    assert np.abs(got - _truth_drift(frames)).max() < DRIFT_TOL_PX
    assert (table["n_tracked"] == table["n_octahedra"]).all()
    assert (table["link_agreement"] == 1.0).all()
    # the shell expands as its tilt relaxes: strain, not scan drift
    assert (np.diff(table["strain"]) > 0).all()
    assert np.abs(table[["scan_drift_x_px", "scan_drift_y_px"]].to_numpy()).max() < 0.3
    slope = _slope(table["shell_theta3_deg"].to_numpy())
    assert abs(slope - _slope(_truth_shell_theta3(frames))) < SLOPE_TOL_DEG_PER_FRAME

    result = open_result(tmp_path / "s.pvq")
    tracks = result.table("tracks")
    assert list(tracks.columns) == list(TRACK_COLUMNS)
    assert _link_correctness(frames, result.octahedra, tracks) >= MIN_LINKED_CORRECT
    stored = result.table("series")
    pd.testing.assert_frame_equal(stored[list(TIME_COLUMNS)], table, check_dtype=False)


def test_same_table_on_a_distributed_client(tmp_path, frames):
    """Registration tasks on a distributed Client give exactly the synchronous result."""
    from distributed import Client

    _analysed(_store(tmp_path, frames), frames, np.random.default_rng(1))
    sync = analyze_series(tmp_path / "s.pvq")
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=None) as client:
        dist = analyze_series(tmp_path / "s.pvq", scheduler=client)
    pd.testing.assert_frame_equal(sync, dist)


def _on_cs_sites(octs):
    """The same octahedra moved half a cell diagonal: a network built on the Cs sites."""
    out = octs.copy()
    _, basis = fit_lattice(out[["i", "j"]].to_numpy(), out[["x_px", "y_px"]].to_numpy())
    out[["x_px", "y_px"]] += 0.5 * (basis[0] + basis[1])
    return out


def test_failed_frames(tmp_path, frames):
    """Frame 0's network failed (a few octahedra) and frame 2's sits on the Cs sites: the
    reference becomes frame 1, frame 2 stays untracked and out of the statistics."""
    store = _store(tmp_path, frames)
    octs = _analysed(store, frames, np.random.default_rng(2))
    store.write_table("octahedra", 0, octs[0].iloc[:5])
    store.write_table("octahedra", 2, _on_cs_sites(octs[2]))
    table = analyze_series(tmp_path / "s.pvq")
    truth = _truth_drift(frames)
    assert table.loc[1, ["drift_x_px", "drift_y_px"]].tolist() == [0.0, 0.0]
    got = table.loc[0, ["drift_x_px", "drift_y_px"]].to_numpy(float)
    assert np.abs(got + truth[1]).max() < DRIFT_TOL_PX  # frame 0 relative to frame 1
    assert table["n_tracked"].tolist() == [5, len(octs[1]), 0]
    assert table.loc[2, "drift_source"] == "image"
    assert np.isnan(table.loc[2, "shell_theta3_deg"]) and table.loc[2, "n_shell"] == 0


def test_odd_reference_is_replaced(tmp_path, frames):
    """Frame 0 is complete but on the wrong sublattice: the others do not link to it, so the
    reference moves to the largest of them."""
    store = _store(tmp_path, frames)
    octs = _analysed(store, frames, np.random.default_rng(3))
    store.write_table("octahedra", 0, _on_cs_sites(octs[0]))
    table = analyze_series(tmp_path / "s.pvq")
    ref = int(np.argmax([len(o) for o in octs[1:]])) + 1
    assert table.loc[ref, ["drift_x_px", "drift_y_px"]].tolist() == [0.0, 0.0]
    assert table["n_tracked"].tolist() == [0] + [len(o) for o in octs[1:]]


def test_series_end_to_end(tmp_path, frames):
    """Raw frames in, full per-frame analysis, registration, tracking and the time table."""
    _store(tmp_path, frames)
    cfg = AnalysisConfig(stages=("atoms", "network"))
    table = analyze_series(tmp_path / "s.pvq", cfg)
    assert open_result(tmp_path / "s.pvq").status["network"].all()
    got = table[["drift_x_px", "drift_y_px"]].to_numpy()
    assert np.abs(got - _truth_drift(frames)).max() < DRIFT_TOL_PX, (got, _truth_drift(frames))
    result = open_result(tmp_path / "s.pvq")
    tracks = result.table("tracks")
    assert len(tracks) == table["n_tracked"].sum() >= 0.9 * table["n_octahedra"].sum()
    assert _link_correctness(frames, result.octahedra, tracks) >= MIN_LINKED_CORRECT
    measured = table["shell_theta3_deg"].to_numpy()
    truth = _truth_shell_theta3(frames)
    assert (np.diff(measured) < 0).all(), (measured, truth)
    assert abs(_slope(measured) - _slope(truth)) < SLOPE_TOL_DEG_PER_FRAME, (measured, truth)
    assert np.abs(measured - truth).max() < SHELL_THETA3_TOL_DEG, (measured, truth)


def test_bad_input(tmp_path, frames):
    _store(tmp_path, frames[:2], name="two.pvq")
    path = tmp_path / "two.pvq"
    with pytest.raises(ValueError, match="reference frame 5"):
        analyze_series(path, reference_frame=5, analyze=False)
    with pytest.raises(ValueError, match="out of range"):
        analyze_series(path, frames=[0, 7], analyze=False)
    with pytest.raises(ValueError, match="'network' stage"):
        analyze_series(path, AnalysisConfig(stages=("atoms",)))
    with pytest.raises(ValueError, match="no octahedral network"):
        analyze_series(path, analyze=False)
