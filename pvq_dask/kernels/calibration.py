"""Lattice-based check of a stored pixel-size calibration.

Stored calibrations of real STEM files are often off by several per cent. With a
known pseudo-cubic lattice constant ``a_pc`` the Fourier reflections of the image give
the lattice spacing in pixels, hence the true pixel size.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LatticeCalibration", "lattice_calibration_check"]

#: Reflections (h, k) of a square lattice used for the fit: |g| = sqrt(h^2 + k^2) / a.
_ORDERS = (1, 2, 4, 5, 8)
#: Subtracted-log-power threshold (natural log) above the ring background for a peak;
#: pure noise exceeds 3 with probability ~1e-5 per pixel.
_PEAK_LOG_MIN = 3.0
#: Largest distance of a reflection's fractional index from an integer.
_INDEX_TOL = 0.12
#: The same after the first fit, which already absorbs shear and anisotropy; excludes
#: window side lobes of strong reflections.
_INDEX_TOL_FINE = 0.05


@dataclass(frozen=True)
class LatticeCalibration:
    """Result of :func:`lattice_calibration_check`.

    Attributes
    ----------
    spacing_px, spacing_nm : float
        Measured pseudo-cubic lattice spacing (mean of the two basis lengths); nm with
        the pixel size that was passed in.
    a_pc_nm, pixel_size_nm : float
        The known lattice constant and the pixel size that was checked.
    corrected_pixel_size_nm : float
        ``a_pc_nm / spacing_px``: the pixel size that makes the lattice right.
    scale_error : float
        ``pixel_size_nm / corrected_pixel_size_nm - 1`` (+0.05: stored calibration 5 % high).
    anisotropy : float
        ``|a1| / |a2| - 1`` of the two basis vectors (scan distortion, drift).
    rotation_deg : float
        Angle of the first basis vector from the image x axis, in [0, 90).
    n_reflections : int
        Reflections used in the least-squares fit.
    """

    spacing_px: float
    spacing_nm: float
    a_pc_nm: float
    pixel_size_nm: float
    corrected_pixel_size_nm: float
    scale_error: float
    anisotropy: float
    rotation_deg: float
    n_reflections: int


def _power_spectrum(image, max_size_px):
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    n = min(h, w, max_size_px)
    y0, x0 = (h - n) // 2, (w - n) // 2
    img = img[y0:y0 + n, x0:x0 + n]
    win = np.hanning(n)
    img = (img - img.mean()) * np.outer(win, win)
    size = 2 * n  # zero padding halves the bin width for sub-bin peak positions
    spec = np.fft.fftshift(np.abs(np.fft.fft2(img, s=(size, size))) ** 2)
    return np.log(spec + 1e-30 * spec.max() + 1e-300), size


def _subtract_ring_background(logp, size):
    """Log power minus its per-ring median (the isotropic, non-periodic background)."""
    c = size // 2
    yy, xx = np.indices(logp.shape)
    r = np.hypot(yy - c, xx - c).round().astype(int).ravel()
    values = logp.ravel()
    order = np.lexsort((values, r))
    counts = np.bincount(r)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ring_median = values[order][starts + counts // 2]
    return logp - ring_median[r].reshape(logp.shape)


def _peaks(flat, logp, size, r_min, r_max):
    """Peaks of ``flat`` in one half plane: sub-bin positions from ``logp`` (cycles/px,
    as (gx, gy)) and heights above the ring background."""
    c = size // 2
    is_max = (flat == ndimage.maximum_filter(flat, size=9)) & (flat > _PEAK_LOG_MIN)
    ys, xs = np.nonzero(is_max)
    dy, dx = ys - c, xs - c
    r = np.hypot(dx, dy)
    keep = (r >= r_min) & (r <= r_max) & ((dy > 0) | ((dy == 0) & (dx > 0)))
    keep &= (ys > 0) & (xs > 0) & (ys < size - 1) & (xs < size - 1)
    ys, xs = ys[keep], xs[keep]
    # Re-centre on the raw log power's maximum (the ring background can shift it a bin).
    local = ndimage.maximum_filter(logp, size=3)
    for _ in range(3):
        win = np.stack([logp[np.clip(ys + dy, 0, size - 1), np.clip(xs + dx, 0, size - 1)]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        step = np.argmax(win, axis=0)
        moved = local[ys, xs] > logp[ys, xs]
        ys = np.where(moved, np.clip(ys + step // 3 - 1, 1, size - 2), ys)
        xs = np.where(moved, np.clip(xs + step % 3 - 1, 1, size - 2), xs)

    def offset(lo, mid, hi):
        den = lo - 2 * mid + hi
        return np.where(den < 0, 0.5 * (lo - hi) / np.where(den < 0, den, -1), 0.0)

    oy = offset(logp[ys - 1, xs], logp[ys, xs], logp[ys + 1, xs])
    ox = offset(logp[ys, xs - 1], logp[ys, xs], logp[ys, xs + 1])
    g = np.c_[xs - c + ox, ys - c + oy] / size
    return g, flat[ys, xs]


def _seed_basis(g, height, k0, tol):
    """Reciprocal basis (columns g100, g010) from the strongest first- or second-order peak."""
    radius = np.hypot(g[:, 0], g[:, 1]) / k0
    best = None
    for order, offset_deg in ((1, 0.0), (2, 45.0)):
        cand = np.nonzero(np.abs(radius / np.sqrt(order) - 1) < tol)[0]
        if cand.size and (best is None or height[cand].max() > best[0]):
            i = cand[np.argmax(height[cand])]
            best = (height[i], radius[i] / np.sqrt(order), np.arctan2(g[i, 1], g[i, 0])
                    - np.deg2rad(offset_deg))
    if best is None:
        return None
    _, scale, phi = best
    k = scale * k0
    return k * np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])


def _index(g, height, gt, tol):
    """Peaks that index onto the basis (strongest one per (h, k)) and their indices."""
    frac = np.linalg.solve(gt.T, g.T).T
    hk = np.round(frac)
    ok = (np.abs(frac - hk).max(axis=1) < tol) & np.isin((hk ** 2).sum(axis=1), _ORDERS)
    best = {}
    for i in np.nonzero(ok)[0]:
        key = tuple(hk[i])
        if key not in best or height[i] > height[best[key]]:
            best[key] = i
    keep = np.zeros(len(g), bool)
    keep[list(best.values())] = True
    return keep, hk


def lattice_calibration_check(image, pixel_size_nm, *, a_pc_nm, tol=0.15, max_size_px=1024):
    """Measure the pseudo-cubic lattice spacing from the image's Fourier reflections.

    The strongest reflection within ``tol`` of the expected (100) or (110) radius seeds a
    square reciprocal basis; every reflection of the orders (100), (110), (200), (210),
    (220) that indexes onto it is then fitted by least squares with a general 2x2 basis,
    so scan shear and anisotropy do not bias the mean spacing. Half-order superstructure
    reflections (octahedral tilts) do not index and are ignored.

    Parameters
    ----------
    image : ndarray (y, x)
        One frame; the central ``max_size_px`` square is used.
    pixel_size_nm : float
        The calibration to check.
    a_pc_nm : float
        Known pseudo-cubic lattice constant (SrTiO3 0.3905 nm; CsPbI3 Pb-Pb ~0.62 nm).
    tol : float
        Largest relative calibration error searched for (0.15 = +-15 %).
    max_size_px : int
        Size of the central square analysed.

    Returns
    -------
    LatticeCalibration

    Raises
    ------
    ValueError
        Not a 2-D image, bad numbers, or no lattice reflections near the expected spacing.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[0:256, 0:256]
    >>> img = np.cos(2 * np.pi * xx / 16.0) + np.cos(2 * np.pi * yy / 16.0)
    >>> img += rng.normal(0, 1.0, img.shape)
    >>> cal = lattice_calibration_check(img, 0.026, a_pc_nm=0.4)  # true: 0.4/16 = 0.025
    >>> round(cal.spacing_px, 2), round(cal.corrected_pixel_size_nm, 4)
    (16.0, 0.025)
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (y, x), got shape {image.shape}")
    if not (pixel_size_nm > 0 and a_pc_nm > 0 and 0 < tol < 0.2):
        raise ValueError(f"need pixel_size_nm > 0, a_pc_nm > 0 and 0 < tol < 0.2; got "
                         f"{pixel_size_nm}, {a_pc_nm}, {tol}")
    a_px0 = a_pc_nm / pixel_size_nm
    if a_px0 < 2.5 * (1 + tol) * np.sqrt(2) or a_px0 * 2 > min(image.shape[:2], default=0):
        raise ValueError(f"expected lattice spacing {a_px0:.1f} px cannot be measured in a "
                         f"{image.shape} image")
    logp, size = _power_spectrum(image, max_size_px)
    flat = _subtract_ring_background(logp, size)
    k0 = 1.0 / a_px0
    r_max = min(np.sqrt(max(_ORDERS)) * k0 * (1 + tol), 0.49) * size
    g, height = _peaks(flat, logp, size, 0.5 * k0 * size, r_max)
    basis = _seed_basis(g, height, k0, tol) if len(g) else None
    if basis is None:
        raise ValueError(f"no lattice reflection within {tol:.0%} of a_pc = {a_pc_nm} nm "
                         f"({a_px0:.1f} px at {pixel_size_nm} nm/px)")
    gt = basis.T
    for index_tol in (_INDEX_TOL, _INDEX_TOL_FINE, _INDEX_TOL_FINE):
        ok, hk = _index(g, height, gt, index_tol)
        if np.linalg.matrix_rank(hk[ok]) < 2:
            raise ValueError(f"fewer than two independent lattice reflections near a_pc = "
                             f"{a_pc_nm} nm; is the lattice resolved?")
        w = np.sqrt(np.clip(height[ok], 0, None))[:, None]
        gt, *_ = np.linalg.lstsq(hk[ok] * w, g[ok] * w, rcond=None)  # g = hk @ gt
    real = np.linalg.inv(gt.T).T  # columns: real-space basis vectors in px
    lengths = np.hypot(real[0], real[1])
    spacing_px = float(lengths.mean())
    corrected = a_pc_nm / spacing_px
    rot = float(np.rad2deg(np.arctan2(real[1, 0], real[0, 0])) % 90.0)
    return LatticeCalibration(
        spacing_px=spacing_px, spacing_nm=spacing_px * pixel_size_nm, a_pc_nm=float(a_pc_nm),
        pixel_size_nm=float(pixel_size_nm), corrected_pixel_size_nm=corrected,
        scale_error=pixel_size_nm / corrected - 1.0,
        anisotropy=float(lengths[0] / lengths[1] - 1.0), rotation_deg=rot,
        n_reflections=int(ok.sum()))
