"""ABSF: streak removal, lattice reflections kept, mean kept, bad input."""

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

from pvq_dask.kernels.absf import absf, absf_weights
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

STREAK_POWER_REDUCTION_MIN = 10.0  # x, power of the row-offset component, centre excluded
REFLECTION_GAIN_MIN = 0.95  # amplitude kept by the 8 strongest lattice reflections
ON_STREAK_REFLECTION_GAIN_MIN = 0.5  # a reflection lying on the streak is not erased
N_REFLECTIONS = 8
DOSE_E_PER_A2 = 220.0
ROW_OFFSET_FRAC = 0.03  # scan-line offset std / mean counts (the generator's default)
PSNR_GAIN_MIN_DB = 1.0  # ABSF must improve the PSNR vs the clean frame by at least this
TRANSPOSE_MISMATCH_MAX_FRAC = 0.05  # of the mean |removed| component


def _frame(shape=512, rotation_deg=12.0, seed=1):
    """Clean synthetic dot plus Poisson noise and known row offsets."""
    p = SynthParams.preset("clean", shape=(shape, shape), lattice_rotation_deg=rotation_deg)
    clean = synthesize_frame(p, rng=0).clean * DOSE_E_PER_A2 / 220.0
    rng = np.random.default_rng(seed)
    rows = ROW_OFFSET_FRAC * clean.mean() * rng.standard_normal(shape)
    image = rng.poisson(clean) + 0.5 * rng.standard_normal(clean.shape) + rows[:, None]
    return image, clean, rows


def _streak_reduction(image, rows, W, centre_px=2.0):
    n = image.shape[0]
    streak = np.fft.rfft2(np.broadcast_to(rows[:, None], image.shape))
    ky = np.fft.fftfreq(n)[:, None] * n
    kx = np.arange(W.shape[1])[None, :]
    outside = np.hypot(ky, kx) > centre_px
    before = (np.abs(streak[outside]) ** 2).sum()
    after = (np.abs(streak[outside] * W[outside]) ** 2).sum()
    return before / after


def _reflections(clean, n_peaks, min_radius_px=10.0):
    """Indices (rfft2 half plane) of the strongest local maxima of |FFT(clean)|."""
    n = clean.shape[0]
    amp = np.abs(np.fft.rfft2(clean - clean.mean()))
    ky = np.fft.fftfreq(n)[:, None] * n
    kx = np.arange(amp.shape[1])[None, :]
    radius = np.hypot(ky, kx)
    peak = (amp == maximum_filter(amp, size=5, mode="wrap")) & (radius > min_radius_px)
    idx = np.flatnonzero(peak.ravel())
    order = np.argsort(amp.ravel()[idx])[::-1][:n_peaks]
    return np.unravel_index(idx[order], amp.shape), kx + 0 * ky


def test_absf_acceptance_streak_and_reflections():
    image, clean, rows = _frame()
    F, W = absf_weights(image)
    assert _streak_reduction(image, rows, W) >= STREAK_POWER_REDUCTION_MIN
    (iy, ix), _ = _reflections(clean, N_REFLECTIONS)
    gains = W[iy, ix]
    assert gains.min() >= REFLECTION_GAIN_MIN, gains


def test_absf_reflection_on_streak_is_not_erased():
    # lattice aligned with the scan: the (0, k) reflections sit on the k_x = 0 streak
    image, clean, rows = _frame(rotation_deg=0.0)
    F, W = absf_weights(image)
    assert _streak_reduction(image, rows, W) >= STREAK_POWER_REDUCTION_MIN
    (iy, ix), kx = _reflections(clean, 12)
    on_streak = kx[iy, ix] <= 1
    assert on_streak.any()
    assert W[iy, ix][on_streak].min() >= ON_STREAK_REFLECTION_GAIN_MIN


def test_absf_denoises_and_keeps_mean():
    image, clean, _ = _frame(shape=256)
    filtered, removed = absf(image)
    np.testing.assert_allclose(filtered + removed, image, atol=1e-9)
    assert abs(filtered.mean() - image.mean()) < 1e-9 * abs(image.mean()) + 1e-9
    data_range = np.ptp(clean)

    def psnr(a):
        return 10 * np.log10(data_range**2 / np.mean((a - clean) ** 2))

    assert psnr(filtered) >= psnr(image) + PSNR_GAIN_MIN_DB


def test_absf_scan_axis_y_matches_the_transpose():
    # not bit-equal: the rfft2 half plane (hence the ring samples) differs under transpose
    image, _, _ = _frame(shape=128)
    fx, rx = absf(image, scan_axis="x")
    fy, _ = absf(image.T, scan_axis="y")
    wrong, _ = absf(image.T, scan_axis="x")
    err = np.abs(fy.T - fx).mean()
    assert err < TRANSPOSE_MISMATCH_MAX_FRAC * np.abs(rx).mean()
    assert err < 0.5 * np.abs(wrong.T - fx).mean()


def test_absf_without_notch_keeps_streak_more():
    image, _, rows = _frame(shape=256)
    _, W_notch = absf_weights(image)
    _, W_plain = absf_weights(image, notch=False)
    assert _streak_reduction(image, rows, W_notch) > 2 * _streak_reduction(image, rows, W_plain)


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.ones((64, 64)), {}, "constant"),
        (np.full((64, 64), np.nan), {}, "NaN"),
        (np.zeros((8, 64)), {}, "at least 16 px"),
        (np.zeros((4, 4, 4)), {}, "2-D"),
        (np.random.default_rng(0).random((64, 64)), {"scan_axis": "z"}, "scan_axis"),
        (np.random.default_rng(0).random((64, 64)), {"delta": 0.0}, "delta"),
        (np.random.default_rng(0).random((64, 64)), {"ring_step_px": 0}, "ring_step_px"),
    ],
)
def test_absf_bad_input(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        absf(image, **kwargs)
