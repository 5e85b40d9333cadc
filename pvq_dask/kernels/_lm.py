"""Levenberg-Marquardt window fits of the batched column fitter (see :mod:`pvq_dask.kernels.fit`).

Every column is fitted in its own disc of pixels, chunks of columns on several threads, by a
Levenberg-Marquardt loop on the weighted least-squares objective

    chi2 = sum_i w_i (d_i - f_i)^2,   f = A g(x, y, sx, sy) + B [+ bx (X - cx) + by (Y - cy)]

where ``d`` is the image minus the current model of every *other* column (neighbour
subtraction) and ``w_i = 1 / (gain * model_i + read_var)`` is recomputed from the model after
each accepted step (iteratively reweighted least squares: its fixed point solves the Poisson
quasi-likelihood score equations). The returned covariance is the inverse of ``J^T W J`` at
the solution. Parameter layout: :data:`pvq_dask.kernels._fit.N_PARAM`.

Speed: a trial step is evaluated in one pass over the window that gives its chi2 under the
current weights (the acceptance test) and, for when it is accepted, the new weights, chi2
and normal equations (kept in a second set of buffers, swapped in on acceptance). The
Gaussian is separable: its 1-D factors on the window's columns and rows cost 2 (2R + 1)
exponentials instead of one per pixel.
"""

import numpy as np
from numba import njit

from pvq_dask.kernels._chunks import run_chunks
from pvq_dask.kernels._fit import (
    N_PARAM,
    _cholesky_solve_into,
    _invert_spd_into,
    _residual_frac,
)
from pvq_dask.kernels._lm_eval import BOTH, JAC_ONLY, evaluate, free_kind

__all__ = ["finite_stats", "fit_windows"]

_MIN_SIGMA_PX = 0.3
_CHUNK = 32                   # columns per work item of run_chunks (~0.5 ms)
# Small scratch per column: p (8), the LM's 8 vectors and 4 matrices of 8 x 8, and the
# covariance and its Cholesky factor (2 x 8 x 8).
_SMALL = 8 + 8 * 8 + 4 * 64 + 2 * 64


def fit_windows(image, model, var_img, params, rendered, centre, dx_off, dy_off, free, gain,
                read_var, weighted, tol, max_iter, min_pixels, cov, chi2_out, npix_out,
                niter_out, status_out, resid_out):
    """Fit every column (rows of ``params``, updated in place) in its own pixel disc.

    ``model`` is the rendered Gaussian part of all columns with parameters ``rendered``;
    each column's own rendered contribution is added back, so its data are the image minus
    its neighbours. ``centre`` (n, 2) int64 holds the window centre pixel of each column.
    ``var_img`` is a per-pixel variance image that replaces the noise model when it has the
    image's shape (pass a (1, 1) array to use ``gain`` and ``read_var``).
    ``free`` (8,) bool marks the fitted parameters (the others keep their start values).
    ``cov`` (n, 8, 8) receives the inverse of J^T W J (zero rows for fixed parameters).
    Chunks of columns run on the calling thread and numba's other threads
    (:func:`pvq_dask.kernels._chunks.run_chunks`).
    """
    run_chunks(_fit_range, params.shape[0], _CHUNK, image, model, var_img, params, rendered,
               centre, dx_off, dy_off, np.asarray(free, np.bool_),
               np.flatnonzero(free).astype(np.int64), float(gain), float(read_var),
               bool(weighted), float(tol), int(max_iter), int(min_pixels), cov, chi2_out,
               npix_out, niter_out, status_out, resid_out)


@njit(cache=True, nogil=True)
def _fit_range(start, stop, image, model, var_img, params, rendered, centre, dx_off, dy_off,
               free, free_idx, gain, read_var, weighted, tol, max_iter, min_pixels, cov,
               chi2_out, npix_out, niter_out, status_out, resid_out):
    """Columns ``start`` to ``stop`` of :func:`fit_windows`, with one set of scratch arrays
    (allocations cost more than a small fit's arithmetic)."""
    n_off = dx_off.shape[0]
    span = 2 * int(dx_off.max()) + 1
    fbuf = np.empty(7 * n_off + 2 * span + _SMALL)
    ibuf = np.empty(2 * n_off, np.int64)
    for k in range(start, stop):
        _fit_window(k, image, model, var_img, params, rendered, centre, dx_off, dy_off, free,
                    free_idx, gain, read_var, weighted, tol, max_iter, min_pixels, cov,
                    chi2_out, npix_out, niter_out, status_out, resid_out, fbuf, ibuf)


@njit(cache=True)
def _fit_window(k, image, model, var_img, params, rendered, centre, dx_off, dy_off, free,
                free_idx, gain, read_var, weighted, tol, max_iter, min_pixels, cov, chi2_out,
                npix_out, niter_out, status_out, resid_out, fbuf, ibuf):
    """:func:`fit_windows` for column ``k`` (scratch ``fbuf``, ``ibuf`` from
    :func:`_fit_range`)."""
    h, w = image.shape
    n_off = dx_off.shape[0]
    span = 2 * int(dx_off.max()) + 1
    r0 = (span - 1) // 2
    use_img = var_img.shape[0] == h and var_img.shape[1] == w
    px, py = fbuf[:n_off], fbuf[n_off:2 * n_off]
    data, others = fbuf[2 * n_off:3 * n_off], fbuf[3 * n_off:4 * n_off]
    fixed_var = fbuf[4 * n_off:5 * n_off]
    wts, wts_new = fbuf[5 * n_off:6 * n_off], fbuf[6 * n_off:7 * n_off]
    gx, gy = fbuf[7 * n_off:7 * n_off + span], fbuf[7 * n_off + span:7 * n_off + 2 * span]
    small = fbuf[7 * n_off + 2 * span:]
    gxi, gyi = ibuf[:n_off], ibuf[n_off:]
    cx, cy = centre[k, 0], centre[k, 1]
    # Own rendered contribution (to add back) uses the parameters the model was drawn with.
    rx, ry, rsx, rsy, ra = (rendered[k, 0], rendered[k, 1], rendered[k, 2], rendered[k, 3],
                            rendered[k, 4])
    if ra != 0.0:
        for t in range(span):
            ex = (cx - r0 + t - rx) / rsx
            ey = (cy - r0 + t - ry) / rsy
            gx[t] = ra * np.exp(-0.5 * ex * ex)
            gy[t] = np.exp(-0.5 * ey * ey)
    npix = 0
    bad = False
    for t in range(n_off):
        xx = cx + dx_off[t]
        yy = cy + dy_off[t]
        if xx < 0 or yy < 0 or xx >= w or yy >= h:
            continue
        val = image[yy, xx]
        if not np.isfinite(val):
            bad = True
            break
        own = 0.0
        if ra != 0.0:
            own = gx[dx_off[t] + r0] * gy[dy_off[t] + r0]
        oth = model[yy, xx] - own
        px[npix] = xx
        py[npix] = yy
        gxi[npix] = dx_off[t] + r0
        gyi[npix] = dy_off[t] + r0
        fixed_var[npix] = var_img[yy, xx] if use_img else -1.0
        data[npix] = val - oth
        others[npix] = oth
        npix += 1
    npix_out[k] = npix
    niter_out[k] = 0
    if bad:
        status_out[k] = 1
        return
    if npix < min_pixels:
        status_out[k] = 2
        return
    p = small[:N_PARAM]
    for i in range(N_PARAM):
        p[i] = params[k, i]
    for i in range(N_PARAM):
        if not free[i] and not np.isfinite(p[i]):
            p[i] = 0.0
    if not (np.isfinite(p[4]) and np.isfinite(p[5])):
        _auto_start(p, px, py, cx, cy, data, npix)
    status, it, chi2, jtj = _levenberg_marquardt(
        p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain, read_var,
        weighted, tol, max_iter, free_idx, gx, gy, float(dx_off.max()), wts, wts_new,
        small[N_PARAM:])
    niter_out[k] = it
    for i in range(N_PARAM):
        params[k, i] = p[i]
    chi2_out[k] = chi2
    nn, nf = N_PARAM * N_PARAM, free_idx.shape[0]
    inv = small[_SMALL - 2 * nn:_SMALL - nn].reshape((N_PARAM, N_PARAM))
    cov[k, :, :] = 0.0
    if _invert_spd_into(jtj, nf, inv, small[_SMALL - nn:].reshape((N_PARAM, N_PARAM))):
        for m in range(nf):
            for q in range(nf):
                cov[k, free_idx[m], free_idx[q]] = inv[m, q]
    else:
        status = 4
    status_out[k] = status
    resid_out[k] = _core_excess(p, px, py, cx, cy, data, others, fixed_var, npix, gain,
                                read_var)


@njit(cache=True)
def _auto_start(p, px, py, cx, cy, data, npix):
    """Background from the outer ring of the window, amplitude from its centre."""
    r2max = 0.0
    for t in range(npix):
        r2 = (px[t] - cx) ** 2 + (py[t] - cy) ** 2
        r2max = max(r2max, r2)
    ring, nring, core, ncore = 0.0, 0, 0.0, 0
    for t in range(npix):
        r2 = (px[t] - cx) ** 2 + (py[t] - cy) ** 2
        if r2 >= 0.6 * r2max:
            ring += data[t]
            nring += 1
        if r2 <= 2.0:
            core += data[t]
            ncore += 1
    p[5] = ring / max(nring, 1)
    p[4] = max(core / max(ncore, 1) - p[5], 1e-3)


@njit(cache=True)
def _levenberg_marquardt(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain,
                         read_var, weighted, tol, max_iter, free_idx, gx, gy, reach, wts,
                         wts_new, work):
    """LM loop on one window from ``p`` (updated in place). Returns the status code, the
    iterations, chi2 and J^T W J of the free parameters at the end (nf x nf, lower
    triangle). ``wts``, ``wts_new`` (>= npix) and ``work`` (>= 8 * 8 + 4 * 8 * 8) are
    scratch. The normal equations are solved for the free parameters only (the same
    numbers as the full system with the fixed ones pinned, whose rows are zero)."""
    n, nn = N_PARAM, N_PARAM * N_PARAM
    nf = free_idx.shape[0]
    jtr, jtr_new, jac, jf = work[:n], work[n:2 * n], work[2 * n:3 * n], work[3 * n:4 * n]
    step_c, z = work[4 * n:5 * n], work[5 * n:6 * n]
    o = 6 * n
    acc = work[o:o + nn].reshape((n, n))
    acc_new = work[o + nn:o + 2 * nn].reshape((n, n))
    lhs = work[o + 2 * nn:o + 3 * nn].reshape((n, n))
    low = work[o + 3 * nn:o + 4 * nn].reshape((n, n))
    trial, step = work[o + 4 * nn:o + 4 * nn + n], work[o + 4 * nn + n:o + 4 * nn + 2 * n]
    x0, y0 = p[0], p[1]
    max_shift = 0.6 * reach
    kind = free_kind(free_idx)
    _, chi2 = evaluate(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain,
                       read_var, weighted, JAC_ONLY, wts, wts, acc, jtr, free_idx, gx, gy,
                       jac, jf, kind)
    lam = 1e-3
    status = 3
    it = 0
    while it < max_iter:
        it += 1
        for m in range(nf):
            for q in range(m + 1):
                lhs[m, q] = acc[m, q]
            lhs[m, m] = acc[m, m] * (1.0 + lam) + 1e-12
        if not _cholesky_solve_into(lhs, jtr, nf, step_c, low, z):
            lam *= 10.0
            if lam > 1e12:
                status = 4
                break
            continue
        step[:] = 0.0
        for m in range(nf):
            step[free_idx[m]] = step_c[m]
        for i in range(N_PARAM):
            trial[i] = p[i] + step[i]
        valid = (trial[2] > _MIN_SIGMA_PX and trial[3] > _MIN_SIGMA_PX
                 and trial[2] < max_shift * 2 and trial[3] < max_shift * 2
                 and abs(trial[0] - x0) <= max_shift and abs(trial[1] - y0) <= max_shift)
        new, new_chi2 = np.inf, np.inf
        if valid:
            new, new_chi2 = evaluate(trial, px, py, gxi, gyi, cx, cy, data, others,
                                     fixed_var, npix, gain, read_var, weighted, BOTH, wts,
                                     wts_new, acc_new, jtr_new, free_idx, gx, gy, jac, jf,
                                     kind)
        if new <= chi2:
            tiny = abs(step[0]) <= tol and abs(step[1]) <= tol
            done = (chi2 - new) <= tol * chi2 or tiny
            for i in range(N_PARAM):
                p[i] = trial[i]
            wts, wts_new = wts_new, wts
            acc, acc_new = acc_new, acc
            jtr, jtr_new = jtr_new, jtr
            chi2 = new_chi2
            lam = max(lam * 0.1, 1e-9)
            if done:
                status = 0
                break
        else:
            lam *= 10.0
            if lam > 1e12:
                status = 0  # no step improves chi2: at the minimum to machine precision
                break
    return status, it, chi2, acc


@njit(cache=True)
def _core_excess(p, px, py, cx, cy, data, others, fixed_var, npix, gain, read_var):
    """Excess residual over the noise model in the column core (2 sigma), / amplitude."""
    ex2, vsum, ncore = 0.0, 0.0, 0
    for t in range(npix):
        ddx = (px[t] - p[0]) / p[2]
        ddy = (py[t] - p[1]) / p[3]
        if ddx * ddx + ddy * ddy <= 4.0:
            g = np.exp(-0.5 * (ddx * ddx + ddy * ddy))
            f = p[4] * g + p[5] + p[6] * (px[t] - cx) + p[7] * (py[t] - cy)
            r = data[t] - f
            v = fixed_var[t]
            if v < 0.0:
                v = gain * max(f + others[t], 0.5 * gain) + read_var
            ex2 += r * r - v
            vsum += v
            ncore += 1
    return _residual_frac(ex2, vsum, ncore, p[4])


@njit(cache=True)
def finite_stats(image):
    """Count, minimum, maximum, mean and variance of the finite pixels (one pass, no copy;
    the variance from the sum of squares about the first finite value); zeros when there
    are none."""
    count, lo, hi, total, sq, ref = 0, np.inf, -np.inf, 0.0, 0.0, np.nan
    for v in image.ravel():
        if np.isfinite(v):
            if count == 0:
                ref = v
            d = v - ref
            count += 1
            lo = min(lo, v)
            hi = max(hi, v)
            total += d
            sq += d * d
    if count == 0:
        return 0, 0.0, 0.0, 0.0, 0.0
    mean_d = total / count
    return count, lo, hi, ref + mean_d, max(sq / count - mean_d * mean_d, 0.0)
