"""Drift between and within frames against the synthetic series' truth."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from pvq_dask.kernels.register import (
    DRIFT_COLUMNS,
    correct_positions,
    estimate_scan_drift,
    estimate_shift,
    fit_drift,
    register_stack,
)
from pvq_dask.kernels.synth import SynthParams, synthesize_series

#: Frame-to-frame drift error allowed (px), low-dose frames.
DRIFT_TOL_PX = 0.1
#: Drift error on noise-free, purely translated frames (px).
CLEAN_SHIFT_TOL_PX = 0.02
#: Image-based intra-frame drift (change over one frame height) error allowed (px).
SCAN_DRIFT_IMAGE_TOL_PX = 1.0
#: Lattice-fit intra-frame drift error from 0.1 px-noisy matched Pb positions (px).
SCAN_DRIFT_FIT_TOL_PX = 0.15
#: Lattice-fit particle rotation error (deg) and isotropic strain error (1).
ROTATION_TOL_DEG = 0.02
STRAIN_TOL = 2e-4

SHAPE = (384, 384)
DOT_NM = 4.0


def _truth(frame_ref, frame, centre_px=None):
    """Truth (drift of the particle centre, or of ``centre_px``, and scan drift) from the
    matched truth Pb positions."""
    pb = (frame_ref.atoms["species"] == "Pb").to_numpy()
    a = frame_ref.atoms[["x_px", "y_px"]].to_numpy()[pb]
    b = frame.atoms[["x_px", "y_px"]].to_numpy()[pb]
    fit = fit_drift(a, b, height_px=frame.image.shape[0])
    if centre_px is None:
        return fit.shift_px, fit.scan_drift_px
    shift = fit.to_frame(centre_px, height_px=frame.image.shape[0])[0] - centre_px
    return shift, fit.scan_drift_px


@pytest.fixture(scope="module")
def series():
    p = SynthParams.preset("series", shape=SHAPE, dot_size_nm=DOT_NM, n_frames=3,
                           drift_px_per_frame=(6.5, -4.2), drift_jitter_px=1.0)
    return synthesize_series(p, rng=11)


def test_stack_drift_matches_truth(series):
    table = register_stack([f.image for f in series], reference=0)
    assert list(table.columns) == list(DRIFT_COLUMNS)
    assert table.loc[0, ["drift_x_px", "drift_y_px"]].tolist() == [0.0, 0.0]
    for t in (1, 2):
        shift, _ = _truth(series[0], series[t])
        got = table.loc[t, ["drift_x_px", "drift_y_px"]].to_numpy(float)
        assert np.abs(got - shift).max() < DRIFT_TOL_PX, (t, got, shift)
    # The synthetic intra-frame drift is the same in every frame: nothing relative to frame 0.
    scan = table[["scan_drift_x_px", "scan_drift_y_px"]].to_numpy(float)
    assert np.abs(scan).max() < SCAN_DRIFT_IMAGE_TOL_PX


def test_large_drift_beyond_lattice_period():
    """A shift of several lattice periods is found from the particle outline, not aliased."""
    p = SynthParams.preset("series", shape=SHAPE, dot_size_nm=3.6, n_frames=2,
                           drift_px_per_frame=(-41.0, 29.5), drift_jitter_px=0.0)
    frames = synthesize_series(p, rng=3)
    shift, _ = _truth(frames[0], frames[1])
    got = estimate_scan_drift(frames[0].image, frames[1].image).shift_px
    assert np.abs(got - shift).max() < DRIFT_TOL_PX, (got, shift)


def test_clean_translation_is_exact():
    frames = synthesize_series(SynthParams.preset("clean", shape=(256, 256), dot_size_nm=3.0),
                               rng=0)
    ref = frames[0].clean
    moved = np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(ref), (-2.37, 5.61))).real
    got = estimate_shift(ref, moved)
    np.testing.assert_allclose(got, [5.61, -2.37], atol=CLEAN_SHIFT_TOL_PX)


def test_intra_frame_drift_from_row_bands():
    """Frame 1 scanned with extra drift across its rows: the bands measure that change."""
    kw = dict(shape=SHAPE, dot_size_nm=4.4, n_frames=2, drift_px_per_frame=(3.0, 2.0),
              drift_jitter_px=0.0, shell_tilt_rate_deg_per_frame=0.0)
    still = synthesize_series(SynthParams.preset("series", intra_frame_drift_px=(0.0, 0.0),
                                                 **kw), rng=5)
    moving = synthesize_series(SynthParams.preset("series", intra_frame_drift_px=(4.0, -3.0),
                                                  **kw), rng=5)
    fit = estimate_scan_drift(still[0].image, moving[1].image)
    shift, scan = _truth(still[0], moving[1], fit.centre_px)
    np.testing.assert_allclose(scan, [4.0, -3.0], atol=0.05)  # truth model sanity
    assert np.abs(fit.shift_px - shift).max() < DRIFT_TOL_PX, (fit.shift_px, shift)
    assert np.abs(fit.scan_drift_px - scan).max() < SCAN_DRIFT_IMAGE_TOL_PX, (fit, scan)


def test_fit_drift_recovers_model(rng):
    """Drift, scan drift, particle rotation and strain from noisy matched sites."""
    ref = rng.uniform(40, 340, size=(80, 2))
    centre = ref.mean(axis=0)
    shift, scan, rot_deg, strain = np.array([3.2, -1.4]), np.array([0.9, -0.5]), 1.5, 0.004
    th = np.radians(rot_deg)
    sim = (1 + strain) * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    moved = ref.copy()
    for _ in range(5):  # the scan term depends on the moving frame's rows: iterate
        row = (moved[:, 1] - centre[1] - shift[1]) / 384
        moved = centre + shift + (ref - centre) @ sim.T + np.outer(row, scan)
    noisy = moved + rng.normal(0, 0.1, moved.shape)
    noisy[:3] += 25.0  # mismatched sites are clipped
    fit = fit_drift(ref, noisy, height_px=384)
    assert np.abs(fit.shift_px - shift).max() < DRIFT_TOL_PX
    assert np.abs(fit.scan_drift_px - scan).max() < SCAN_DRIFT_FIT_TOL_PX
    assert abs(fit.rotation_deg - rot_deg) < ROTATION_TOL_DEG
    assert abs(fit.strain - strain) < STRAIN_TOL
    assert fit.n_used == 77 and fit.residual_px < 0.2
    back = correct_positions(moved, fit, height_px=384)
    np.testing.assert_allclose(back, ref, atol=0.1)
    np.testing.assert_allclose(correct_positions(fit.to_frame(ref, height_px=384), fit,
                                                 height_px=384), ref, atol=1e-9)
    # without the similarity terms the rotation leaks into the scan drift
    plain = fit_drift(ref, noisy, height_px=384, similarity=False)
    assert abs(plain.scan_drift_px[0] - scan[0]) > 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: estimate_shift(np.zeros((64, 64)), np.zeros((64, 60))), "differ in shape"),
    (lambda: estimate_shift(np.full((64, 64), np.nan), np.zeros((64, 64))), "non-finite"),
    (lambda: estimate_shift(np.zeros(64), np.zeros(64)), "2-D frame"),
    (lambda: estimate_scan_drift(np.ones((64, 64)), np.ones((64, 64)), n_bands=1), "n_bands"),
    (lambda: estimate_scan_drift(np.ones((64, 64)), np.ones((64, 64)), shift_px=(60, 0)),
     "barely overlap"),
    (lambda: fit_drift(np.zeros((3, 2)), np.zeros((3, 2)), height_px=10), "at least 4"),
    (lambda: fit_drift(np.zeros((3, 2)), np.zeros((4, 2)), height_px=10), "row for row"),
    (lambda: fit_drift(np.ones((5, 2)), np.ones((5, 2)), height_px=10), "one row"),
    (lambda: register_stack([np.ones((32, 32))], reference=2), "out of range"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
