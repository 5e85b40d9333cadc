"""Geometric phase analysis (GPA): strain, rotation and local lattice spacings of a frame.

An independent cross-check of the lattice-derived Pb-Pb spacings (paper Fig. S20/S37),
computed from the image alone. For each of two non-collinear Bragg reflections ``g`` (in
cycles/px, as ``(g_x, g_y)``):

- ``H_g = IFFT(FFT(image) * M_g)`` with a Gaussian mask ``M_g`` centred on ``g`` of width
  ``1 / (2 pi sigma_px)`` (so ``sigma_px`` is the real-space resolution);
- the local reflection ``g(r) = grad(arg H_g) / 2 pi``, with the gradient taken exactly in
  Fourier space as ``Im(conj(H) grad H) / |H|^2`` (no phase unwrapping needed);
- the geometric phase ``P_g = arg(H_g) - 2 pi g_ref . r`` (wrapped) and, unwrapped, the
  displacement ``u = -G_ref^-1 [P_1, P_2] / 2 pi``.

With ``G`` the matrix whose rows are ``g_1(r), g_2(r)``, the deformation gradient relative to
the reference lattice is ``F = G^-1 G_ref``; its polar decomposition ``F = R(omega) U`` gives
the rotation ``omega`` (positive from +x towards +y) and the strain ``U - 1`` (``e_xx, e_yy,
e_xy``), exact for finite rotations. Local spacings: ``d_k = 1 / |g_k(r)|`` (plane spacing of
reflection k) and ``a_k = order_k |(G^-1)[:, k]|``, the length of the real-space lattice
vector dual to ``g_k / order_k``: when ``g_k`` is the ``order_k``-th harmonic of a lattice
basis reflection (CsPbX3's strong (200)pc, ``order = 2``), ``a_k`` is the pseudo-cubic
period, comparable with the Pb-Pb spacings ``P1``/``P2``.
"""

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

__all__ = ["GPAResult", "find_bragg_peaks", "choose_reflections", "gpa"]

_MIN_PEAK_RATIO = 4.0      # peak amplitude / ring median for a Bragg candidate


@dataclass(frozen=True)
class GPAResult:
    """Output of :func:`gpa`. Image arrays are float32 (H, W) unless noted; ``k`` indexes
    g1, g2.

    Attributes
    ----------
    g : ndarray (2, 2)
        Reference reflections, rows ``(g_x, g_y)`` in cycles/px.
    order : ndarray of int (2,)
        Harmonic order of each reflection relative to the lattice period.
    phase : ndarray (2, H, W)
        Wrapped geometric phases in rad.
    amplitude : ndarray (2, H, W)
        ``|H_g|``: where the lattice fringes are.
    exx, eyy, exy : ndarray
        Strain relative to the reference lattice (dimensionless).
    rotation_deg : ndarray
        Local lattice rotation relative to the reference, positive from +x towards +y.
    d_nm : ndarray (2, H, W)
        Local plane spacing of each reflection.
    a_nm : ndarray (2, H, W)
        Local lattice period along the real-space vector dual to each reflection.
    ux_px, uy_px : ndarray or None
        Displacement (None when computed with ``displacement=False``).
    mask : ndarray of bool
        Both fringe amplitudes above threshold and ``2 sigma_px`` away from the border.
    sigma_px : float
    pixel_size_nm : float
    """

    g: np.ndarray
    order: np.ndarray
    phase: np.ndarray
    amplitude: np.ndarray
    exx: np.ndarray
    eyy: np.ndarray
    exy: np.ndarray
    rotation_deg: np.ndarray
    d_nm: np.ndarray
    a_nm: np.ndarray
    ux_px: np.ndarray | None
    uy_px: np.ndarray | None
    mask: np.ndarray
    sigma_px: float
    pixel_size_nm: float


def _spectrum(image):
    """Centred amplitude spectrum of the Hann-windowed image and its ring-median ratio."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    amp = np.abs(sfft.fftshift(sfft.fft2((img - img.mean()) * win)))
    ky, kx = np.indices(amp.shape)
    r = np.hypot((kx - w // 2) / w, (ky - h // 2) / h)       # cycles/px
    ring = np.rint(r * min(h, w)).astype(np.int64)
    # Median amplitude of every ring from one sort of ``ring + amp / scale`` (each ring's
    # amplitudes sort within [ring, ring + 1)); the lower half-plane is enough (Friedel).
    scale = amp.max() * (1 + 1e-9) + np.finfo(float).tiny
    half_ring = ring[h // 2:].ravel()
    key = np.sort(half_ring + amp[h // 2:].ravel() / scale)
    start = np.searchsorted(key, np.arange(ring.max() + 2, dtype=float))
    mid = np.clip((start[:-1] + start[1:] - 1) // 2, 0, len(key) - 1)
    med = (key[mid] - np.floor(key[mid])) * scale
    med[start[:-1] == start[1:]] = 0.0
    # Floor: noise-free test images have rings of exact zeros.
    ratio = amp / np.maximum(med[ring], 1e-9 * amp.max() + np.finfo(float).tiny)
    return amp, ratio, r


def find_bragg_peaks(image, *, min_spacing_px=3.0, max_spacing_px=None,
                     min_ratio=_MIN_PEAK_RATIO, n_peaks=12):
    """Candidate Bragg reflections of a lattice image, strongest first.

    A candidate is a local maximum (5 x 5) of the windowed amplitude spectrum whose
    amplitude exceeds ``min_ratio`` times the median of its frequency ring, with a plane
    spacing between ``min_spacing_px`` and ``max_spacing_px`` (default ``min(H, W) / 8``).
    One of each Friedel pair ``+-g`` is kept.

    Returns
    -------
    g : ndarray (K, 2)
        ``(g_x, g_y)`` in cycles/px (integer FFT bins).
    amplitude, ratio : ndarray (K,)

    Examples
    --------
    >>> yy, xx = np.mgrid[:128, :128]
    >>> img = np.cos(2 * np.pi * xx / 8) + 0.5 * np.cos(2 * np.pi * yy / 16)
    >>> g, amp, ratio = find_bragg_peaks(img)
    >>> g.tolist()
    [[0.125, 0.0], [0.0, 0.0625]]
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 16:
        raise ValueError(f"image must be 2-D and at least 16 x 16 px, got {img.shape}")
    h, w = img.shape
    max_spacing_px = min(h, w) / 8 if max_spacing_px is None else max_spacing_px
    amp, ratio, r = _spectrum(img)
    peak = (amp == ndi.maximum_filter(amp, size=5, mode="wrap"))
    band = (r >= 1.0 / max_spacing_px) & (r <= 1.0 / min_spacing_px)
    cand = peak & band & (ratio >= min_ratio)
    ky, kx = np.nonzero(cand)
    gx, gy = (kx - w // 2) / w, (ky - h // 2) / h
    # Keep one of each Friedel pair: the one with gx > 0, or gx == 0 and gy > 0.
    half = (gx > 0) | ((gx == 0) & (gy > 0))
    gx, gy, ky, kx = gx[half], gy[half], ky[half], kx[half]
    srt = np.argsort(-amp[ky, kx], kind="stable")[:n_peaks]
    g = np.c_[gx[srt], gy[srt]]
    return g, amp[ky[srt], kx[srt]], ratio[ky[srt], kx[srt]]


def choose_reflections(image, *, min_angle_deg=30.0, min_ratio=_MIN_PEAK_RATIO, **kwargs):
    """Two strong non-collinear reflections.

    ``g1`` is the strongest candidate of :func:`find_bragg_peaks`, ``g2`` the strongest
    whose direction differs from ``g1``'s by at least ``min_angle_deg`` (modulo 180 deg).

    Returns
    -------
    g : ndarray (2, 2)
        Rows ``(g_x, g_y)`` in cycles/px.

    Examples
    --------
    >>> yy, xx = np.mgrid[:128, :128]
    >>> img = np.cos(2 * np.pi * xx / 8) + 0.8 * np.cos(2 * np.pi * yy / 8)
    >>> choose_reflections(img).tolist()
    [[0.125, 0.0], [0.0, 0.125]]
    """
    img = np.asarray(image, dtype=np.float64)
    g, _, _ = find_bragg_peaks(img, min_ratio=min_ratio, **kwargs)
    if len(g) < 2:
        raise ValueError(f"found {len(g)} Bragg reflection(s) above {min_ratio} x background;"
                         " GPA needs two non-collinear ones (is there a lattice in the image?)")
    ang = np.degrees(np.arctan2(g[:, 1], g[:, 0]))
    diff = np.abs((ang - ang[0] + 90.0) % 180.0 - 90.0)
    others = np.flatnonzero(diff >= min_angle_deg)
    if len(others) == 0:
        raise ValueError("all Bragg reflections found are collinear; GPA needs two "
                         "non-collinear ones (give g explicitly)")
    return np.stack([g[0], g[others[0]]])


def _bandpass(spec, g, sigma_k, kx, ky):
    """``H_g`` and its exact spatial gradient (d/dx, d/dy) from the image spectrum."""
    m = np.exp(-0.5 * ((kx - g[0]) ** 2 + (ky - g[1]) ** 2) / sigma_k ** 2)
    s = spec * m.astype(spec.real.dtype)
    hg = sfft.ifft2(s)
    hx = sfft.ifft2(s * (2j * np.pi * kx).astype(spec.dtype))
    hy = sfft.ifft2(s * (2j * np.pi * ky).astype(spec.dtype))
    return hg, hx, hy


def gpa(image, *, pixel_size_nm, g=None, order=None, period_nm=None, sigma_px=None,
        reference=None, amplitude_threshold=0.3, displacement=True):
    """Geometric phase analysis of a lattice image.

    Parameters
    ----------
    image : ndarray (H, W)
    pixel_size_nm : float
    g : array_like (2, 2), optional
        Reference reflections, rows ``(g_x, g_y)`` in cycles/px; default
        :func:`choose_reflections`.
    order : array_like of int (2,), optional
        Harmonic order of each reflection (see module notes). Default: from ``period_nm``
        if given, else 1. (Detecting it from the image alone, from sub-harmonic peaks or
        their phase locking, proved unreliable on small low-dose frames.)
    period_nm : float, optional
        Approximate lattice period (e.g. the median Pb-Pb spacing) used only to pick the
        integer orders, ``order_k = round(period_nm |g_k| / pixel_size_nm)``: the GPA
        spacings stay an independent measurement.
    sigma_px : float, optional
        Real-space resolution of the analysis; default one lattice period along the
        shorter fundamental reflection, ``min_k(order_k / |g_k|)``.
    reference : None, "lattice" or ndarray of bool (H, W)
        What the strain and rotation are relative to. ``None``: the lattice of ``g``
        itself when ``g`` is given, else ``"lattice"``. ``"lattice"`` or a region mask:
        ``g`` is refined to the median local reflection over ``mask`` (or the region), so
        that region is unstrained on average.
    amplitude_threshold : float
        ``mask`` keeps pixels whose fringe amplitudes both exceed this fraction of their
        99th percentile.
    displacement : bool
        Also unwrap the phases and return ``ux_px``, ``uy_px`` (about 1 s per 2048^2).

    Returns
    -------
    GPAResult

    Examples
    --------
    A lattice stretched by 1 % along x, analysed against the unstretched reflections:

    >>> yy, xx = np.mgrid[:128, :128].astype(float)
    >>> img = np.cos(2 * np.pi * xx / (8 * 1.01)) + np.cos(2 * np.pi * yy / 8)
    >>> res = gpa(img, pixel_size_nm=0.02, g=[[1 / 8, 0], [0, 1 / 8]], displacement=False)
    >>> round(float(np.median(res.exx[48:80, 48:80])), 4)
    0.01
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 16:
        raise ValueError(f"image must be 2-D and at least 16 x 16 px, got {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or infinite values")
    if pixel_size_nm is None or pixel_size_nm <= 0:
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    if g is None:
        g0 = choose_reflections(img)
        reference = "lattice" if reference is None else reference
    else:
        g0 = np.asarray(g, dtype=np.float64).reshape(2, 2)
        if abs(np.linalg.det(g0)) < 1e-12:
            raise ValueError(f"g1 and g2 are collinear: {g0.tolist()}")
    if order is None and period_nm is not None:
        if period_nm <= 0:
            raise ValueError(f"period_nm must be > 0, got {period_nm}")
        order = np.maximum(np.rint(period_nm / pixel_size_nm * np.hypot(g0[:, 0], g0[:, 1])), 1)
    order = np.ones(2, np.int64) if order is None else np.asarray(order, np.int64).reshape(2)
    if np.any(order < 1):
        raise ValueError(f"order must be >= 1, got {order.tolist()}")
    if sigma_px is None:
        sigma_px = float(np.min(order / np.hypot(g0[:, 0], g0[:, 1])))
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    h, w = img.shape
    ky = sfft.fftfreq(h)[:, None]
    kx = sfft.fftfreq(w)[None, :]
    # Single precision halves time and memory; phase gradients stay good to ~1e-6.
    spec = sfft.fft2((img - img.mean()).astype(np.float32))
    sigma_k = 1.0 / (2.0 * np.pi * sigma_px)
    loc = np.empty((2, 2, h, w), np.float32)     # local g_k = (loc[k, 0], loc[k, 1])
    amp = np.empty((2, h, w), np.float32)
    raw_phase = np.empty((2, h, w))
    for k in range(2):
        hg, hx, hy = _bandpass(spec, g0[k], sigma_k, kx, ky)
        p2 = hg.real ** 2 + hg.imag ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            loc[k, 0] = (hg.real * hx.imag - hg.imag * hx.real) / p2 / (2 * np.pi)
            loc[k, 1] = (hg.real * hy.imag - hg.imag * hy.real) / p2 / (2 * np.pi)
        del hx, hy
        amp[k] = np.sqrt(p2)
        raw_phase[k] = np.arctan2(hg.imag, hg.real)
        del hg, p2
    del spec
    mask = _lattice_mask(amp, sigma_px, amplitude_threshold)
    g_ref = _reference(g0, loc, mask, reference, img.shape)
    yy, xx = np.mgrid[:h, :w]
    phase = np.empty((2, h, w), np.float32)
    for k in range(2):
        ph = raw_phase[k] - 2 * np.pi * (g_ref[k, 0] * xx + g_ref[k, 1] * yy)
        phase[k] = np.mod(ph + np.pi, 2 * np.pi) - np.pi
    del raw_phase, xx, yy
    # Real-space vectors dual to the local g: columns of G^-1, G = [[g1x, g1y], [g2x, g2y]].
    (g1x, g1y), (g2x, g2y) = loc
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_det = 1.0 / (g1x * g2y - g1y * g2x)
    a1x, a1y = g2y * inv_det, -g2x * inv_det
    a2x, a2y = -g1y * inv_det, g1x * inv_det
    # Deformation gradient F = G^-1 G_ref and its polar decomposition F = R(omega) U.
    (r1x, r1y), (r2x, r2y) = g_ref
    f00, f01 = a1x * r1x + a2x * r2x, a1x * r1y + a2x * r2y
    f10, f11 = a1y * r1x + a2y * r2x, a1y * r1y + a2y * r2y
    omega = np.arctan2(f10 - f01, f00 + f11)
    c, s = np.cos(omega), np.sin(omega)
    exx = c * f00 + s * f10 - 1.0
    eyy = -s * f01 + c * f11 - 1.0
    exy = 0.5 * ((c * f01 + s * f11) + (-s * f00 + c * f10))
    with np.errstate(invalid="ignore", divide="ignore"):
        d_nm = np.stack([pixel_size_nm / np.hypot(g1x, g1y),
                         pixel_size_nm / np.hypot(g2x, g2y)]).astype(np.float32)
    a_nm = np.stack([order[0] * pixel_size_nm * np.hypot(a1x, a1y),
                     order[1] * pixel_size_nm * np.hypot(a2x, a2y)]).astype(np.float32)
    ux = uy = None
    if displacement:
        ux, uy = _displacement(phase, g_ref)
    f32 = np.float32
    return GPAResult(g=g_ref, order=order, phase=phase, amplitude=amp,
                     exx=exx.astype(f32), eyy=eyy.astype(f32), exy=exy.astype(f32),
                     rotation_deg=np.degrees(omega).astype(f32), d_nm=d_nm, a_nm=a_nm,
                     ux_px=ux, uy_px=uy, mask=mask, sigma_px=float(sigma_px),
                     pixel_size_nm=float(pixel_size_nm))


def _lattice_mask(amp, sigma_px, threshold):
    h, w = amp.shape[1:]
    mask = np.ones((h, w), bool)
    for k in range(2):
        top = np.percentile(amp[k], 99.0)
        mask &= amp[k] >= threshold * top
    b = int(np.ceil(2 * sigma_px))
    if 2 * b >= min(h, w):
        raise ValueError(f"sigma_px={sigma_px:.1f} is too large for a {h} x {w} px image")
    border = np.zeros((h, w), bool)
    border[b:h - b, b:w - b] = True
    return mask & border


def _reference(g0, loc, mask, reference, shape):
    """Reference reflections: ``g0``, or the median local g over the lattice / a region."""
    if reference is None:
        return g0.copy()
    if isinstance(reference, str):
        if reference != "lattice":
            raise ValueError(f"reference must be None, 'lattice' or a bool mask, got "
                             f"{reference!r}")
        region = mask
    else:
        region = np.asarray(reference, bool)
        if region.shape != shape:
            raise ValueError(f"reference mask has shape {region.shape}, image {shape}")
    sel = loc[:, :, region].reshape(4, -1)
    sel = sel[:, np.all(np.isfinite(sel), axis=0)]
    if sel.shape[1] == 0:
        raise ValueError("the GPA reference region is empty (no lattice fringes found there)")
    return np.median(sel, axis=1).reshape(2, 2)


def _displacement(phase, g_ref):
    """Unwrapped phases -> displacement ``u = -G_ref^-1 P / 2 pi`` in px."""
    from skimage.restoration import unwrap_phase

    p = np.stack([unwrap_phase(phase[k].astype(np.float64)) for k in range(2)])
    ginv = np.linalg.inv(g_ref)
    ux = -(ginv[0, 0] * p[0] + ginv[0, 1] * p[1]) / (2 * np.pi)
    uy = -(ginv[1, 0] * p[0] + ginv[1, 1] * p[1]) / (2 * np.pi)
    return ux.astype(np.float32), uy.astype(np.float32)
