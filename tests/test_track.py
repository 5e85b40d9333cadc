"""Linking octahedra across frames: scrambled per-frame numbering, edge churn, drift."""

import numpy as np
import pandas as pd
import pytest

from pvq_dask.kernels.register import register_stack
from pvq_dask.kernels.synth import SynthParams, synthesize_series
from pvq_dask.kernels.track import TRACK_COLUMNS, fit_lattice, link_lattice, track_octahedra

#: Fraction of octahedra that must link to their own truth site.
MIN_LINKED_CORRECT = 0.99
#: Position noise added to truth Pb positions (px), like a low-dose fit.
POSITION_NOISE_PX = 0.3
#: Rotation of the particle in the rotation test (deg).
ROTATION_DEG = 8.0

SHAPE = (384, 384)
SYMMETRIES = [np.array(m) for m in ([[1, 0], [0, 1]], [[0, 1], [1, 0]], [[-1, 0], [0, 1]],
                                    [[0, -1], [1, 0]])]


@pytest.fixture(scope="module")
def series():
    p = SynthParams.preset("series", shape=SHAPE, dot_size_nm=4.2, n_frames=4,
                           drift_px_per_frame=(9.0, -6.0), drift_jitter_px=1.0)
    return synthesize_series(p, rng=7)


def _truth_drift(frames):
    rows = []
    pb = (frames[0].atoms["species"] == "Pb").to_numpy()
    xy0 = frames[0].atoms[["x_px", "y_px"]].to_numpy()[pb]
    for f in frames:
        d = (f.atoms[["x_px", "y_px"]].to_numpy()[pb] - xy0).mean(axis=0)
        rows.append((f.frame, d[0], d[1]))
    return pd.DataFrame(rows, columns=["frame", "drift_x_px", "drift_y_px"])


def _scrambled(frames, rng, drop_frac=0.15):
    """Truth octahedra per frame, renumbered by a random symmetry + offset, with noise and
    a random share of the outermost octahedra missing; keeps the truth index aside."""
    parts = []
    for f, m in zip(frames, SYMMETRIES):
        o = f.octahedra.copy()
        o["truth_i"], o["truth_j"] = o["i"], o["j"]
        outer = (o["surface_distance_uc"] == 0).to_numpy()
        drop = outer & (rng.random(len(o)) < 2 * drop_frac)
        o = o[~drop].reset_index(drop=True)
        ij = o[["i", "j"]].to_numpy() @ m.T + rng.integers(-20, 20, size=2)
        o["i"], o["j"] = ij[:, 0], ij[:, 1]
        o["oct_id"] = rng.permutation(len(o))
        o[["x_px", "y_px"]] += rng.normal(0, POSITION_NOISE_PX, (len(o), 2))
        parts.append(o)
    return pd.concat(parts, ignore_index=True)


def _correct_fraction(octs, tracks):
    """Share of rows whose global index maps onto their truth index by one common offset."""
    m = tracks.merge(octs[["frame", "oct_id", "truth_i", "truth_j"]], on=["frame", "oct_id"])
    off = m[["truth_i", "truth_j"]].to_numpy() - m[["i_global", "j_global"]].to_numpy()
    _, counts = np.unique(off, axis=0, return_counts=True)
    return counts.max() / len(octs)


def test_tracks_link_to_their_truth_site(series, rng):
    octs = _scrambled(series, rng)
    tracks, links = track_octahedra(octs, _truth_drift(series), height_px=SHAPE[0])
    assert list(tracks.columns) == list(TRACK_COLUMNS)
    assert len(tracks) == len(octs)
    assert _correct_fraction(octs, tracks) >= MIN_LINKED_CORRECT
    # One track per truth site, and a site's track id is the same in every frame.
    m = tracks.merge(octs[["frame", "oct_id", "truth_i", "truth_j"]], on=["frame", "oct_id"])
    assert (m.groupby("track_id")[["truth_i", "truth_j"]].nunique() == 1).all().all()
    assert m.groupby(["truth_i", "truth_j"])["track_id"].nunique().max() == 1
    for t, m_true in enumerate(SYMMETRIES):
        # frame t was renumbered by m_true (frame 0 by the identity): the link undoes it
        np.testing.assert_array_equal(links[t].matrix @ m_true, np.eye(2, dtype=int))
        assert links[t].agreement == 1.0
    ref = tracks[tracks["frame"] == 0].merge(octs[octs["frame"] == 0], on=["frame", "oct_id"])
    assert (ref["i_global"] == ref["i"]).all() and (ref["j_global"] == ref["j"]).all()


def test_tracks_with_registered_drift(series, rng):
    """The same links from image-registered drift instead of the truth drift."""
    octs = _scrambled(series, rng)
    drift = register_stack([f.image for f in series], scan_drift=False)
    tracks, _ = track_octahedra(octs, drift, height_px=SHAPE[0])
    assert _correct_fraction(octs, tracks) >= MIN_LINKED_CORRECT


def test_sites_absent_from_the_reference(series, rng):
    """Octahedra that appear after the reference frame (or never overlap it) still link."""
    octs = _scrambled(series, rng, drop_frac=0.0)
    x_mid = np.median(octs["x_px"])
    left_ref = (octs["frame"] == 0) & (octs["x_px"] > x_mid)
    # frame 3 keeps only the far right: no octahedron near the reference's (left) ones
    right_3 = (octs["frame"] == 3) & (octs["x_px"] < x_mid + 60)
    octs = octs[~left_ref & ~right_3].reset_index(drop=True)
    tracks, links = track_octahedra(octs, _truth_drift(series), height_px=SHAPE[0])
    assert links[3].n_votes == 0  # extrapolated reference lattice
    assert _correct_fraction(octs, tracks) >= MIN_LINKED_CORRECT


def test_rotating_particle(series, rng):
    """A particle that turns by a few degrees still links from a translation-only drift;
    with the fitted rotation the corrected positions land on the reference's."""
    from pvq_dask.kernels.register import fit_drift

    octs = _scrambled(series, rng, drop_frac=0.0)
    last = (octs["frame"] == 3).to_numpy()
    xy = octs.loc[last, ["x_px", "y_px"]].to_numpy()
    centre = xy.mean(axis=0)
    th = np.radians(ROTATION_DEG)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    octs.loc[last, ["x_px", "y_px"]] = centre + (xy - centre) @ rot.T
    drift = _truth_drift(series)
    tracks, links = track_octahedra(octs, drift, height_px=SHAPE[0])
    assert _correct_fraction(octs, tracks) >= MIN_LINKED_CORRECT
    assert links[3].n_votes < last.sum()  # sites far from the centre miss their match
    # refit the drift from the links: the rotation comes out and the residual vanishes
    m = tracks.merge(octs[["frame", "oct_id", "x_px", "y_px"]], on=["frame", "oct_id"])
    ref = m[m["frame"] == 0].merge(m[m["frame"] == 3], on=["i_global", "j_global"])
    fit = fit_drift(ref[["x_px_x", "y_px_x"]].to_numpy(), ref[["x_px_y", "y_px_y"]].to_numpy(),
                    height_px=SHAPE[0])
    assert abs(fit.rotation_deg - ROTATION_DEG) < 0.05
    drift.loc[3, ["drift_x_px", "drift_y_px", "rotation_deg", "centre_x_px", "centre_y_px"]] = [
        *fit.shift_px, fit.rotation_deg, *fit.centre_px]
    tracks, links = track_octahedra(octs, drift, height_px=SHAPE[0])
    assert links[3].agreement == 1.0 and links[3].n_votes == last.sum()


def test_foreign_lattice_is_left_unlinked(series, rng):
    octs = _scrambled(series, rng)
    other = octs["frame"] == 2
    octs.loc[other, ["x_px", "y_px"]] *= 1.8  # not this particle's lattice
    tracks, links = track_octahedra(octs, _truth_drift(series), height_px=SHAPE[0])
    assert links[2] is None
    assert 2 not in set(tracks["frame"])


def test_wrong_sublattice_is_left_unlinked(series, rng):
    """A frame whose 'octahedra' sit on the Cs sites (Pb/Cs swapped) links to nothing."""
    octs = _scrambled(series, rng)
    swapped = (octs["frame"] == 1).to_numpy()
    ref = octs[octs["frame"] == 0]
    _, basis = fit_lattice(ref[["i", "j"]].to_numpy(), ref[["x_px", "y_px"]].to_numpy())
    octs.loc[swapped, ["x_px", "y_px"]] += 0.5 * (basis[0] + basis[1])
    tracks, links = track_octahedra(octs, _truth_drift(series), height_px=SHAPE[0])
    assert links[1] is None and 1 not in set(tracks["frame"])
    assert _correct_fraction(octs[~swapped], tracks) >= MIN_LINKED_CORRECT


def test_link_lattice_single_octahedron():
    ref_ij = np.array([[i, j] for i in range(5) for j in range(5)])
    ref_xy = 30.0 + ref_ij @ np.array([[37.0, 1.5], [-1.5, 37.0]])
    link = link_lattice([[0, 0]], ref_xy[[12]] + 2.0, ref_ij, ref_xy)
    assert link.apply([[0, 0]]).tolist() == [[2, 2]]


@pytest.mark.parametrize("call, match", [
    (lambda: fit_lattice([[0, 0], [1, 0], [2, 0]], np.zeros((3, 2))), "non-collinear"),
    (lambda: fit_lattice([[0, 0]], np.zeros((2, 2))), "same rows"),
    (lambda: link_lattice(np.zeros((0, 2)), np.zeros((0, 2)), [[0, 0], [1, 0], [0, 1]],
                          [[0, 0], [9, 0], [0, 9]]), "no octahedra"),
    (lambda: link_lattice([[0, 0]], [[0, 0]], [[0, 0], [1, 0], [0, 1]],
                          [[0, 0], [9, 0], [0, 9]], match_radius=0.7), "match_radius"),
    (lambda: track_octahedra(pd.DataFrame({"frame": [0]}), height_px=10), "lacks columns"),
    (lambda: track_octahedra(pd.DataFrame({"frame": [0], "oct_id": [0], "x_px": [1.0],
                                           "y_px": [1.0], "i": [0], "j": [0]}),
                             height_px=10), "reference frame 0 has 1"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
