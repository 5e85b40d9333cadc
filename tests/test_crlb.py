"""Noise model, texture spectrum and Cramer-Rao bound: checked against simulation."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from pvq_dask.kernels.crlb import (
    NoiseModel,
    crlb_position,
    estimate_noise_model,
    estimate_texture_spectrum,
)
from pvq_dask.kernels.fit import fit_columns

GAIN_REL_TOL = 0.05            # estimated shot-noise gain vs truth (relative)
READ_VAR_ABS_TOL = 0.3         # estimated read variance vs truth (counts^2), unit gain
VAR_REL_TOL = 0.08             # predicted pixel variance vs truth (relative)
TEXTURE_VAR_REL_TOL = 0.15     # texture variance integrated from the spectrum (relative)
WHITE_REL_TOL = 0.05           # white level of the spectrum (relative)
MC_RATIO_RANGE = (0.85, 1.15)  # Monte-Carlo RMSE of an efficient fit / CRLB
SINGLE_REL_TOL = 1e-4          # single- vs double-precision periodogram, texture power
SCALING_REL_TOL = 1e-9         # exact scaling laws of the bound


def test_noise_model_recovers_gain_and_read_noise():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:384, 0:384]
    lam = 5.0 + 40.0 * (0.5 + 0.5 * np.sin(xx / 30.0) * np.cos(yy / 45.0))
    for gain, read in ((1.0, 0.5), (2.5, 2.0)):
        img = gain * rng.poisson(lam) + read * rng.standard_normal(lam.shape)
        nm = estimate_noise_model(img)
        assert abs(nm.gain - gain) < GAIN_REL_TOL * gain
        # The intercept is an extrapolation; what matters is the variance over the data.
        levels = gain * np.array([5.0, 25.0, 45.0])
        truth = gain * levels + read**2
        assert np.all(np.abs(nm.variance(levels) - truth) < VAR_REL_TOL * truth)
    img = rng.poisson(lam) + 0.5 * rng.standard_normal(lam.shape)
    assert abs(estimate_noise_model(img).read_var - 0.25) < READ_VAR_ABS_TOL


def test_noise_model_ignores_scan_line_offsets_and_nan():
    rng = np.random.default_rng(4)
    img = rng.poisson(np.full((256, 256), 20.0)).astype(float)
    img += 3.0 * rng.standard_normal(256)[:, None]      # one offset per scan row
    img[100:120, 50:90] = np.nan
    nm = estimate_noise_model(img)
    assert abs(nm.variance(20.0) - 20.0) < 0.1 * 20.0


def test_noise_model_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        estimate_noise_model(np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        estimate_noise_model(np.full((32, 32), np.nan))
    assert estimate_noise_model(np.zeros((32, 32))).gain == 0.0


def test_texture_spectrum_integrates_to_the_texture_variance():
    rng = np.random.default_rng(5)
    tex = ndi.gaussian_filter(rng.standard_normal((512, 512)), 6.0, mode="wrap")
    tex *= 5.0 / tex.std()
    white = 20.0
    ts = estimate_texture_spectrum(tex + np.sqrt(white) * rng.standard_normal(tex.shape))
    k = (np.arange(len(ts.texture_power)) + 0.5) * ts.dk
    var = (ts.texture_power * k * ts.dk).sum() / (2 * np.pi)
    assert abs(ts.white_power - white) < WHITE_REL_TOL * white
    assert abs(var - 25.0) < TEXTURE_VAR_REL_TOL * 25.0
    # The Wiener estimate recovers the texture far better than the raw residual.
    back = ts.wiener(tex + np.sqrt(white) * rng.standard_normal(tex.shape))
    assert np.std(back - tex) < 0.5 * np.sqrt(white)


def test_ring_medians_equal_numpy_medians_with_any_hint():
    from scipy import fft as sfft

    from pvq_dask.kernels._periodogram import ring_medians, rings

    rng = np.random.default_rng(6)
    for shape in ((96, 120), (160, 160)):
        r = rng.poisson(30.0, shape).astype(float)           # integer data: many ties
        win, _, nbin, which, starts, white, n_white = rings(shape)
        spec = sfft.rfft2(r * win)
        power = (spec.real**2 + spec.imag**2).ravel()
        truth = [np.median(power[which.ravel() == b]) if (which == b).any() else 0.0
                 for b in range(nbin)] + [np.median(power[white.ravel()])]
        for hints in (np.zeros(0), np.multiply(truth, 1.05), np.multiply(truth, 0.3),
                      np.full(nbin + 1, -1.0)):
            got = ring_medians(spec, 1.0, which, starts, nbin, white, n_white, hints)
            np.testing.assert_array_equal(got, truth)


def test_texture_spectrum_seeded_and_single_precision():
    rng = np.random.default_rng(7)
    tex = ndi.gaussian_filter(rng.standard_normal((300, 280)), 5.0) * 30.0
    first = estimate_texture_spectrum(tex + rng.standard_normal(tex.shape))
    resid = tex + rng.standard_normal(tex.shape)
    plain = estimate_texture_spectrum(resid)
    seeded = estimate_texture_spectrum(resid, previous=first)
    np.testing.assert_array_equal(seeded.texture_power, plain.texture_power)
    assert seeded.white_power == plain.white_power
    single = estimate_texture_spectrum(resid, single=True)
    np.testing.assert_allclose(single.texture_power, plain.texture_power,
                               rtol=SINGLE_REL_TOL, atol=SINGLE_REL_TOL * plain.white_power)


def test_crlb_scaling_laws():
    # Pure read noise: the bound scales as noise / amplitude.
    b1 = crlb_position(10.0, 2.0, 0.0, read_noise=1.0, gain=1e-12)
    b2 = crlb_position(40.0, 2.0, 0.0, read_noise=1.0, gain=1e-12)
    assert abs(b2 * 4 - b1) < 1e-6 * b1
    # Broadcasting over arrays; a plane background only adds nuisance (larger bound).
    amp = np.array([10.0, 20.0, 40.0])
    b = crlb_position(amp, 2.4, 15.0, read_noise=0.5)
    assert b.shape == (3,) and np.all(np.diff(b) < 0)
    assert crlb_position(20.0, 2.4, 15.0, background_model="plane", window_px=7) > \
        crlb_position(20.0, 2.4, 15.0, window_px=7)
    with pytest.raises(ValueError, match="background_model"):
        crlb_position(1.0, 1.0, 1.0, background_model="quadratic")
    with pytest.raises(ValueError, match="sigma_px"):
        crlb_position(1.0, -1.0, 1.0)


def test_crlb_matches_monte_carlo_of_the_weighted_fit():
    """An efficient estimator (our weighted LM, constant background) reaches the bound."""
    rng = np.random.default_rng(6)
    amp, sig, bg, read = 15.0, 2.4, 12.0, 0.5
    # 64 isolated columns per frame, 4 frames.
    cx, cy = np.meshgrid(np.arange(20, 260, 30.0), np.arange(20, 260, 30.0))
    xy = np.c_[cx.ravel(), cy.ravel()] + rng.uniform(-0.5, 0.5, (cx.size, 2))
    yy, xx = np.mgrid[0:280, 0:280]
    errs = []
    for _ in range(4):
        lam = np.full(xx.shape, bg)
        for x, y in xy:
            lam += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig**2))
        img = rng.poisson(lam) + read * rng.standard_normal(lam.shape)
        r = fit_columns(img, np.rint(xy), sigma_px=sig, background="constant",
                        window_px=4 * sig, noise=NoiseModel(1.0, read**2), n_rounds=1)
        errs.append(np.c_[r["x_px"] - xy[:, 0], r["y_px"] - xy[:, 1]])
    rmse = np.sqrt(np.mean(np.concatenate(errs) ** 2))
    bound = float(crlb_position(amp, sig, bg, read_noise=read))
    assert MC_RATIO_RANGE[0] < rmse / bound < MC_RATIO_RANGE[1]
