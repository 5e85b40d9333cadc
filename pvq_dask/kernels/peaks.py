"""Atom-column candidates: texture-aware matched filter, local maxima, lattice completion.

Detection statistic: the signal-to-noise ratio of a Gaussian column of the frame's width at
every pixel, from a matched filter whitened against the frame's own noise (white shot + read
noise and the smooth amorphous-carbon texture, whose power spectrum is estimated from the
image: :func:`pvq_dask.kernels.crlb.estimate_texture_spectrum`). Under the noise model it is
N(0, 1) wherever there is no column, so thresholds are in units of sigma and do not depend on
dose, gain or contrast.

A crystal is not a random set of peaks. Strong maxima (``threshold``) seed a lattice whose
basis comes from the columns themselves (:func:`pvq_dask.kernels.lattice.estimate_basis`);
the lattice then grows site by site: a neighbouring site is accepted if the best maximum near
its predicted position is significant given how many accepted neighbours vouch for it (one
neighbour: ``threshold_edge``; two: ``threshold_corner``; a site enclosed by neighbours on
opposite sides or on three sides is inside the crystal and needs only ``threshold_inside``).
Isolated peaks off every lattice (carbon grains, contamination) are dropped.
"""

import numpy as np
from scipy import ndimage as ndi

from pvq_dask.kernels._frame_passes import render_columns
from pvq_dask.kernels._lattice_grow import MIN_LATTICE, grow_lattices
from pvq_dask.kernels.crlb import NoiseModel, estimate_noise_model, estimate_texture_spectrum
from pvq_dask.kernels.lattice import estimate_basis

__all__ = ["column_snr", "estimate_column_sigma", "find_columns", "refine_com"]

_SEARCH_FRAC = 0.35           # search radius around a predicted site, fraction of the step
_BASIS_SNR = 4.0              # maxima used to estimate the lattice basis
_SIGMA_CROP_PX = 768          # central crop used to estimate the column width
_STRONG_SNR = 5.0             # columns removed before the second texture-spectrum estimate
_CANDIDATE_SNR = 1.0          # weakest maximum a lattice site may take
_SMOOTH_FRAC = 0.75           # difference of Gaussians (in column widths) whose maxima we take
_SURROUND_FRAC = 3.0
# Band-pass level at diagonal sites, as a fraction of the on-column level above the empty
# one, beyond which the strong maxima's lattice is taken to be diagonal (measured: <= 0.05
# for right bases, 0.76 for the Pb + Cs lattice of 4 nm dots at 50 e/A^2).
_DIAGONAL_FRAC = 0.4


def _filled(image):
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    if min(image.shape) < 16:
        raise ValueError(f"image must be at least 16x16 px, got shape {image.shape}")
    finite = np.isfinite(image)
    if not finite.any():
        raise ValueError("image has no finite pixel")
    return np.where(finite, image, np.median(image[finite])), finite


def column_snr(image, *, sigma_px, noise=None, n_pass=2):
    """Matched-filter signal-to-noise ratio of a Gaussian column centred at every pixel.

    Parameters
    ----------
    image : ndarray (H, W)
    sigma_px : float
        Column width.
    noise : NoiseModel, optional
        Estimated from the image when omitted.
    n_pass : int
        Passes of the texture-spectrum estimate; from the second on, the strong columns of
        the previous pass are subtracted first (their power is not texture).

    Returns
    -------
    snr, amplitude : ndarray (H, W)
        SNR (N(0, 1) where there is no column) and the matched-filter amplitude estimate.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> img = rng.poisson(10 + 30 * np.exp(-((xx - 32) ** 2 + (yy - 20) ** 2) / 8.0))
    >>> snr, amp = column_snr(img.astype(float), sigma_px=2.0)
    >>> bool(snr[20, 32] > 10), bool(abs(np.median(snr)) < 1)
    (True, True)
    """
    filled, finite = _filled(image)
    snr, amplitude, _ = _maps(filled, finite, sigma_px, noise, n_pass)
    return snr, amplitude


def _maps(filled, finite, sigma_px, noise, n_pass):
    """SNR, amplitude and difference-of-Gaussians maps (one transform of the frame)."""
    if noise is None:
        noise = estimate_noise_model(filled, mask=finite)
    level = filled[finite].mean()
    resid = np.where(finite, filled - level, 0.0)
    spectrum = estimate_texture_spectrum(resid)
    for _ in range(n_pass - 1):
        # Columns are not texture: re-estimate the spectrum without the strong ones.
        snr, amp, dog = _whitened(resid, level, finite, spectrum, sigma_px, noise)
        xy, _ = _local_maxima(np.where(finite, dog, -np.inf), finite, 2, -np.inf, 0)
        ij = _pixel(xy, resid.shape)
        strong = snr[ij[:, 1], ij[:, 0]] >= _STRONG_SNR
        params = np.zeros((int(strong.sum()), 8))
        params[:, :2] = xy[strong]
        params[:, 2:4] = sigma_px
        params[:, 4] = amp[ij[strong, 1], ij[strong, 0]]
        model = render_columns(resid.shape, params, np.ones(len(params), np.bool_), 4.0)
        spectrum = estimate_texture_spectrum(np.where(finite, resid - model, 0.0))
    return _whitened(resid, level, finite, spectrum, sigma_px, noise)


def _whitened(resid, level, finite, spectrum, sigma_px, noise, pad_px=32):
    from scipy import fft as sfft

    h, w = resid.shape
    p = int(min(pad_px, h - 1, w - 1))
    padded = np.pad(resid, p, mode="reflect")
    shp = (sfft.next_fast_len(padded.shape[0], real=True),
           sfft.next_fast_len(padded.shape[1], real=True))
    ky = np.fft.fftfreq(shp[0]) * 2 * np.pi
    kx = np.fft.rfftfreq(shp[1]) * 2 * np.pi
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    g = np.exp(-0.5 * k2 * sigma_px**2)
    power = spectrum.white_power + spectrum.texture_at(np.sqrt(k2))
    filt = g / power
    filt[0, 0] = 0.0
    spec = sfft.rfft2(padded, s=shp, workers=-1)

    def back(gain):
        return sfft.irfft2(spec * gain, s=shp, workers=-1)[p:p + h, p:p + w]

    out = back(filt)
    # Difference of Gaussians for candidate maxima, and the local level for the shot noise.
    dog = back(np.exp(-0.5 * k2 * (_SMOOTH_FRAC * sigma_px) ** 2)
               - np.exp(-0.5 * k2 * (_SURROUND_FRAC * sigma_px) ** 2))
    local = level + back(np.exp(-0.5 * k2 * (2.0 * sigma_px) ** 2))
    # Full-grid sums (the rfft half-plane counts the mirrored columns twice).
    mult = np.full(kx.shape, 2.0)
    mult[0] = 1.0
    if shp[1] % 2 == 0:
        mult[-1] = 1.0
    npix = shp[0] * shp[1]
    info = float((g**2 / power * mult[None, :]).sum() - g[0, 0] ** 2 / power[0, 0]) / npix
    # Shot noise varies: scale the white part of the statistic's variance by the local level.
    scale = np.sqrt(np.clip(noise.variance(local) / spectrum.white_power, 0.05, 20.0))
    snr = out / np.sqrt(max(info, 1e-300)) / scale
    amplitude = out / max(2 * np.pi * sigma_px**2 * info, 1e-300)
    snr[~finite] = 0.0
    dog[~finite] = -np.inf
    return snr, amplitude, dog


def estimate_column_sigma(image, *, noise=None):
    """Column width (px) from a quick fit of the brightest local maxima.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:96, 0:96]
    >>> img = 5.0 + sum(30 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.2**2))
    ...                 for cx in range(12, 90, 16) for cy in range(12, 90, 16))
    >>> round(estimate_column_sigma(img), 1)
    2.2
    """
    from pvq_dask.kernels.fit import fit_columns

    filled, finite = _filled(image)
    # The width is a frame constant: a central crop is enough (and much cheaper).
    crop = tuple(slice(max((n - _SIGMA_CROP_PX) // 2, 0),
                       max((n - _SIGMA_CROP_PX) // 2, 0) + min(n, _SIGMA_CROP_PX))
                 for n in filled.shape)
    filled, finite = filled[crop], finite[crop]
    dog = ndi.gaussian_filter(filled, 1.5) - ndi.gaussian_filter(filled, 6.0)
    peak = (ndi.maximum_filter(dog, 7) == dog) & finite
    ys, xs = np.nonzero(peak)
    if len(xs) < 2:
        return 2.0
    best = np.argsort(-dog[ys, xs])[:200]
    xy = np.c_[xs[best], ys[best]].astype(float)
    r = fit_columns(filled, xy, background="constant", max_reinit=0, noise=noise)
    width = np.sqrt(np.abs(r["sigma_x_px"] * r["sigma_y_px"]))
    ok = (r["status"] == 0) & np.isfinite(width) & (r["amplitude"] > 0)
    width = width[ok]
    if not len(width):
        return 2.0
    # The strongest quarter of the band-pass response (``best`` is sorted by it): compact
    # atom columns, not the wider carbon grains, which can win on fitted amplitude alone
    # when a small particle has fewer columns than the frame has grains.
    top = np.arange(len(width))[:max(10, len(width) // 4)]
    # ... and of those the brighter half (the Pb columns) sets the frame's reference width.
    amp = r["amplitude"][ok][top]
    top = top[amp >= np.median(amp)]
    return float(np.clip(np.median(width[top]), 0.5, 20.0))


def _lattice_steps(xy, dog):
    """The two nearest-site steps (half the pseudo-cubic basis) of the strong maxima ``xy``.

    :func:`~pvq_dask.kernels.lattice.estimate_basis` (``sparse``: many weak columns are
    missing from the strong maxima) takes the lattice from the nearest neighbours. When the
    weakest columns all stay below the seed threshold (the halides of a small low-dose dot)
    the strong maxima are Pb and Cs, whose nearest neighbours are diagonal: the basis then
    comes out 45 deg off and sqrt(2) too long. The band-pass map
    ``dog`` decides: sampled one diagonal step from every strong maximum it shows the
    missing columns if the basis is diagonal, and the empty centre between four columns if
    it is right. Its level half a step away (always between columns) is the empty
    reference, its level one step away (always on columns) the full one.
    """
    u, v = estimate_basis(xy, sparse=True)
    diag = (0.25 * (u + v), 0.25 * (v - u))

    def level(steps):
        sites = np.concatenate([xy + sign * s for s in steps for sign in (1, -1)])
        ij = _pixel(sites, dog.shape)
        vals = dog[ij[:, 1], ij[:, 0]]
        vals = vals[np.isfinite(vals)]
        return float(np.median(vals)) if len(vals) else np.nan

    empty, full = level((0.25 * u, 0.25 * v)), level((0.5 * u, 0.5 * v))
    frac = (level(diag) - empty) / (full - empty) if full > empty else -np.inf
    if not frac > _DIAGONAL_FRAC:
        return 0.5 * u, 0.5 * v
    # estimate_basis's convention: the first step closest to the image x axis, the second
    # turned +90 deg from it.
    a = diag[0] if abs(diag[0][0]) >= abs(diag[0][1]) else diag[1]
    a = a if a[0] >= 0 else -a
    return a, np.array([-a[1], a[0]])


def _pixel(xy, shape):
    """Nearest pixel (x, y) of sub-pixel positions, clipped to the frame."""
    return np.clip(np.rint(xy).astype(np.int64), 0, [shape[1] - 1, shape[0] - 1])


def _local_maxima(snr, finite, min_distance_px, floor, border):
    size = 2 * int(min_distance_px) + 1
    peak = (ndi.maximum_filter(snr, size=size, mode="nearest") == snr) & (snr >= floor)
    if not finite.all():
        peak &= ndi.minimum_filter(finite, size=size, mode="constant", cval=False)
    if border > 0:
        peak[:border, :] = peak[-border:, :] = False
        peak[:, :border] = peak[:, -border:] = False
    ys, xs = np.nonzero(peak)
    # Sub-pixel: parabola through the 3-point profiles of the SNR map.
    h, w = snr.shape
    xm, xp = snr[ys, np.maximum(xs - 1, 0)], snr[ys, np.minimum(xs + 1, w - 1)]
    ym, yp = snr[np.maximum(ys - 1, 0), xs], snr[np.minimum(ys + 1, h - 1), xs]
    c = snr[ys, xs]
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.clip(np.nan_to_num(0.5 * (xm - xp) / (xm - 2 * c + xp)), -0.5, 0.5)
        dy = np.clip(np.nan_to_num(0.5 * (ym - yp) / (ym - 2 * c + yp)), -0.5, 0.5)
    return np.c_[xs + dx, ys + dy], c


def find_columns(image, *, min_distance_px=3, sigma_px=None, threshold=6.0,
                 threshold_edge=4.5, threshold_corner=3.0, threshold_inside=1.0,
                 threshold_pb=3.5, mask=None,
                 lattice=True, perovskite=True, noise=None, exclude_border_px=2):
    """Candidate atom-column positions (x, y) in px.

    Parameters
    ----------
    image : ndarray (H, W)
    min_distance_px : int
        Half-size of the local-maximum window (3: the paper's 7x7 neighbourhood).
    sigma_px : float, optional
        Column width; estimated from the image when omitted.
    threshold : float
        SNR of a lattice seed (and of every column when ``lattice`` is False).
    threshold_edge, threshold_corner, threshold_inside : float
        SNR a lattice site needs with one supporting neighbour, two, or when enclosed.
    threshold_pb : float
        SNR a site of the Pb sublattice needs in any case (``perovskite`` rules).
    mask : ndarray of bool (H, W), optional
        Where columns may be (e.g. a particle mask).
    lattice : bool
        Grow the crystal lattice from the seeds (module docstring); False returns the plain
        local maxima above ``threshold``.
    perovskite : bool
        Apply the [001] perovskite rules to each grown lattice
        (:mod:`pvq_dask.kernels._lattice_grow`): Pb
        sublattice = the brightest site parity, complete PbX6 octahedra, A sites with at
        least two Pb corners, nothing without a Pb neighbour.
    noise : NoiseModel, optional
    exclude_border_px : int
        No candidate this close to the frame edge.

    Returns
    -------
    ndarray (n, 2)
        Float (x, y) positions (sub-pixel peak of the SNR map; enclosed sites without a
        maximum sit at their predicted lattice position). Empty for an image without columns.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> yy, xx = np.mgrid[0:128, 0:128]
    >>> img = 10.0 + sum(40 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0**2))
    ...                  for cx in range(16, 120, 12) for cy in range(16, 120, 12))
    >>> xy = find_columns(rng.poisson(img).astype(float), sigma_px=2.0)
    >>> len(xy)   # a plain 9 x 9 lattice: no sublattice stands out, no perovskite rules
    81
    """
    filled, finite = _filled(image)
    if np.ptp(filled[finite]) == 0:
        return np.zeros((0, 2))
    if noise is None:
        noise = estimate_noise_model(filled, mask=finite)
    if noise.gain <= 0 and noise.read_var <= 0:
        noise = NoiseModel(gain=0.0, read_var=1e-12 * max(np.var(filled[finite]), 1e-300))
    sigma = float(sigma_px) if sigma_px is not None else estimate_column_sigma(filled,
                                                                               noise=noise)
    snr, _, dog = _maps(filled, finite, sigma, noise, 2)
    allowed = finite if mask is None else finite & np.asarray(mask, dtype=bool)
    floor = min(_CANDIDATE_SNR, threshold) if lattice else threshold
    # Maxima of a difference of Gaussians (no second lobe, so no ghost maxima between the
    # columns of a lattice, unlike the whitened filter; no slope, unlike plain smoothing),
    # scored by the whitened SNR (the best value within one pixel).
    xy, _ = _local_maxima(np.where(allowed, dog, -np.inf), allowed, min_distance_px,
                          -np.inf, int(exclude_border_px))
    ij = _pixel(xy, filled.shape)
    val = ndi.maximum_filter(snr, size=3)[ij[:, 1], ij[:, 0]]
    xy, val = xy[val >= floor], val[val >= floor]
    strong = val >= threshold
    if not lattice or strong.sum() < MIN_LATTICE:
        return xy[strong]
    try:
        steps = _lattice_steps(xy[val >= min(_BASIS_SNR, threshold)], dog)
    except ValueError:
        return xy[strong]
    search = _SEARCH_FRAC * float(np.linalg.norm(steps[0]))
    grown = grow_lattices(xy, val, strong, steps, search,
                          (threshold_edge, threshold_corner, threshold_inside),
                          threshold_pb=threshold_pb, perovskite=perovskite,
                          merge_px=min_distance_px + 0.5)
    if len(grown) == 0:
        return grown
    h, w = filled.shape
    b = int(exclude_border_px)
    keep = ((grown[:, 0] >= b) & (grown[:, 0] <= w - 1 - b) & (grown[:, 1] >= b)
            & (grown[:, 1] <= h - 1 - b))
    ij = np.clip(np.rint(grown).astype(np.int64), 0, [w - 1, h - 1])
    keep &= allowed[ij[:, 1], ij[:, 0]]
    return grown[keep]


def refine_com(image, xy, *, radius_px=3.0, n_iter=5):
    """Centre of mass of the background-subtracted intensity in a disc around each start.

    The background is the median of a one-pixel ring just outside the disc; negative
    excesses are ignored; NaN pixels are skipped. Starts are re-centred ``n_iter`` times.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:32, 0:32]
    >>> img = 3.0 + 50 * np.exp(-((xx - 14.6) ** 2 + (yy - 17.2) ** 2) / (2 * 1.5**2))
    >>> np.round(refine_com(img, [[15, 17]]), 1).tolist()
    [[14.6, 17.2]]
    """
    image = np.asarray(image, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if radius_px <= 0:
        raise ValueError(f"radius_px must be > 0, got {radius_px}")
    if len(xy) == 0:
        return xy.copy()
    h, w = image.shape
    r_out = radius_px + 1.5
    d = np.arange(-int(np.ceil(r_out)), int(np.ceil(r_out)) + 1)
    oy, ox = [a.ravel() for a in np.meshgrid(d, d, indexing="ij")]
    out = xy.copy()
    for _ in range(max(n_iter, 1)):
        cx, cy = np.rint(out[:, 0]).astype(np.int64), np.rint(out[:, 1]).astype(np.int64)
        px, py = cx[:, None] + ox[None, :], cy[:, None] + oy[None, :]
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        vals = np.where(inside, image[np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)], np.nan)
        dist2 = (px - out[:, :1]) ** 2 + (py - out[:, 1:]) ** 2
        ring = np.where((dist2 > radius_px**2) & (dist2 <= r_out**2), vals, np.nan)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                bg = np.nanmedian(ring, axis=1)
            wgt = np.where(dist2 <= radius_px**2, vals - bg[:, None], np.nan)
            wgt = np.where(wgt > 0, wgt, 0.0)
            total = wgt.sum(axis=1)
            nx = (wgt * px).sum(axis=1) / total
            ny = (wgt * py).sum(axis=1) / total
        good = np.isfinite(nx) & np.isfinite(ny) & (total > 0)
        out[good, 0], out[good, 1] = nx[good], ny[good]
    return out
