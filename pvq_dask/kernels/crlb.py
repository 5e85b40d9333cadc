"""Noise model of a counting image and the Cramer-Rao bound of a column position.

The detector model is Poisson counts plus Gaussian read noise, in image units:
``var(pixel) = gain * expected + read_var``. For a synthetic frame in electron counts
``gain = 1`` and ``read_var = read_noise_counts ** 2``; for a real frame of unknown scale both
are estimated from the image itself (:func:`estimate_noise_model`).

The bound is the inverse Fisher information of the column model used by the fitter
(2D Gaussian of amplitude ``A``, widths ``sigma_x``, ``sigma_y`` and a constant or planar
local background), evaluated numerically on the pixel grid, with every parameter other than
the position treated as unknown (nuisance).

The texture spectrum of the background (:class:`TextureSpectrum`,
:func:`estimate_texture_spectrum`) lives in :mod:`pvq_dask.kernels._texture` and is
re-exported here.
"""

from dataclasses import dataclass

import numpy as np
from numba import njit

from pvq_dask.kernels._texture import TextureSpectrum, estimate_texture_spectrum

__all__ = ["NoiseModel", "estimate_noise_model", "TextureSpectrum", "estimate_texture_spectrum",
           "crlb_position"]

# Immerkaer's noise-estimation kernel: zero response to constants, planes, row offsets
# (scan-line noise) and, to first order, to smooth column profiles; its L2 norm is 6.
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0
_MAD_TO_STD = 1.4826
_NOISE_SAMPLE = 200_000
_NOISE_CROP_PX = 1024


@dataclass(frozen=True)
class NoiseModel:
    """Pixel variance ``gain * expected + read_var`` in image units squared.

    Examples
    --------
    >>> NoiseModel(gain=1.0, read_var=0.25).variance(np.array([0.0, 4.0])).tolist()
    [0.75, 4.25]
    """

    gain: float
    read_var: float

    def variance(self, expected):
        """Variance of a pixel whose expected value is ``expected``.

        The expected count is floored at half a detected count (``0.5 * gain`` in image
        units): a pixel never has less shot noise than that, whatever the model says.
        """
        return self.gain * np.maximum(expected, 0.5 * self.gain) + self.read_var


@njit(cache=True)
def _noise_samples(image, mask, n_sample):
    """Immerkaer residual and 3x3 mean at the usable pixels (whole 3x3 neighbourhood finite,
    inside ``mask`` unless it is (1, 1), not on the border), in raster order; every
    ``count // n_sample``-th of them when there are more than ``n_sample`` (a regular
    subsample is plenty for 16 variances): computed only there, not on the whole frame."""
    h, w = image.shape
    use_mask = mask.shape[0] == h and mask.shape[1] == w
    usable = np.zeros((h, w), np.bool_)
    count = 0
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            if use_mask and not mask[i, j]:
                continue
            good = True
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    if not np.isfinite(image[i + di, j + dj]):
                        good = False
            if good:
                usable[i, j] = True
                count += 1
    step = count // n_sample if count > n_sample else 1
    n_out = (count + step - 1) // step
    resid = np.empty(n_out)
    local = np.empty(n_out)
    k, t = 0, 0
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            if not usable[i, j]:
                continue
            if t % step == 0:
                s, m = 0.0, 0.0
                for di in range(-1, 2):
                    for dj in range(-1, 2):
                        v = image[i + di, j + dj]
                        s += _IMMERKAER[di + 1, dj + 1] * v
                        m += v
                resid[k] = s
                local[k] = m / 9.0
                k += 1
            t += 1
    return resid, local


@njit(cache=True)
def _binned_mad(resid, local, edges):
    """Per bin of ``local`` (bin b: edges[b] <= local < edges[b + 1], the last bin closed,
    values beyond the edges in the outer bins): mean local value, median absolute deviation
    of ``resid`` and count."""
    nb = edges.shape[0] - 1
    which = np.empty(local.shape[0], np.int64)
    counts = np.zeros(nb, np.int64)
    for i in range(local.shape[0]):
        b = min(max(np.searchsorted(edges, local[i], side="right") - 1, 0), nb - 1)
        which[i] = b
        counts[b] += 1
    starts = np.zeros(nb + 1, np.int64)
    for b in range(nb):
        starts[b + 1] = starts[b] + counts[b]
    pos = starts[:nb].copy()
    r_sorted = np.empty(resid.shape[0])
    means = np.zeros(nb)
    for i in range(local.shape[0]):
        b = which[i]
        r_sorted[pos[b]] = resid[i]
        pos[b] += 1
        means[b] += local[i]
    mads = np.zeros(nb)
    for b in range(nb):
        if counts[b] == 0:
            continue
        means[b] /= counts[b]
        r = r_sorted[starts[b]:starts[b + 1]]
        mads[b] = np.median(np.abs(r - np.median(r)))
    return means, mads, counts


def estimate_noise_model(image, *, mask=None, n_bins=16):
    """Estimate ``gain`` and ``read_var`` of a Poisson + read-noise image from its own pixels.

    A high-pass residual (Immerkaer's 3x3 kernel, which removes constants, gradients and
    per-row offsets) gives a local noise sample at every pixel; its robust variance (MAD)
    in bins of the local mean is regressed on that mean: ``var = gain * mean + read_var``.
    Images without shot noise (denoised or simulated without dose) give ``gain ~ 0``.

    Parameters
    ----------
    image : ndarray (H, W)
    mask : ndarray of bool (H, W), optional
        Pixels to use (NaN and infinite pixels are always excluded).
    n_bins : int
        Number of quantile bins of the local mean.

    Returns
    -------
    NoiseModel

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lam = np.tile(np.linspace(2.0, 40.0, 256), (256, 1))
    >>> nm = estimate_noise_model(rng.poisson(lam) + rng.normal(0.0, 1.0, lam.shape))
    >>> round(nm.gain, 1), bool(abs(nm.read_var - 1.0) < 0.5)
    (1.0, True)
    """
    image = np.asarray(image, dtype=float)
    if image.ndim != 2 or min(image.shape) < 8:
        raise ValueError(f"image must be 2-D and at least 8x8 px, got shape {image.shape}")
    # The noise model is a frame constant: a central crop is enough (and much cheaper).
    crop = tuple(slice(max((n - _NOISE_CROP_PX) // 2, 0),
                       max((n - _NOISE_CROP_PX) // 2, 0) + min(n, _NOISE_CROP_PX))
                 for n in image.shape)
    image = image[crop]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)[crop]
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
    resid, local = _noise_samples(np.ascontiguousarray(image),
                                  np.ones((1, 1), bool) if mask is None else mask, _NOISE_SAMPLE)
    if len(resid) < 64:
        raise ValueError("too few finite pixels to estimate the noise (need >= 64)")
    edges = np.unique(np.quantile(local, np.linspace(0.0, 1.0, n_bins + 1)))
    if len(edges) < 3:  # constant image: one bin, no slope
        spread = _MAD_TO_STD * np.median(np.abs(resid - np.median(resid)))
        return NoiseModel(gain=0.0, read_var=float(spread**2))
    means, mads, counts = _binned_mad(resid, local, edges)
    use = counts >= 16
    means, variances, counts = means[use], (_MAD_TO_STD * mads[use]) ** 2, counts[use]
    # The brightest bin holds column peaks whose curvature leaks into the residual.
    keep = means <= np.quantile(means, 0.95) if len(means) > 4 else np.ones(len(means), bool)
    design = np.c_[means[keep], np.ones(keep.sum())]
    wts = np.sqrt(counts[keep]) / np.maximum(variances[keep], 1e-12)
    gain, read_var = np.linalg.lstsq(design * wts[:, None], variances[keep] * wts, rcond=None)[0]
    if gain < 0:  # no shot-noise signature: a constant variance
        gain, read_var = 0.0, float(np.average(variances, weights=counts))
    return NoiseModel(gain=float(gain), read_var=float(max(read_var, 0.0)))


def _column_jacobian(dx, dy, amplitude, sigma_x, sigma_y, background_model):
    """Derivatives of the model at offsets (dx, dy) w.r.t. (x, y, A, sx, sy, B[, bx, by])."""
    g = np.exp(-0.5 * (dx / sigma_x) ** 2 - 0.5 * (dy / sigma_y) ** 2)
    ag = amplitude * g
    cols = [ag * dx / sigma_x**2, ag * dy / sigma_y**2, g,
            ag * dx**2 / sigma_x**3, ag * dy**2 / sigma_y**3, np.ones_like(g)]
    if background_model == "plane":
        cols += [dx + 0.0 * g, dy + 0.0 * g]
    return np.stack(cols, axis=-1), ag


def crlb_position(amplitude, sigma_px, background, *, read_noise=0.0, gain=1.0,
                  window_px=None, offset_px=(0.0, 0.0), background_model="constant"):
    """Cramer-Rao lower bound on the standard deviation of a column position, per axis.

    Parameters
    ----------
    amplitude : float or array_like
        Column peak height above the local background (image units).
    sigma_px : float or array_like
        Gaussian width of the column (isotropic), px.
    background : float or array_like
        Local background level (image units) under the column.
    read_noise : float
        Standard deviation of the additive Gaussian read noise (image units).
    gain : float
        Image units per detected count (variance of the shot noise = gain * expected).
    window_px : float, optional
        Radius of the disc of pixels that carries information; default ``4 * sigma_px``
        (the whole column, i.e. the bound of any estimator using all of its pixels).
    offset_px : (float, float)
        Sub-pixel position of the column centre relative to the nearest pixel centre.
    background_model : {"constant", "plane"}
        Nuisance background parameters estimated with the column.

    Returns
    -------
    ndarray
        Bound on the standard deviation of the x position in px (isotropic columns have the
        same bound in y), broadcast over the inputs.

    Examples
    --------
    >>> b = crlb_position(20.0, 2.4, 10.0, read_noise=0.5)
    >>> bool(0.05 < b < 0.5)
    True
    >>> bool(crlb_position(80.0, 2.4, 10.0) < b)   # brighter column, tighter bound
    True
    """
    if background_model not in ("constant", "plane"):
        raise ValueError(f"background_model must be 'constant' or 'plane', got "
                         f"{background_model!r}")
    if gain <= 0:
        raise ValueError(f"gain must be > 0, got {gain}")
    amp, sig, bg = np.broadcast_arrays(*(np.asarray(v, dtype=float)
                                         for v in (amplitude, sigma_px, background)))
    shape = amp.shape
    amp, sig, bg = amp.ravel(), sig.ravel(), bg.ravel()
    if np.any(sig <= 0):
        raise ValueError("sigma_px must be > 0")
    out = np.full(amp.shape, np.nan)
    # Group by window radius so every group shares one pixel grid.
    radius = np.ceil(4.0 * sig if window_px is None else
                     np.broadcast_to(np.asarray(window_px, dtype=float), sig.shape))
    for r in np.unique(radius):
        sel = np.nonzero(radius == r)[0]
        d = np.arange(-r, r + 1)
        yy, xx = np.meshgrid(d, d, indexing="ij")
        dx = (xx - offset_px[0]).ravel()
        dy = (yy - offset_px[1]).ravel()
        disc = dx**2 + dy**2 <= r**2
        dx, dy = dx[disc][None, :], dy[disc][None, :]
        s, a, b = sig[sel, None], amp[sel, None], bg[sel, None]
        jac, ag = _column_jacobian(dx, dy, a, s, s, background_model)
        var = gain * np.clip(ag + b, 0.0, None) + read_noise**2
        fisher = np.einsum("npi,npj,np->nij", jac, jac, 1.0 / np.maximum(var, 1e-12))
        with np.errstate(invalid="ignore"):
            cov = np.linalg.pinv(fisher)
        out[sel] = np.sqrt(cov[:, 0, 0])
    return out.reshape(shape)
