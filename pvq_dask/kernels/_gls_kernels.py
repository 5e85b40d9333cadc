"""Numba kernels of the texture-aware (GLS) refinement (see :mod:`pvq_dask.kernels._gls`).

``gls_newton``: one block-diagonal Gauss-Newton step of every column on the generalised
least-squares objective, from the residual, its texture estimate and per-column Fisher
templates; ``core_residual``: the paper's residual test (excess over the noise in each column
core). Frame-wide passes are in :mod:`pvq_dask.kernels._frame_passes`.

Arrays named ``resid`` hold the image minus the rendered columns (not minus the mean level),
NaN where the image is not finite; ``texture`` is the Wiener estimate of ``resid - level``.
"""

import numpy as np
from numba import njit

from pvq_dask.kernels._chunks import run_chunks
from pvq_dask.kernels._fit import _invert_spd_into, _residual_frac

__all__ = ["core_residual", "gls_newton"]

_CHUNK = 128  # columns per work item of run_chunks (~0.5 ms of Gauss-Newton steps)


def gls_newton(resid, level, texture, vinv, params, active, radius, fisher, levels,
               sigma_prior, sigma_tau, step_out, hinv_out):
    """One block-diagonal Gauss-Newton step of the texture-aware (GLS) objective.

    The gradient is that of ``z = (resid - level - texture) * vinv`` (the residual filtered
    by the inverse total covariance; ``vinv`` is the inverse white-noise variance per
    pixel, 0 weight where ``resid`` is NaN) and ``fisher`` (L, 2, 5, 5) the white and GLS
    Fisher matrices of a unit-amplitude column for white-noise variances ``levels`` (L,),
    each normalised to unit variance: a column's GLS Hessian is the template at its local
    white variance (interpolated in log variance), its rows and columns rescaled so that its
    white-noise diagonal equals the column's own pixel-exact information. Parameters are
    x, y, sigma_x, sigma_y, amplitude (columns 0..4 of ``params``). Writes the Newton step
    and the inverse Hessian (the GLS covariance) of every active column. The widths carry a
    Gaussian prior (``sigma_prior`` +- ``sigma_tau``): columns of one frame share the probe
    and differ little in width, and a free width lets a weak column swallow a carbon grain.
    Chunks of columns run on the calling thread and numba's other threads
    (:func:`pvq_dask.kernels._chunks.run_chunks`).
    """
    run_chunks(_newton_range, params.shape[0], _CHUNK, resid, float(level), texture, vinv,
               params, active, float(radius), fisher, levels, float(sigma_prior),
               float(sigma_tau), step_out, hinv_out)


@njit(cache=True, nogil=True)
def _newton_range(start, stop, resid, level, texture, vinv, params, active, radius, fisher,
                  levels, sigma_prior, sigma_tau, step_out, hinv_out):
    """Columns ``start`` to ``stop`` of :func:`gls_newton`, with one set of scratch arrays
    (allocations cost more than the math of a column)."""
    hess = np.empty((5, 5))
    inv = np.empty((5, 5))
    low = np.empty((5, 5))
    grad = np.empty(5)
    info = np.empty(5)
    gx = np.empty(2 * int(np.ceil(radius)) + 1)
    for k in range(start, stop):
        if active[k]:
            _newton_column(k, resid, level, texture, vinv, params, radius, fisher, levels,
                           sigma_prior, sigma_tau, step_out, hinv_out, hess, inv, low, grad,
                           info, gx)


@njit(cache=True)
def _newton_column(k, resid, level, texture, vinv, params, radius, fisher, levels,
                   sigma_prior, sigma_tau, step_out, hinv_out, hess, inv, low, grad, info, gx):
    """:func:`gls_newton` for column ``k`` (scratch arrays passed in)."""
    h, w = resid.shape
    r = int(np.ceil(radius))
    x, y, sx, sy, a = params[k, 0], params[k, 1], params[k, 2], params[k, 3], params[k, 4]
    isx2, isy2 = 1.0 / (sx * sx), 1.0 / (sy * sy)
    isx3, isy3 = isx2 / sx, isy2 / sy
    cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    g0 = g1 = g2 = g3 = g4 = 0.0
    n0 = n1 = n2 = n3 = n4 = 0.0   # white-noise information of each parameter (diagonal)
    sum_x = 0.0
    xa, xb = max(cx - r, 0), min(cx + r + 1, w)
    for xx in range(xa, xb):
        gx[xx - xa] = np.exp(-0.5 * ((xx - x) / sx) ** 2)
    r2 = radius * radius
    for yy in range(max(cy - r, 0), min(cy + r + 1, h)):
        rem = r2 - (yy - cy) ** 2
        if rem < 0.0:
            continue
        half = int(np.sqrt(rem))
        while half * half > rem:
            half -= 1
        dy = yy - y
        gyv = np.exp(-0.5 * (dy / sy) ** 2)
        for xx in range(max(cx - half, xa), min(cx + half + 1, xb)):
            rr = resid[yy, xx] - level
            if np.isfinite(rr):
                vi = vinv[yy, xx]
                zz = (rr - texture[yy, xx]) * vi
                if not (np.isfinite(zz) and np.isfinite(vi)):
                    continue
            else:
                zz, vi = 0.0, 0.0
            dx = xx - x
            g = gyv * gx[xx - xa]
            ag = a * g
            j0 = ag * dx * isx2
            j1 = ag * dy * isy2
            j2 = ag * dx * dx * isx3
            j3 = ag * dy * dy * isy3
            g0 += j0 * zz
            g1 += j1 * zz
            g2 += j2 * zz
            g3 += j3 * zz
            g4 += g * zz
            n0 += j0 * j0 * vi
            n1 += j1 * j1 * vi
            n2 += j2 * j2 * vi
            n3 += j3 * j3 * vi
            n4 += g * g * vi
            sum_x += j0 * j0 + j1 * j1
    grad[0], grad[1], grad[2], grad[3], grad[4] = g0, g1, g2, g3, g4
    info[0], info[1], info[2], info[3], info[4] = n0, n1, n2, n3, n4
    # Local white variance (information-weighted harmonic mean) -> template.
    nl = levels.shape[0]
    t = 0.0
    if nl > 1 and info[0] + info[1] > 0.0:
        lv = np.log(sum_x / (info[0] + info[1]))
        t = (lv - np.log(levels[0])) / (np.log(levels[nl - 1]) - np.log(levels[0]))
        t = min(max(t * (nl - 1), 0.0), nl - 1 - 1e-9)
    i0 = int(t)
    f1 = t - i0
    i1 = min(i0 + 1, nl - 1)
    # Each parameter's template row/column is rescaled so the white-noise diagonal
    # matches this column's own (pixel-exact Poisson) information: D F_gls D (``low``
    # holds D in its first row until the inversion needs it).
    for p in range(5):
        amp = a if p < 4 else 1.0
        fw = (1 - f1) * fisher[i0, 0, p, p] + f1 * fisher[i1, 0, p, p]
        low[0, p] = np.sqrt(info[p] / max(fw * amp * amp, 1e-300)) * amp
    for p in range(5):
        for q in range(5):
            fg = (1 - f1) * fisher[i0, 1, p, q] + f1 * fisher[i1, 1, p, q]
            hess[p, q] = low[0, p] * low[0, q] * fg
    if sigma_tau > 0.0:
        for p in range(2, 4):
            grad[p] += (sigma_prior - params[k, p]) / (sigma_tau * sigma_tau)
            hess[p, p] += 1.0 / (sigma_tau * sigma_tau)
    if not _invert_spd_into(hess, 5, inv, low):
        for p in range(5):
            step_out[k, p] = 0.0
        hinv_out[k, 0, 0] = np.nan
        return
    for p in range(5):
        s = 0.0
        for q in range(5):
            s += inv[p, q] * grad[q]
        step_out[k, p] = s
        for q in range(5):
            hinv_out[k, p, q] = inv[p, q]


def core_residual(image, resid, level, texture, var_img, gain, read_var, params, active):
    """Excess RMS residual over the noise within 2 sigma of each column, / its amplitude.

    The full model (every column and the background) is ``image - resid + level + texture``;
    the noise variance is ``var_img`` where it has the image's shape, else the noise model
    (``gain``, ``read_var``) at the model. NaN for inactive columns.
    """
    out = np.full(params.shape[0], np.nan)
    run_chunks(_core_range, params.shape[0], 4 * _CHUNK, image, resid, float(level), texture,
               var_img, float(gain), float(read_var), params, active, out)
    return out


@njit(cache=True, nogil=True)
def _core_range(start, stop, image, resid, level, texture, var_img, gain, read_var, params,
                active, out):
    for k in range(start, stop):
        if active[k]:
            out[k] = _core_column(k, image, resid, level, texture, var_img, gain, read_var,
                                  params)


@njit(cache=True)
def _core_column(k, image, resid, level, texture, var_img, gain, read_var, params):
    """:func:`core_residual` of column ``k``."""
    use_img = var_img.shape[0] == image.shape[0] and var_img.shape[1] == image.shape[1]
    h, w = image.shape
    x, y, sx, sy, a = params[k, 0], params[k, 1], params[k, 2], params[k, 3], params[k, 4]
    isx, isy = 1.0 / sx, 1.0 / sy
    r = int(np.ceil(2.0 * max(sx, sy)))
    cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    ex2, vsum, cnt = 0.0, 0.0, 0
    for yy in range(max(cy - r, 0), min(cy + r + 1, h)):
        for xx in range(max(cx - r, 0), min(cx + r + 1, w)):
            ex = (xx - x) * isx
            ey = (yy - y) * isy
            if ex * ex + ey * ey > 4.0:
                continue
            d = resid[yy, xx] - level - texture[yy, xx]
            if np.isfinite(d):
                if use_img:
                    v = var_img[yy, xx]
                else:
                    v = gain * max(image[yy, xx] - d, 0.5 * gain) + read_var
                ex2 += d * d - v
                vsum += v
                cnt += 1
    return _residual_frac(ex2, vsum, cnt, a) if cnt else np.nan
