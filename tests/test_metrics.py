"""Octahedron metrics: hand-computed cases, invariances, propagated uncertainties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvq_dask.kernels.metrics import cell_metrics, octahedra_metrics
from pvq_dask.kernels.network import OctahedralNetwork, network_from_indices
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

ANGLE_TOL_DEG = 1e-9
INVARIANCE_TOL_DEG = 1e-7
ZSCORE_STD_RANGE = (0.9, 1.1)     # propagated sigma vs Monte-Carlo scatter


def _one(phis_deg, lengths):
    """Pb at the origin, four halides along +x, -x, +y, -y each turned by phi_k."""
    base = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], float)
    pts = [[0.0, 0.0]]
    for b, ph, ln in zip(base, np.deg2rad(phis_deg), lengths):
        c, s = np.cos(ph), np.sin(ph)
        pts.append(ln * np.array([c * b[0] - s * b[1], s * b[0] + c * b[1]]))
    net = OctahedralNetwork(pb=np.array([0]), ij=np.array([[0, 0]]),
                            x_bonds=np.array([[1, 2, 3, 4]]),
                            cs=np.zeros(0, int), cs_ij=np.zeros((0, 2), int))
    return np.array(pts), net


def test_hand_computed_distorted_octahedron():
    # phi = 8, 12 (horizontal) and 10, 14 (vertical), unequal bond lengths (px)
    xy, net = _one([8.0, 12.0, 10.0, 14.0], [18.0, 19.0, 18.5, 20.0])
    m = octahedra_metrics(xy, net, pixel_size_nm=0.0168)
    assert m["theta1_deg"][0] == pytest.approx(10.0, abs=ANGLE_TOL_DEG)
    assert m["theta2_deg"][0] == pytest.approx(12.0, abs=ANGLE_TOL_DEG)
    assert m["theta3_deg"][0] == pytest.approx(11.0, abs=ANGLE_TOL_DEG)
    assert m["L1_nm"][0] == pytest.approx((18.0 + 19.0) * 0.0168)
    assert m["L2_nm"][0] == pytest.approx((18.5 + 20.0) * 0.0168)
    assert m["rotation_sense"][0] == 1
    # the mirror image turns the other way, same magnitudes
    xy_m = xy * np.array([1.0, -1.0])
    swapped = OctahedralNetwork(pb=net.pb, ij=net.ij, x_bonds=net.x_bonds[:, [0, 1, 3, 2]],
                                cs=net.cs, cs_ij=net.cs_ij)     # mirroring swaps +y and -y
    mm = octahedra_metrics(xy_m, swapped, pixel_size_nm=0.0168)
    assert mm["rotation_sense"][0] == -1
    assert mm["theta3_deg"][0] == pytest.approx(11.0, abs=ANGLE_TOL_DEG)


def test_missing_halide_uses_remaining_bonds():
    xy, net = _one([8.0, 12.0, 10.0, 14.0], [18.0] * 4)
    xb = net.x_bonds.copy()
    xb[0, 1] = -1
    net2 = OctahedralNetwork(pb=net.pb, ij=net.ij, x_bonds=xb, cs=net.cs, cs_ij=net.cs_ij)
    m = octahedra_metrics(xy, net2, pixel_size_nm=1.0)
    assert m["theta1_deg"][0] == pytest.approx(8.0)
    assert np.isnan(m["L1_nm"][0])


@pytest.fixture(scope="module")
def truth():
    return synthesize_frame(SynthParams.preset("clean", shape=(384, 384), dot_size_nm=5.0), rng=0)


@settings(max_examples=25, deadline=None)
@given(angle=st.floats(-180, 180), dx=st.floats(-500, 500), dy=st.floats(-500, 500))
def test_invariant_under_rotation_and_translation(truth, angle, dx, dy):
    a = truth.atoms
    net = network_from_indices(a.species.to_numpy(), a.i.to_numpy(), a.j.to_numpy())
    xy = truth.xy
    ref = octahedra_metrics(xy, net, pixel_size_nm=0.0168)
    t = np.deg2rad(angle)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = octahedra_metrics(xy @ R.T + [dx, dy], net, pixel_size_nm=0.0168)
    for col in ("theta1_deg", "theta2_deg", "theta3_deg", "L1_nm", "L2_nm"):
        np.testing.assert_allclose(moved[col], ref[col], atol=INVARIANCE_TOL_DEG)


def test_propagated_uncertainty_matches_monte_carlo(truth):
    a = truth.atoms
    net = network_from_indices(a.species.to_numpy(), a.i.to_numpy(), a.j.to_numpy())
    rng = np.random.default_rng(0)
    n = len(a)
    sig = rng.uniform(0.2, 0.6, n)                       # px, different per atom
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0] = sig**2
    cov[:, 1, 1] = (0.8 * sig) ** 2
    ref = octahedra_metrics(truth.xy, net, pixel_size_nm=0.0168)
    z = {k: [] for k in ("theta1", "theta3", "L1")}
    for _ in range(40):
        noise = rng.standard_normal((n, 2)) * np.c_[sig, 0.8 * sig]
        m = octahedra_metrics(truth.xy + noise, net, pixel_size_nm=0.0168, cov=cov)
        z["theta1"].append((m["theta1_deg"] - ref["theta1_deg"]) / m["theta1_err_deg"])
        z["theta3"].append((m["theta3_deg"] - ref["theta3_deg"]) / m["theta3_err_deg"])
        z["L1"].append((m["L1_nm"] - ref["L1_nm"]) / m["L1_err_nm"])
    for key, vals in z.items():
        s = np.nanstd(np.concatenate(vals))
        assert ZSCORE_STD_RANGE[0] < s < ZSCORE_STD_RANGE[1], (key, s)


def test_cell_spacings_match_geometry(truth):
    c = cell_metrics(truth.xy, truth.network, pixel_size_nm=truth.pixel_size_nm)
    a_pc = 2 * 0.3165 * np.cos(np.deg2rad(10.0))
    assert np.nanmedian(c["P1_nm"]) == pytest.approx(a_pc, rel=0.01)
    assert np.nanmedian(c["C2_nm"]) == pytest.approx(a_pc, rel=0.01)
    assert np.nanmedian(c["a_nm"]) == pytest.approx(np.sqrt(2) * a_pc, rel=0.01)
