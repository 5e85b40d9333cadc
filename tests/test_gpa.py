"""Geometric phase analysis (kernels.gpa): known strain/rotation, and the generator's dots."""

import numpy as np
import pytest

from pvq_dask.kernels.gpa import choose_reflections, find_bragg_peaks, gpa
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

PERIOD_PX = 18.5                 # column spacing of the test lattice (like the generator's)
SIZE_PX = 256
STRAIN_TOL = 1e-3                # absolute strain error (0.1 %)
ROTATION_TOL_DEG = np.degrees(1e-3)   # 1 mrad (0.1 %)
SHIFT_TOL_PX = 0.05
SPACING_TOL_REL = 1e-3           # uniform lattice: GPA period vs the true one
TRUTH_SPACING_TOL_REL = 0.01     # generator frames: GPA period vs truth Pb-Pb medians


def _lattice_image(fgrad=None, shift=(0.0, 0.0), size=SIZE_PX, sigma=2.4):
    """Gaussian columns at ``F @ (i, j) * PERIOD_PX + shift`` px (a deformed lattice).

    The reference lattice (``F = 1``, no shift) has a column at pixel (0, 0), where the
    phases of its reflections ``g_ref = identity / PERIOD_PX`` are zero.
    """
    fgrad = np.eye(2) if fgrad is None else fgrad
    n = int(2 * size / PERIOD_PX) + 4
    ii, jj = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1))
    ref = np.stack([ii.ravel(), jj.ravel()]) * PERIOD_PX
    pos = fgrad @ ref + np.array([[shift[0]], [shift[1]]])
    yy, xx = np.mgrid[:size, :size].astype(float)
    img = np.zeros((size, size))
    for x0, y0 in pos.T:
        if -4 * sigma < x0 < size + 4 * sigma and -4 * sigma < y0 < size + 4 * sigma:
            sl = (slice(max(int(y0 - 4 * sigma), 0), int(y0 + 4 * sigma) + 1),
                  slice(max(int(x0 - 4 * sigma), 0), int(x0 + 4 * sigma) + 1))
            img[sl] += np.exp(-((xx[sl] - x0) ** 2 + (yy[sl] - y0) ** 2) / (2 * sigma ** 2))
    return img


def _rot(deg):
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


G_REF = np.eye(2) / PERIOD_PX
INNER = (slice(64, 192), slice(64, 192))


@pytest.mark.parametrize("eps, rot_deg", [(0.01, 0.0), (0.01, 2.0), (-0.008, -3.5)])
def test_uniform_strain_and_rotation_are_recovered(eps, rot_deg):
    fgrad = _rot(rot_deg) @ np.diag([1 + eps, 1.0])
    res = gpa(_lattice_image(fgrad), pixel_size_nm=0.0168, g=G_REF, displacement=False)
    for name, want in (("exx", eps), ("eyy", 0.0), ("exy", 0.0)):
        got = getattr(res, name)[INNER]
        assert np.max(np.abs(got - want)) < STRAIN_TOL, name
    assert np.max(np.abs(res.rotation_deg[INNER] - rot_deg)) < ROTATION_TOL_DEG
    assert res.mask[INNER].all()


def test_shear_strain_is_recovered():
    gamma = 0.006
    res = gpa(_lattice_image(np.array([[1.0, gamma], [gamma, 1.0]])), pixel_size_nm=0.0168,
              g=G_REF, displacement=False)
    assert np.max(np.abs(res.exy[INNER] - gamma)) < STRAIN_TOL
    assert np.max(np.abs(res.exx[INNER])) < STRAIN_TOL
    assert np.max(np.abs(res.rotation_deg[INNER])) < ROTATION_TOL_DEG


def test_displacement_of_a_shifted_lattice():
    res = gpa(_lattice_image(shift=(2.0, -3.0)), pixel_size_nm=0.0168, g=G_REF)
    assert np.max(np.abs(res.ux_px[INNER] - 2.0)) < SHIFT_TOL_PX
    assert np.max(np.abs(res.uy_px[INNER] + 3.0)) < SHIFT_TOL_PX
    assert np.max(np.abs(res.exx[INNER])) < STRAIN_TOL


def test_automatic_reflections_and_local_spacings():
    img = _lattice_image(_rot(7.0))
    g = choose_reflections(img)
    ang = np.sort(np.mod(np.degrees(np.arctan2(g[:, 1], g[:, 0])), 180.0))
    np.testing.assert_allclose(ang, [7.0, 97.0], atol=3.0)     # integer FFT bins
    ps = 0.0168
    res = gpa(img, pixel_size_nm=ps, displacement=False)        # reference: this lattice
    for k in range(2):
        assert np.median(res.a_nm[k][INNER]) == pytest.approx(PERIOD_PX * ps,
                                                                rel=SPACING_TOL_REL)
        assert np.median(res.d_nm[k][INNER]) == pytest.approx(PERIOD_PX * ps,
                                                                rel=SPACING_TOL_REL)
    assert np.max(np.abs(res.exx[INNER])) < STRAIN_TOL          # relative to itself
    assert np.max(np.abs(res.rotation_deg[INNER])) < ROTATION_TOL_DEG
    assert res.order.tolist() == [1, 1]
    # Order from an approximate period: a second-harmonic pair gives the same periods.
    res2 = gpa(img, pixel_size_nm=ps, g=2 * res.g, period_nm=PERIOD_PX * ps * 1.1,
               displacement=False)
    assert res2.order.tolist() == [2, 2]
    assert np.median(res2.a_nm[0][INNER]) == pytest.approx(PERIOD_PX * ps, rel=SPACING_TOL_REL)
    assert np.median(res2.d_nm[0][INNER]) == pytest.approx(PERIOD_PX * ps / 2,
                                                             rel=SPACING_TOL_REL)


def _axis_of(g):
    """'P1_nm' for the reflection nearer the x axis (lattice u), else 'P2_nm'."""
    return "P1_nm" if abs(g[0]) >= abs(g[1]) else "P2_nm"


@pytest.mark.parametrize("case, rotation_deg", [("coreshell", 3.0), ("segregated", 17.0)])
def test_generator_frames_give_the_truth_lattice_spacings(case, rotation_deg):
    p = SynthParams.preset(case, shape=(512, 512), dot_size_nm=7.0,
                           lattice_rotation_deg=rotation_deg)
    f = synthesize_frame(p, rng=np.random.default_rng(3))
    period = float(np.nanmedian(np.r_[f.cells.P1_nm, f.cells.P2_nm]))
    res = gpa(f.image, pixel_size_nm=f.pixel_size_nm, period_nm=period, displacement=False)
    assert res.mask.mean() > 0.2                                 # the dot, not background
    assert res.order.tolist() == [2, 2]                          # the strong (200)pc pair
    for k in range(2):
        truth = np.nanmedian(f.cells[_axis_of(res.g[k])])
        got = np.median(res.a_nm[k][res.mask])
        assert got == pytest.approx(truth, rel=TRUTH_SPACING_TOL_REL)


def test_no_lattice_is_a_clear_error():
    rng = np.random.default_rng(0)
    noise = rng.poisson(6.0, (256, 256)).astype(float)
    with pytest.raises(ValueError, match="Bragg reflection"):
        gpa(noise, pixel_size_nm=0.0168)
    g, amp, ratio = find_bragg_peaks(_lattice_image())
    assert len(g) >= 2 and np.all(ratio >= 4.0) and np.all(np.diff(amp) <= 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(g=[[0.05, 0.0], [0.1, 0.0]]), "collinear"),
    (dict(pixel_size_nm=0.0), "pixel_size_nm"),
    (dict(order=[0, 1]), "order"),
    (dict(reference="median"), "reference"),
    (dict(sigma_px=200.0), "too large"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    args = dict(pixel_size_nm=0.0168, g=G_REF, displacement=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        gpa(_lattice_image(size=128), **args)
    with pytest.raises(ValueError, match="NaN"):
        gpa(np.full((64, 64), np.nan), pixel_size_nm=0.1, g=G_REF)
