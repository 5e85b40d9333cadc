"""Numba kernels of the batched column fitter (see :mod:`pvq_dask.kernels.fit`).

Every column is fitted in its own disc of pixels, all columns in parallel (``prange``), by a
Levenberg-Marquardt loop on the weighted least-squares objective

    chi2 = sum_i w_i (d_i - f_i)^2,   f = A g(x, y, sx, sy) + B [+ bx (X - cx) + by (Y - cy)]

where ``d`` is the image minus the current model of every *other* column (neighbour
subtraction) and ``w_i = 1 / (gain * model_i + read_var)`` is recomputed from the model after
each accepted step (iteratively reweighted least squares: its fixed point solves the Poisson
quasi-likelihood score equations). The returned covariance is the inverse of ``J^T W J`` at
the solution.

Parameter layout (``N_PARAM`` columns of ``params``): x, y, sigma_x, sigma_y, amplitude,
background, background slope x, background slope y (both zero and fixed for a constant
background).
"""

import numpy as np
from numba import njit, prange

__all__ = ["N_PARAM", "STATUS", "fit_windows", "render_model", "window_offsets"]

N_PARAM = 8
#: Status codes of :func:`fit_windows`.
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
def render_model(shape, params, active, n_sigma):
    """Sum of the Gaussian parts (no background) of the active columns, (H, W) float64.

    Drawn band by band of rows (each band draws every column that reaches into it). Serial:
    the work is a few multiply-adds per pixel, less than a parallel region's start-up and
    far less than its barrier on a loaded machine (measured 1 ms serial vs 23 ms parallel,
    1307 columns, 1024^2, 2 busy cores).
    """
    h, w = shape
    out = np.zeros((h, w))
    n = params.shape[0]
    reach = np.zeros(n, np.int64)
    cyk = np.zeros(n, np.int64)
    rmax = 0
    for k in range(n):
        if active[k]:
            reach[k] = int(np.ceil(n_sigma * max(params[k, 2], params[k, 3])))
            cyk[k] = int(np.floor(params[k, 1] + 0.5))
            rmax = max(rmax, reach[k])
    order = np.argsort(cyk)
    ys = cyk[order]
    band = 16
    n_band = (h + band - 1) // band
    for b in range(n_band):
        y0 = b * band
        y1 = min(y0 + band, h)
        lo = np.searchsorted(ys, y0 - rmax)
        hi = np.searchsorted(ys, y1 + rmax, side="right")
        for t in range(lo, hi):
            k = order[t]
            if not active[k]:
                continue
            x, y, sx, sy, a = (params[k, 0], params[k, 1], params[k, 2], params[k, 3],
                               params[k, 4])
            r = reach[k]
            cx, cy = int(np.floor(x + 0.5)), cyk[k]
            xa, xb = max(cx - r, 0), min(cx + r + 1, w)
            gx = np.empty(max(xb - xa, 0))
            for xx in range(xa, xb):
                ex = (xx - x) / sx
                gx[xx - xa] = a * np.exp(-0.5 * ex * ex)
            for yy in range(max(cy - r, y0), min(cy + r + 1, y1)):
                ey = (yy - y) / sy
                gyv = np.exp(-0.5 * ey * ey)
                for xx in range(xa, xb):
                    out[yy, xx] += gyv * gx[xx - xa]
    return out


@njit(cache=True)
def _eval(p, px, py, cx, cy, data, others, fixed_var, npix, gain, read_var, weighted,
          want_jac, jtj, jtr, free_idx, wts, gx, gy):
    """chi2 at p with weights ``wts`` (recomputed first when ``want_jac``); fills J^T W J for
    the free parameters. The Gaussian is separable: its 1-D factors on the window's columns
    and rows (``gx``, ``gy`` buffers) cost 2 (2R + 1) exponentials instead of one per pixel."""
    x, y, sx, sy, a, b, bx, by = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    nf = free_idx.shape[0]
    r0 = (gx.shape[0] - 1) // 2
    for k in range(gx.shape[0]):
        ex = (cx - r0 + k - x) / sx
        ey = (cy - r0 + k - y) / sy
        gx[k] = np.exp(-0.5 * ex * ex)
        gy[k] = np.exp(-0.5 * ey * ey)
    if want_jac:
        for i in range(N_PARAM):
            jtr[i] = 0.0
            for j in range(N_PARAM):
                jtj[i, j] = 0.0
    chi2 = 0.0
    jac = np.empty(N_PARAM)
    for i in range(npix):
        dx = px[i] - x
        dy = py[i] - y
        g = gx[int(px[i]) - cx + r0] * gy[int(py[i]) - cy + r0]
        ag = a * g
        f = ag + b + bx * (px[i] - cx) + by * (py[i] - cy)
        if want_jac:
            if weighted:
                v = fixed_var[i]
                if v < 0.0:
                    v = gain * max(f + others[i], 0.5 * gain) + read_var
                wts[i] = 1.0 / max(v, 1e-12)
            else:
                wts[i] = 1.0
        r = data[i] - f
        wi = wts[i]
        chi2 += wi * r * r
        if want_jac:
            jac[0] = ag * dx / (sx * sx)
            jac[1] = ag * dy / (sy * sy)
            jac[2] = ag * dx * dx / (sx * sx * sx)
            jac[3] = ag * dy * dy / (sy * sy * sy)
            jac[4] = g
            jac[5] = 1.0
            jac[6] = px[i] - cx
            jac[7] = py[i] - cy
            for mm in range(nf):
                m = free_idx[mm]
                jm = wi * jac[m]
                jtr[m] += jm * r
                for nn in range(mm + 1):
                    jtj[m, free_idx[nn]] += jm * jac[free_idx[nn]]
    if want_jac:
        for mm in range(nf):
            for nn in range(mm):
                jtj[free_idx[nn], free_idx[mm]] = jtj[free_idx[mm], free_idx[nn]]
    return chi2


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
def _fix(jtj, jtr, free):
    """Pin fixed parameters: zero gradient, identity row and column in J^T W J."""
    for i in range(N_PARAM):
        if not free[i]:
            jtr[i] = 0.0
            for j in range(N_PARAM):
                jtj[i, j] = 0.0
                jtj[j, i] = 0.0
            jtj[i, i] = 1.0


@njit(cache=True)
def _cholesky_solve(a, b, n, out):
    """Solve a x = b for symmetric positive definite a (n x n); False if not SPD."""
    low = np.zeros((n, n))
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
    z = np.empty(n)
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


@njit(parallel=True, cache=True)
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
    """
    h, w = image.shape
    n = params.shape[0]
    n_free = N_PARAM
    n_off = dx_off.shape[0]
    n_fit = 0
    for i in range(N_PARAM):
        if free[i]:
            n_fit += 1
    free_idx = np.empty(n_fit, np.int64)
    n_fit = 0
    for i in range(N_PARAM):
        if free[i]:
            free_idx[n_fit] = i
            n_fit += 1
    span = 2 * int(dx_off.max()) + 1
    for k in prange(n):
        px = np.empty(n_off)
        py = np.empty(n_off)
        data = np.empty(n_off)
        others = np.empty(n_off)
        wts = np.empty(n_off)
        fixed_var = np.empty(n_off)
        gx = np.empty(span)
        gy = np.empty(span)
        use_img = var_img.shape[0] == h and var_img.shape[1] == w
        cx, cy = centre[k, 0], centre[k, 1]
        # Own rendered contribution (to add back) uses the parameters the model was drawn with.
        rx, ry, rsx, rsy, ra = (rendered[k, 0], rendered[k, 1], rendered[k, 2], rendered[k, 3],
                                rendered[k, 4])
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
                ex = (xx - rx) / rsx
                ey = (yy - ry) / rsy
                own = ra * np.exp(-0.5 * (ex * ex + ey * ey))
            oth = model[yy, xx] - own
            px[npix] = xx
            py[npix] = yy
            fixed_var[npix] = var_img[yy, xx] if use_img else -1.0
            data[npix] = val - oth
            others[npix] = oth
            npix += 1
        npix_out[k] = npix
        niter_out[k] = 0
        if bad:
            status_out[k] = 1
            continue
        if npix < min_pixels:
            status_out[k] = 2
            continue
        p = params[k].copy()
        for i in range(N_PARAM):
            if not free[i] and not np.isfinite(p[i]):
                p[i] = 0.0
        if not (np.isfinite(p[4]) and np.isfinite(p[5])):
            # Automatic start: background from the outer ring, amplitude from the centre.
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
        jtj = np.zeros((N_PARAM, N_PARAM))
        jtr = np.zeros(N_PARAM)
        lhs = np.zeros((N_PARAM, N_PARAM))
        step = np.zeros(N_PARAM)
        trial = np.empty(N_PARAM)
        x0, y0 = p[0], p[1]
        max_shift = 0.6 * dx_off.max()
        chi2 = _eval(p, px, py, cx, cy, data, others, fixed_var, npix, gain, read_var,
                     weighted, True, jtj, jtr, free_idx, wts, gx, gy)
        _fix(jtj, jtr, free)
        lam = 1e-3
        status = 3
        it = 0
        while it < max_iter:
            it += 1
            for i in range(n_free):
                for j in range(n_free):
                    lhs[i, j] = jtj[i, j]
                lhs[i, i] = jtj[i, i] * (1.0 + lam) + 1e-12
            if not _cholesky_solve(lhs, jtr, n_free, step):
                lam *= 10.0
                if lam > 1e12:
                    status = 4
                    break
                continue
            for i in range(N_PARAM):
                trial[i] = p[i] + (step[i] if i < n_free else 0.0)
            valid = (trial[2] > _MIN_SIGMA_PX and trial[3] > _MIN_SIGMA_PX
                     and trial[2] < max_shift * 2 and trial[3] < max_shift * 2
                     and abs(trial[0] - x0) <= max_shift and abs(trial[1] - y0) <= max_shift)
            new = np.inf
            if valid:
                new = _eval(trial, px, py, cx, cy, data, others, fixed_var, npix, gain,
                            read_var, weighted, False, jtj, jtr, free_idx, wts, gx, gy)
            if new <= chi2:
                small = True
                for i in range(2):
                    if abs(step[i]) > tol:
                        small = False
                done = (chi2 - new) <= tol * chi2 or small
                for i in range(N_PARAM):
                    p[i] = trial[i]
                chi2 = _eval(p, px, py, cx, cy, data, others, fixed_var, npix, gain,
                             read_var, weighted, True, jtj, jtr, free_idx, wts, gx, gy)
                _fix(jtj, jtr, free)
                lam = max(lam * 0.1, 1e-9)
                if done:
                    status = 0
                    break
            else:
                lam *= 10.0
                if lam > 1e12:
                    status = 0  # no step improves chi2: at the minimum to machine precision
                    break
        niter_out[k] = it
        for i in range(N_PARAM):
            params[k, i] = p[i]
        chi2_out[k] = chi2
        inv = np.zeros((N_PARAM, N_PARAM))
        if not _invert_spd(jtj, n_free, inv):
            status = 4
        for i in range(N_PARAM):
            for j in range(N_PARAM):
                cov[k, i, j] = inv[i, j] if (free[i] and free[j]) else 0.0
        status_out[k] = status
        # Excess residual over the noise model in the column core (2 sigma), / amplitude.
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
        resid_out[k] = _residual_frac(ex2, vsum, ncore, p[4])
