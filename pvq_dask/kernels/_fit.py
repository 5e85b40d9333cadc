"""Shared pieces of the batched column fitter (see :mod:`pvq_dask.kernels.fit`): parameter
layout, status codes, window discs, the column renderer and small numba linear algebra. The
Levenberg-Marquardt window fits are in :mod:`pvq_dask.kernels._lm`.

Parameter layout (``N_PARAM`` columns of ``params``): x, y, sigma_x, sigma_y, amplitude,
background, background slope x, background slope y (both zero and fixed for a constant
background).
"""

import numpy as np
from numba import njit

__all__ = ["N_PARAM", "STATUS", "crop_box", "fast_len", "pack_windows", "window_offsets"]

N_PARAM = 8
#: Status codes of :func:`pvq_dask.kernels._lm.fit_windows`.
STATUS = {"ok": 0, "nan": 1, "few_pixels": 2, "max_iter": 3, "singular": 4, "skipped": 5}
_MIN_SIGMA_PX = 0.3


def window_offsets(radius_px):
    """Integer (dx, dy) offsets of the disc of radius ``radius_px``, as two int64 arrays."""
    r = int(np.ceil(radius_px))
    d = np.arange(-r, r + 1)
    yy, xx = np.meshgrid(d, d, indexing="ij")
    keep = xx**2 + yy**2 <= radius_px**2 + 1e-9
    return xx[keep].astype(np.int64), yy[keep].astype(np.int64)


@njit(cache=True)
def _residual_frac(excess_sum, var_sum, count, amplitude):
    """RMS residual beyond the noise, as a fraction of the peak amplitude.

    Only the excess beyond three times the sampling error of a noise-only residual counts
    (the mean of ``count`` squared Gaussian residuals has relative std sqrt(2 / count)): the
    paper's 8 % rule was set on denoised frames, and on raw low-dose frames a weak column's
    plain residual is noise far above 8 % of its peak.
    """
    if count == 0:
        return np.nan
    mean_var = var_sum / count
    excess = excess_sum / count - 3.0 * np.sqrt(2.0 / count) * mean_var
    return np.sqrt(max(excess, 0.0)) / max(abs(amplitude), 1e-12)


@njit(cache=True)
def _cholesky(a, n, low):
    """Lower Cholesky factor of the symmetric n x n ``a`` into ``low``; False if ``a`` is
    not positive definite."""
    for i in range(n):
        for j in range(i + 1):
            s = a[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            if i == j:
                if s <= 0.0:
                    return False
                low[i, i] = np.sqrt(s)
            else:
                low[i, j] = s / low[j, j]
    return True


@njit(cache=True)
def _cholesky_solve(a, b, n, out):
    """Solve a x = b for symmetric positive definite a (n x n); False if not SPD."""
    return _cholesky_solve_into(a, b, n, out, np.zeros((n, n)), np.empty(n))


@njit(cache=True)
def _cholesky_solve_into(a, b, n, out, low, z):
    """:func:`_cholesky_solve` with the scratch ``low`` (n x n, lower triangle used) and
    ``z`` (n) passed in."""
    if not _cholesky(a, n, low):
        return False
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= low[i, k] * z[k]
        z[i] = s / low[i, i]
    for i in range(n - 1, -1, -1):
        s = z[i]
        for k in range(i + 1, n):
            s -= low[k, i] * out[k]
        out[i] = s / low[i, i]
    return True


@njit(cache=True)
def _invert_spd(a, n, out):
    """Inverse of a symmetric positive definite n x n matrix into ``out``; False if not SPD."""
    return _invert_spd_into(a, n, out, np.empty((n, n)))


@njit(cache=True)
def _invert_spd_into(a, n, out, low):
    """:func:`_invert_spd` with the Cholesky factor's scratch ``low`` (n x n) passed in: one
    factorisation, then a forward and back substitution per unit vector (same arithmetic as
    :func:`_cholesky_solve` on each column)."""
    if not _cholesky(a, n, low):
        return False
    for j in range(n):
        # Forward substitution of e_j into out[:, j], then back substitution in place.
        for i in range(n):
            s = 1.0 if i == j else 0.0
            for k in range(i):
                s -= low[i, k] * out[k, j]
            out[i, j] = s / low[i, i]
        for i in range(n - 1, -1, -1):
            s = out[i, j]
            for k in range(i + 1, n):
                s -= low[k, i] * out[k, j]
            out[i, j] = s / low[i, i]
    return True


def crop_box(shape, xy, margin_px, min_px):
    """Rows and columns (start, stop) of the box around the points ``xy`` (n, 2) plus
    ``margin_px``, at least ``min_px`` a side and grown to a fast FFT length
    (:func:`fast_len`), both where the frame of ``shape`` allows; the whole frame if the
    points are outside it."""
    box = []
    for axis, n in ((1, shape[0]), (0, shape[1])):
        lo = max(int(np.floor(xy[:, axis].min())) - margin_px, 0)
        hi = min(int(np.ceil(xy[:, axis].max())) + margin_px + 1, n)
        if hi <= lo:
            return (0, shape[0]), (0, shape[1])
        size = min(fast_len(max(hi - lo, min_px)), n)
        lo = min(max(lo - (size - (hi - lo)) // 2, 0), n - size)
        box.append((lo, lo + size))
    return tuple(box)


def fast_len(n):
    """Smallest 2^a 3^b 5^c >= n."""
    best = 2 * n
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def pack_windows(params, res, xy0):
    """The per-column result dict of the window fits (``fit_columns``'s keys); columns whose
    window could not be fitted keep their start ``xy0`` and NaN elsewhere."""
    out = {
        "x_px": params[:, 0].copy(), "y_px": params[:, 1].copy(),
        "sigma_x_px": params[:, 2].copy(), "sigma_y_px": params[:, 3].copy(),
        "amplitude": params[:, 4].copy(), "background": params[:, 5].copy(),
        "cov": res["cov"][:, :2, :2].copy(), "n_iter": res["niter"].copy(),
        "residual_frac": res["resid"].copy(), "chi2_red": res["chi2"] / res["dof"],
        "status": res["status"].copy(),
    }
    unusable = np.isin(res["status"], (STATUS["nan"], STATUS["few_pixels"]))
    for key in ("sigma_x_px", "sigma_y_px", "amplitude", "background", "residual_frac",
                "chi2_red"):
        out[key][unusable] = np.nan
    out["cov"][unusable] = np.nan
    out["x_px"][unusable] = xy0[unusable, 0]
    out["y_px"][unusable] = xy0[unusable, 1]
    return out

