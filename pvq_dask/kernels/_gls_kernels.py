"""Numba kernels of the texture-aware (GLS) refinement (see :mod:`pvq_dask.kernels._gls`).

``gls_newton``: one block-diagonal Gauss-Newton step of every column on the generalised
least-squares objective, from the filtered residual and per-column Fisher templates;
``core_residual``: the paper's residual test (excess over the noise in each column core).
"""

import numpy as np
from numba import njit, prange

from pvq_dask.kernels._fit import _invert_spd, _residual_frac

__all__ = ["core_residual", "gls_newton"]


@njit(parallel=True, cache=True)
def gls_newton(z, vinv, params, active, radius, fisher, levels, sigma_prior, sigma_tau,
               step_out, hinv_out):
    """One block-diagonal Gauss-Newton step of the texture-aware (GLS) objective.

    ``z`` is Sigma^-1 r (residual filtered by the inverse total covariance), ``vinv`` the
    inverse white-noise variance per pixel and ``fisher`` (L, 2, 5, 5) the white and GLS
    Fisher matrices of a unit-amplitude column for white-noise variances ``levels`` (L,),
    each normalised to unit variance: a column's GLS Hessian is the template at its local
    white variance (interpolated in log variance), its rows and columns rescaled so that its
    white-noise diagonal equals the column's own pixel-exact information. Parameters are
    x, y, sigma_x, sigma_y, amplitude (columns 0..4 of ``params``). Writes the Newton step
    and the inverse Hessian (the GLS covariance) of every active column. The widths carry a
    Gaussian prior (``sigma_prior`` +- ``sigma_tau``): columns of one frame share the probe
    and differ little in width, and a free width lets a weak column swallow a carbon grain.
    """
    h, w = z.shape
    n = params.shape[0]
    r = int(np.ceil(radius))
    for k in prange(n):
        if not active[k]:
            continue
        x, y, sx, sy, a = params[k, 0], params[k, 1], params[k, 2], params[k, 3], params[k, 4]
        cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        grad = np.zeros(5)
        hess = np.zeros((5, 5))
        jac = np.empty(5)
        info = np.zeros(5)   # white-noise information of each parameter (diagonal)
        sum_x = 0.0
        xa, xb = max(cx - r, 0), min(cx + r + 1, w)
        gx = np.empty(max(xb - xa, 0))
        for xx in range(xa, xb):
            gx[xx - xa] = np.exp(-0.5 * ((xx - x) / sx) ** 2)
        for yy in range(max(cy - r, 0), min(cy + r + 1, h)):
            gyv = np.exp(-0.5 * ((yy - y) / sy) ** 2)
            for xx in range(xa, xb):
                if (xx - cx) ** 2 + (yy - cy) ** 2 > radius * radius:
                    continue
                zz = z[yy, xx]
                vi = vinv[yy, xx]
                if not (np.isfinite(zz) and np.isfinite(vi)):
                    continue
                dx = xx - x
                dy = yy - y
                g = gyv * gx[xx - xa]
                ag = a * g
                jac[0] = ag * dx / (sx * sx)
                jac[1] = ag * dy / (sy * sy)
                jac[2] = ag * dx * dx / (sx * sx * sx)
                jac[3] = ag * dy * dy / (sy * sy * sy)
                jac[4] = g
                for p in range(5):
                    grad[p] += jac[p] * zz
                    info[p] += jac[p] * jac[p] * vi
                sum_x += jac[0] * jac[0] + jac[1] * jac[1]
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
        # matches this column's own (pixel-exact Poisson) information: D F_gls D.
        dscale = np.empty(5)
        amp = np.array([a, a, a, a, 1.0])
        for p in range(5):
            fw = (1 - f1) * fisher[i0, 0, p, p] + f1 * fisher[i1, 0, p, p]
            dscale[p] = np.sqrt(info[p] / max(fw * amp[p] * amp[p], 1e-300)) * amp[p]
        for p in range(5):
            for q in range(5):
                fg = (1 - f1) * fisher[i0, 1, p, q] + f1 * fisher[i1, 1, p, q]
                hess[p, q] = dscale[p] * dscale[q] * fg
        if sigma_tau > 0.0:
            for p in (2, 3):
                grad[p] += (sigma_prior - params[k, p]) / (sigma_tau * sigma_tau)
                hess[p, p] += 1.0 / (sigma_tau * sigma_tau)
        inv = np.zeros((5, 5))
        if not _invert_spd(hess, 5, inv):
            for p in range(5):
                step_out[k, p] = 0.0
            hinv_out[k, 0, 0] = np.nan
            continue
        for p in range(5):
            s = 0.0
            for q in range(5):
                s += inv[p, q] * grad[q]
            step_out[k, p] = s
            for q in range(5):
                hinv_out[k, p, q] = inv[p, q]


@njit(parallel=True, cache=True)
def core_residual(image, total, var, params, active):
    """Excess RMS residual over the noise within 2 sigma of each column, / its amplitude.

    ``total`` is the full model (every column and the background), ``var`` the per-pixel
    noise variance. NaN for inactive columns.
    """
    h, w = image.shape
    n = params.shape[0]
    out = np.full(n, np.nan)
    for k in prange(n):
        if not active[k]:
            continue
        x, y, sx, sy, a = params[k, 0], params[k, 1], params[k, 2], params[k, 3], params[k, 4]
        r = int(np.ceil(2.0 * max(sx, sy)))
        cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        ex2, vsum, cnt = 0.0, 0.0, 0
        for yy in range(max(cy - r, 0), min(cy + r + 1, h)):
            for xx in range(max(cx - r, 0), min(cx + r + 1, w)):
                ex = (xx - x) / sx
                ey = (yy - y) / sy
                if ex * ex + ey * ey > 4.0:
                    continue
                d = image[yy, xx] - total[yy, xx]
                if np.isfinite(d):
                    ex2 += d * d - var[yy, xx]
                    vsum += var[yy, xx]
                    cnt += 1
        if cnt:
            out[k] = _residual_frac(ex2, vsum, cnt, a)
    return out
