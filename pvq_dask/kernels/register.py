"""Drift between and within frames of an in-situ series.

Model (positions in px, ``x`` = column, ``y`` = row, ``H`` = frame height; see
:mod:`pvq_dask.kernels._drift_model`): a sample point seen at ``p`` in the reference frame
appears in frame ``t`` at

    p_t = c + s + S (p - c) + v (y_t - c_y - s_y) / H

``s`` (``shift_px``) is the drift of the particle centre ``c`` between frames, ``v``
(``scan_drift_px``) the extra displacement accumulated over one frame's scan (first to last
row) relative to the reference frame, i.e. linear intra-frame drift, and ``S`` the
particle's own rotation and isotropic strain (from matched sites only).

Between frames: a coarse shift from the cross-correlation of the two frames' lattice-energy
envelopes (the particle's outline, free of the lattice's period ambiguity), then the
sub-pixel shift with :func:`skimage.registration.phase_cross_correlation` (upsampled DFT,
plain cross-correlation of Laplacian-of-Gaussian filtered, particle-weighted crops that the
coarse shift has aligned to within a pixel). Within frames: the same registration on row
bands of the particle (:func:`estimate_scan_drift`), or, more precisely, a least-squares fit
to matched column positions that also separates the particle's own rotation and isotropic
strain (:func:`fit_drift`).
"""

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

from pvq_dask.kernels._drift_model import DriftFit, correct_positions, fit_drift

__all__ = ["estimate_shift", "estimate_scan_drift", "fit_drift", "DriftFit",
           "correct_positions", "register_stack", "DRIFT_COLUMNS"]

#: Columns of a per-frame drift table (:func:`register_stack`, ``DriftFit.as_row``):
#: the model of :mod:`pvq_dask.kernels._drift_model` (registration leaves strain and
#: rotation at 0).
DRIFT_COLUMNS = ("frame", "drift_x_px", "drift_y_px", "scan_drift_x_px", "scan_drift_y_px",
                 "strain", "rotation_deg", "centre_x_px", "centre_y_px")

_HIGHPASS_SIGMA_PX = 6.0      # removes the support's and ligand's slow background
_SIGNAL_FLOOR_FRAC = 0.15     # envelope level (of its range) that counts as particle


def _as_frame(image, name):
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2 or min(a.shape) < 16:
        raise ValueError(f"{name} must be a 2-D frame of at least 16 x 16 px, got shape "
                         f"{a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite pixels; register frames that were written")
    return a


def _hann(shape):
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def _envelope(image, sigma_px, envelope_sigma_px):
    """Local lattice energy: band-passed image squared, smoothed over a few cells.

    It only locates the particle, so frames of 512 px and more are binned 2 x 2 for it
    (returned at full size).
    """
    f = 2 if min(image.shape) >= 512 else 1
    h, w = image.shape
    small = image[:h - h % f, :w - w % f].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    band = (ndi.gaussian_filter(small, max(sigma_px / 2.0 / f, 0.5))
            - ndi.gaussian_filter(small, _HIGHPASS_SIGMA_PX / f))
    env = ndi.gaussian_filter(band * band, envelope_sigma_px / f)
    if f > 1:
        env = np.repeat(np.repeat(env, f, axis=0), f, axis=1)
        env = np.pad(env, ((0, h - env.shape[0]), (0, w - env.shape[1])), mode="edge")
    return env


def _support(weight, margin=0):
    """Row and column slices holding the non-negligible part of ``weight`` (+ margin)."""
    big = weight > 1e-3 * weight.max()
    rows, cols = np.flatnonzero(big.any(axis=1)), np.flatnonzero(big.any(axis=0))
    h, w = weight.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)))


def _signal_weight(env):
    """Soft particle mask in [0, 1] from an envelope (1 where the lattice is)."""
    lo, hi = np.percentile(env, [10.0, 99.0])
    if not hi > lo:
        return np.ones_like(env)
    labels, n = ndi.label(env > lo + _SIGNAL_FLOOR_FRAC * (hi - lo))
    if n > 1:  # keep the particle(s), drop specks of background texture
        area = np.bincount(labels.ravel())[1:]
        labels = np.isin(labels, 1 + np.flatnonzero(area >= 0.1 * area.max()))
    mask = ndi.binary_fill_holes(labels > 0)
    return ndi.gaussian_filter(mask.astype(np.float64), 6.0)


def _peak_xy(corr):
    """Integer peak of a circular correlation with a parabolic sub-pixel step, as (x, y)."""
    h, w = corr.shape
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)

    def step(cm, c0, cp):
        den = cm - 2.0 * c0 + cp
        return 0.0 if den == 0 else 0.5 * (cm - cp) / den

    dy = iy + step(corr[(iy - 1) % h, ix], corr[iy, ix], corr[(iy + 1) % h, ix])
    dx = ix + step(corr[iy, (ix - 1) % w], corr[iy, ix], corr[iy, (ix + 1) % w])
    return np.array([(dx + w / 2) % w - w / 2, (dy + h / 2) % h - h / 2])


def _coarse_shift(ref_env, img_env):
    """Displacement of the particle outline (px, precise to about a pixel)."""
    win = _hann(ref_env.shape)
    a = (ref_env - ref_env.mean()) * win
    b = (img_env - img_env.mean()) * win
    corr = np.fft.irfft2(np.conj(np.fft.rfft2(a)) * np.fft.rfft2(b), s=a.shape)
    return _peak_xy(corr)


def _overlap(shape, k):
    """Slices of the reference and of the moving frame that overlap after an integer shift."""
    h, w = shape
    kx, ky = int(k[0]), int(k[1])
    if abs(kx) >= w - 8 or abs(ky) >= h - 8:
        raise ValueError(f"frames barely overlap (coarse shift {kx}, {ky} px for a frame of "
                         f"{w} x {h} px)")
    ys = slice(max(0, -ky), min(h, h - ky))
    xs = slice(max(0, -kx), min(w, w - kx))
    return (ys, xs), (slice(ys.start + ky, ys.stop + ky), slice(xs.start + kx, xs.stop + kx))


class _Pair:
    """Two frames pre-aligned to the nearest pixel, filtered once for sub-pixel work."""

    def __init__(self, reference, image, sigma_px, envelope_sigma_px, shift_px=None):
        env_r = _envelope(reference, sigma_px, envelope_sigma_px)
        if shift_px is None:
            shift_px = _coarse_shift(env_r, _envelope(image, sigma_px, envelope_sigma_px))
        self.k = np.round(np.asarray(shift_px, dtype=float)).astype(int)
        (ys, xs), (ys_m, xs_m) = _overlap(reference.shape, self.k)
        weight = _hann((ys.stop - ys.start, xs.stop - xs.start)) * _signal_weight(env_r[ys, xs])
        if not weight.max() > 0:
            raise ValueError("no signal to register (flat frames?)")
        # Filter only around the particle: the weight is ~0 elsewhere.
        margin = int(4 * sigma_px) + 2
        by, bx = _support(weight)
        gy, gx = _support(weight, margin)
        inner = (slice(by.start - gy.start, by.stop - gy.start),
                 slice(bx.start - gx.start, bx.stop - gx.start))

        def log(image, y0, x0):
            region = image[y0 + gy.start:y0 + gy.stop, x0 + gx.start:x0 + gx.stop]
            return -ndi.gaussian_laplace(region, sigma_px)[inner]

        self.ref = log(reference, ys.start, xs.start)
        self.img = log(image, ys_m.start, xs_m.start)
        self.weight = weight[by, bx]
        self.origin = np.array([xs.start + bx.start, ys.start + by.start], dtype=float)

    def shift(self, weight, upsample_factor):
        """Displacement (x, y) of the image content under ``weight`` (crop coordinates)."""
        # zero weight outside the box: cutting it leaves the correlation's peak alone
        box = _support(weight)
        w = weight[box]
        s, _, _ = phase_cross_correlation(self.ref[box] * w, self.img[box] * w,
                                          upsample_factor=upsample_factor, normalization=None)
        return self.k - np.array([s[1], s[0]], dtype=float)


def estimate_shift(reference, image, *, sigma_px=2.0, envelope_sigma_px=8.0,
                   upsample_factor=100):
    """Displacement of ``image``'s content relative to ``reference`` (sub-pixel).

    Parameters
    ----------
    reference, image : ndarray (H, W)
        Two frames of the same particle (raw counts or denoised).
    sigma_px : float
        Scale of the Laplacian-of-Gaussian filter: about the atom-column width.
    envelope_sigma_px : float
        Smoothing of the lattice-energy envelope used for the coarse (outline) shift; a few
        column spacings at most.
    upsample_factor : int
        Sub-pixel resolution 1/``upsample_factor`` px.

    Returns
    -------
    ndarray (2,)
        ``(dx, dy)`` in px: ``image`` at ``p + (dx, dy)`` shows what ``reference`` shows at
        ``p``.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:96, 0:96]
    >>> blob = lambda x0, y0: sum(np.exp(-((xx - x0 - a) ** 2 + (yy - y0 - b) ** 2) / 8.0)
    ...                           for a in range(-20, 21, 10) for b in range(-20, 21, 10))
    >>> np.round(estimate_shift(blob(45.0, 47.0), blob(48.3, 45.2)), 1).tolist()
    [3.3, -1.8]
    """
    ref = _as_frame(reference, "reference")
    img = _as_frame(image, "image")
    if ref.shape != img.shape:
        raise ValueError(f"reference {ref.shape} and image {img.shape} differ in shape")
    pair = _Pair(ref, img, sigma_px, envelope_sigma_px)
    return pair.shift(pair.weight, upsample_factor)


def _band_weights(profile, n_bands, edge_px):
    """Soft row bands holding equal shares of a row profile of the signal."""
    cum = np.cumsum(profile)
    cum = cum / cum[-1]
    cuts = [float(np.interp(q, cum, np.arange(len(cum)))) for q in
            np.arange(1, n_bands) / n_bands]
    rows = np.arange(len(profile), dtype=float)
    steps = [0.5 * (1 + np.tanh((rows - c) / edge_px)) for c in cuts]
    bounds = [np.ones_like(rows)] + steps + [np.zeros_like(rows)]
    return [bounds[b] - bounds[b + 1] for b in range(n_bands)]


def estimate_scan_drift(reference, image, *, n_bands=3, shift_px=None, sigma_px=2.0,
                        envelope_sigma_px=8.0, upsample_factor=100):
    """Drift between frames and linear intra-frame drift from row bands of the particle.

    The particle is cut into ``n_bands`` soft row bands with equal lattice signal; each
    band is registered separately, and a line through the band shifts against their rows
    gives the shift at the middle row and the change across the frame height.

    Parameters
    ----------
    reference, image : ndarray (H, W)
    n_bands : int
        At least 2.
    shift_px : sequence of 2 floats, optional
        A known shift (e.g. from :func:`estimate_shift`) to start from, within a few px.
    sigma_px, envelope_sigma_px, upsample_factor
        As in :func:`estimate_shift`.

    Returns
    -------
    DriftFit
        ``shift_px``: displacement (dx, dy) of the particle's (signal-weighted) centre
        ``centre_px``; ``scan_drift_px``: extra displacement from the first to the last scan
        row relative to ``reference``; strain and rotation 0.
    """
    ref = _as_frame(reference, "reference")
    img = _as_frame(image, "image")
    if ref.shape != img.shape:
        raise ValueError(f"reference {ref.shape} and image {img.shape} differ in shape")
    if int(n_bands) < 2:
        raise ValueError(f"n_bands must be >= 2, got {n_bands}")
    pair = _Pair(ref, img, sigma_px, envelope_sigma_px, shift_px=shift_px)
    # Each band's shift is a correlation-energy weighted average over its pixels
    # (weight^2 x filtered signal^2): its row is the centroid of that same energy.
    profile = ((pair.weight * pair.ref) ** 2).sum(axis=1) + 1e-12
    whole = pair.shift(pair.weight, upsample_factor)
    rows, shifts = [], []
    for band in _band_weights(profile, int(n_bands), edge_px=5.0 * sigma_px):
        energy = band ** 2 * profile
        rows.append(np.sum(np.arange(len(band)) * energy) / np.sum(energy))
        shifts.append(pair.shift(pair.weight * band[:, None], upsample_factor))
    rows = pair.origin[1] + np.asarray(rows)
    shifts = np.asarray(shifts)
    design = np.c_[np.ones(len(rows)), (rows + shifts[:, 1]) / ref.shape[0]]
    coef, *_ = np.linalg.lstsq(design, shifts, rcond=None)
    # The whole particle's shift holds at the centroid of the same correlation energy.
    energy = (pair.weight * pair.ref) ** 2
    total = energy.sum() + 1e-300
    centre = pair.origin + np.array([np.sum(energy.sum(axis=0) * np.arange(energy.shape[1])),
                                     np.sum(profile * np.arange(len(profile)))]) / total
    return DriftFit(shift_px=whole, scan_drift_px=coef[1], centre_px=centre)


def register_stack(frames, *, reference=0, scan_drift=True, n_bands=3, sigma_px=2.0,
                   upsample_factor=100):
    """Drift of every frame of a stack relative to frame ``reference``.

    Parameters
    ----------
    frames : sequence of ndarray (H, W) or ndarray (T, H, W)
    reference : int
    scan_drift : bool
        Also estimate the linear intra-frame drift (:func:`estimate_scan_drift`); else it
        is reported as 0.

    Returns
    -------
    pandas.DataFrame
        :data:`DRIFT_COLUMNS`, one row per frame (zeros for the reference).
    """
    n = len(frames)
    if not 0 <= int(reference) < n:
        raise ValueError(f"reference frame {reference} out of range 0..{n - 1}")
    ref = _as_frame(frames[reference], f"frame {reference}")
    rows = []
    for t in range(n):
        if t == int(reference):
            fit = DriftFit(shift_px=np.zeros(2),
                           centre_px=(np.array(ref.shape[::-1], dtype=float) - 1) / 2)
        else:
            img = _as_frame(frames[t], f"frame {t}")
            if scan_drift:
                fit = estimate_scan_drift(ref, img, n_bands=n_bands, sigma_px=sigma_px,
                                          upsample_factor=upsample_factor)
            else:
                fit = DriftFit(shift_px=estimate_shift(ref, img, sigma_px=sigma_px,
                                                       upsample_factor=upsample_factor),
                               centre_px=(np.array(ref.shape[::-1], dtype=float) - 1) / 2)
        rows.append({"frame": t, **fit.as_row()})
    df = pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))
    df["frame"] = df["frame"].astype(np.int64)
    return df
