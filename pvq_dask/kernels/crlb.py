"""Noise model of a counting image and the Cramer-Rao bound of a column position.

The detector model is Poisson counts plus Gaussian read noise, in image units:
``var(pixel) = gain * expected + read_var``. For a synthetic frame in electron counts
``gain = 1`` and ``read_var = read_noise_counts ** 2``; for a real frame of unknown scale both
are estimated from the image itself (:func:`estimate_noise_model`).

The bound is the inverse Fisher information of the column model used by the fitter
(2D Gaussian of amplitude ``A``, widths ``sigma_x``, ``sigma_y`` and a constant or planar
local background), evaluated numerically on the pixel grid, with every parameter other than
the position treated as unknown (nuisance).
"""

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["NoiseModel", "estimate_noise_model", "TextureSpectrum", "estimate_texture_spectrum",
           "crlb_position"]

# Immerkaer's noise-estimation kernel: zero response to constants, planes, row offsets
# (scan-line noise) and, to first order, to smooth column profiles; its L2 norm is 6.
_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0
_MAD_TO_STD = 1.4826
_NOISE_SAMPLE = 200_000
_NOISE_CROP_PX = 1024
_WHITE_FLOOR = 1e-4           # minimum white level, relative to the residual's variance
_SPECTRUM_MAX_PX = 1024       # the texture is stationary: a central crop this size suffices


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
    finite = np.isfinite(image)
    filled = np.where(finite, image, 0.0)
    # A pixel is usable when its whole 3x3 neighbourhood is finite.
    ok = ndi.minimum_filter(finite, size=3, mode="constant", cval=False)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)
    ok[[0, -1], :] = False
    ok[:, [0, -1]] = False
    if ok.sum() < 64:
        raise ValueError("too few finite pixels to estimate the noise (need >= 64)")
    resid = ndi.correlate(filled, _IMMERKAER, mode="reflect")[ok]
    local = ndi.uniform_filter(filled, 3, mode="reflect")[ok]
    if len(resid) > _NOISE_SAMPLE:  # a regular subsample is plenty for 16 variances
        step = len(resid) // _NOISE_SAMPLE
        resid, local = resid[::step], local[::step]
    edges = np.unique(np.quantile(local, np.linspace(0.0, 1.0, n_bins + 1)))
    if len(edges) < 3:  # constant image: one bin, no slope
        spread = _MAD_TO_STD * np.median(np.abs(resid - np.median(resid)))
        return NoiseModel(gain=0.0, read_var=float(spread**2))
    which = np.clip(np.searchsorted(edges, local, side="right") - 1, 0, len(edges) - 2)
    means, variances, counts = [], [], []
    for b in range(len(edges) - 1):
        r = resid[which == b]
        if len(r) < 16:
            continue
        mad = np.median(np.abs(r - np.median(r)))
        means.append(local[which == b].mean())
        variances.append((_MAD_TO_STD * mad) ** 2)
        counts.append(len(r))
    means, variances, counts = map(np.asarray, (means, variances, counts))
    # The brightest bin holds column peaks whose curvature leaks into the residual.
    keep = means <= np.quantile(means, 0.95) if len(means) > 4 else np.ones(len(means), bool)
    design = np.c_[means[keep], np.ones(keep.sum())]
    wts = np.sqrt(counts[keep]) / np.maximum(variances[keep], 1e-12)
    gain, read_var = np.linalg.lstsq(design * wts[:, None], variances[keep] * wts, rcond=None)[0]
    if gain < 0:  # no shot-noise signature: a constant variance
        gain, read_var = 0.0, float(np.average(variances, weights=counts))
    return NoiseModel(gain=float(gain), read_var=float(max(read_var, 0.0)))


_GAIN_CACHE = {}


@dataclass(frozen=True, eq=False)
class TextureSpectrum:
    """Radial power spectrum of a smooth background texture (amorphous carbon) over white noise.

    ``texture_power[b]`` is the excess power (image units^2 per pixel, the normalisation in
    which white noise of variance v has power v) in radial-frequency bin ``b`` of width
    ``dk`` rad/px; ``white_power`` is the flat high-frequency level.
    """

    dk: float
    texture_power: np.ndarray
    white_power: float

    def texture_at(self, k):
        """Texture power at radial frequencies ``k`` (rad/px), linear in between bins."""
        centres = (np.arange(len(self.texture_power)) + 0.5) * self.dk
        return np.interp(k, centres, self.texture_power, right=0.0)

    def _filter(self, image, gain_fn, pad_px):
        """Apply the radial Fourier gain ``gain_fn(texture_power)`` (float32 FFTs, reflect
        padding against wrap-around)."""
        from scipy import fft as sfft

        r = np.where(np.isfinite(image), image, 0.0).astype(np.float32)
        h, w = r.shape
        p = int(min(pad_px, h - 1, w - 1))
        padded = np.pad(r, p, mode="reflect")
        shp = (sfft.next_fast_len(padded.shape[0], real=True),
               sfft.next_fast_len(padded.shape[1], real=True))
        spec = sfft.rfft2(padded, s=shp, workers=-1)
        spec *= self._gain(gain_fn, shp)
        return sfft.irfft2(spec, s=shp, workers=-1)[p:p + h, p:p + w]

    def _gain(self, gain_fn, shape):
        """Fourier gain on the transform grid, cached per spectrum (the Gauss-Newton loop
        filters many residuals with one spectrum)."""
        key = (id(self), gain_fn, shape)
        hit = _GAIN_CACHE.get(key)
        if hit is None or hit[0] is not self:
            if len(_GAIN_CACHE) > 8:
                _GAIN_CACHE.clear()
            s_k = self.texture_at(_radial_k(shape))
            hit = (self, getattr(self, gain_fn)(s_k).astype(np.float32))
            _GAIN_CACHE[key] = hit
        return hit[1]

    def _wiener_gain(self, s_k):
        return s_k / (s_k + self.white_power)

    def wiener(self, residual, *, pad_px=32):
        """Wiener estimate of the texture in ``residual`` (NaN read as 0): S / (S + N) filter."""
        return self._filter(residual, "_wiener_gain", pad_px)

    def column_fisher(self, sigma_px, *, n_grid=256, white_var=None):
        """Fisher matrices (5, 5) of a unit-amplitude Gaussian column: white noise, and white
        noise plus this texture (both normalised to unit white variance).

        ``white_var`` is the column's local white-noise variance (default: the frame's
        ``white_power``); the brighter the column, the less the texture matters.

        Parameter order x, y, sigma_x, sigma_y, amplitude. Computed as Fourier-domain inner
        products of the column's parameter derivatives (Parseval), on an ``n_grid`` grid.
        """
        n = self.white_power if white_var is None else float(white_var)
        return tuple(self.column_fisher_levels(sigma_px, [n], n_grid=n_grid)[0])

    def column_fisher_levels(self, sigma_px, white_vars, *, n_grid=256):
        """:meth:`column_fisher` for several white-noise variances at once: (L, 2, 5, 5)."""
        jac, kr = _fisher_basis(float(sigma_px), int(n_grid))
        s_k = self.texture_at(kr)
        out = np.empty((len(white_vars), 2, 5, 5))
        white = jac @ jac.T / n_grid**2
        for i, n in enumerate(white_vars):
            out[i, 0] = white
            out[i, 1] = (jac * (n / (n + s_k))) @ jac.T / n_grid**2
        # Position is orthogonal to width and amplitude by symmetry.
        out[:, :, :2, 2:] = 0.0
        out[:, :, 2:, :2] = 0.0
        out[:, :, 0, 1] = out[:, :, 1, 0] = 0.0
        return out


@functools.lru_cache(maxsize=8)
def _fisher_basis(sigma_px, n_grid):
    """Fourier-domain parameter derivatives (5, n_grid^2) of a unit Gaussian column and |k|."""
    k1 = np.fft.fftfreq(n_grid) * 2 * np.pi
    kx, ky = np.meshgrid(k1, k1, indexing="xy")
    s = sigma_px
    g = 2 * np.pi * s * s * np.exp(-0.5 * (kx**2 + ky**2) * s * s)
    # Derivatives of the transform; position ones are imaginary (i k g), kept as k g.
    jac = np.stack([kx * g, ky * g, g * (1.0 / s - kx**2 * s), g * (1.0 / s - ky**2 * s),
                    g]).reshape(5, -1)
    return jac, np.hypot(kx, ky).ravel()

@functools.lru_cache(maxsize=4)
def _radial_k(shape):
    ky = np.fft.fftfreq(shape[0]) * 2 * np.pi
    kx = np.fft.rfftfreq(shape[1]) * 2 * np.pi
    return np.hypot(ky[:, None], kx[None, :])


def estimate_texture_spectrum(residual, *, white_power=None, mask=None):
    """Radial spectrum of what is left after removing the columns: texture + white noise.

    A Hann-windowed periodogram is reduced to its radial median per frequency ring (robust
    to lattice reflections and to the scan-noise streak, both sparse within a ring, and
    corrected by 1/ln 2 to a mean for exponentially distributed periodogram values). The white
    level is the plateau above 0.75 pi rad/px, where a column of width >= 1 px carries no power.

    Parameters
    ----------
    residual : ndarray (H, W)
        Image minus the current model of every column (NaN allowed, read as the mean).
    white_power : float, optional
        Known white-noise variance; estimated from the plateau otherwise.
    mask : ndarray of bool, optional
        Pixels to use (others are set to the mean before the transform).

    Returns
    -------
    TextureSpectrum

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> smooth = ndi.gaussian_filter(rng.normal(size=(256, 256)), 4.0) * 40.0
    >>> ts = estimate_texture_spectrum(smooth + rng.normal(size=(256, 256)))
    >>> round(ts.white_power, 1), bool(ts.texture_power[2] > 10 * ts.white_power)
    (1.0, True)
    """
    r = np.asarray(residual, dtype=float)
    if r.ndim != 2 or min(r.shape) < 16:
        raise ValueError(f"residual must be 2-D and at least 16x16 px, got shape {r.shape}")
    ok = np.isfinite(r) if mask is None else np.isfinite(r) & np.asarray(mask, bool)
    crop = tuple(slice(max((n - _SPECTRUM_MAX_PX) // 2, 0), max((n - _SPECTRUM_MAX_PX) // 2, 0)
                       + min(n, _SPECTRUM_MAX_PX)) for n in r.shape)
    r, ok = r[crop], ok[crop]
    if ok.sum() < 64:
        raise ValueError("too few usable pixels to estimate a background spectrum")
    r = np.where(ok, r - r[ok].mean(), 0.0)
    win = np.outer(np.hanning(r.shape[0]), np.hanning(r.shape[1]))
    power = np.abs(np.fft.rfft2(r * win)) ** 2 / (win**2 * ok).sum()
    kr = _radial_k(r.shape)
    dk = 2 * np.pi / min(r.shape) * 2.0
    nbin = int(np.ceil(np.pi / dk))
    which = np.minimum((kr / dk).astype(np.int64), nbin)
    order = np.argsort(which.ravel(), kind="stable")
    groups = np.split(power.ravel()[order], np.cumsum(np.bincount(which.ravel(),
                                                                   minlength=nbin + 1))[:-1])
    prof = np.array([np.median(g) if len(g) else 0.0 for g in groups[:nbin]]) / np.log(2)
    if white_power is None:
        white_power = float(np.median(power[kr > 0.75 * np.pi]) / np.log(2))
    # Noise-free input: a white floor far below the signal keeps the Wiener filter from
    # passing everything (the texture's own high-frequency tail is then treated as noise).
    white_power = max(white_power, _WHITE_FLOOR * float(np.mean(r[ok] ** 2)))
    texture = np.clip(prof - white_power, 0.0, None)
    return TextureSpectrum(dk=float(dk), texture_power=texture, white_power=float(white_power))


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
