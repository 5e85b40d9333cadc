"""One pass of a Levenberg-Marquardt window fit over its pixels (see :mod:`pvq_dask.kernels._lm`).

:func:`evaluate` gives, at trial parameters, the chi2 under the current weights and (for
when the step is accepted) the new weights, chi2 and normal equations of the free
parameters; the common free sets, (x, y, A, B) and (A, B) of the texture mode's rounds and
(x, y, sigma_x, sigma_y, A, B) of a constant background, have specialised passes with
scalar accumulators (same sums, same order).
"""

import numpy as np
from numba import njit

__all__ = ["BOTH", "CHI2_ONLY", "JAC_ONLY", "evaluate", "free_kind"]

CHI2_ONLY, JAC_ONLY, BOTH = 0, 1, 2


@njit(cache=True)
def _eval(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain, read_var,
          weighted, mode, wts_in, wts_out, acc, jtr, free_idx, gx, gy, jac, jf):
    """One pass over the window at parameters ``p``.

    Returns ``(chi2 with the weights wts_in, chi2 with the weights at p)``; the first unless
    ``mode`` is ``JAC_ONLY``, the second (with the weights written to ``wts_out`` and the
    normal equations of the free parameters, the lower triangle of J^T W J and J^T W r, to
    ``acc`` and ``jtr``) unless it is ``CHI2_ONLY``."""
    x, y, sx, sy, a, b, bx, by = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    nf = free_idx.shape[0]
    r0 = (gx.shape[0] - 1) // 2
    for k in range(gx.shape[0]):
        ex = (cx - r0 + k - x) / sx
        ey = (cy - r0 + k - y) / sy
        gx[k] = np.exp(-0.5 * ex * ex)
        gy[k] = np.exp(-0.5 * ey * ey)
    want_jac = mode != CHI2_ONLY
    if want_jac:
        for m in range(nf):
            jtr[m] = 0.0
            for q in range(nf):
                acc[m, q] = 0.0
    isx2, isy2 = 1.0 / (sx * sx), 1.0 / (sy * sy)
    isx3, isy3 = isx2 / sx, isy2 / sy
    chi_in, chi_out = 0.0, 0.0
    for i in range(npix):
        dx = px[i] - x
        dy = py[i] - y
        g = gx[gxi[i]] * gy[gyi[i]]
        ag = a * g
        f = ag + b + bx * (px[i] - cx) + by * (py[i] - cy)
        r = data[i] - f
        if mode != JAC_ONLY:
            chi_in += wts_in[i] * r * r
        if not want_jac:
            continue
        wi = 1.0
        if weighted:
            v = fixed_var[i]
            if v < 0.0:
                v = gain * max(f + others[i], 0.5 * gain) + read_var
            wi = 1.0 / max(v, 1e-12)
        wts_out[i] = wi
        chi_out += wi * r * r
        jac[0] = ag * dx * isx2
        jac[1] = ag * dy * isy2
        jac[2] = ag * dx * dx * isx3
        jac[3] = ag * dy * dy * isy3
        jac[4] = g
        jac[5] = 1.0
        jac[6] = px[i] - cx
        jac[7] = py[i] - cy
        for m in range(nf):
            jf[m] = jac[free_idx[m]]
        for m in range(nf):
            jm = wi * jf[m]
            jtr[m] += jm * r
            for q in range(m + 1):
                acc[m, q] += jm * jf[q]
    return chi_in, chi_out


@njit(cache=True)
def _eval_xyab(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain, read_var,
               weighted, mode, wts_in, wts_out, acc, jtr, with_pos, gx, gy):
    """:func:`_eval` for the free sets (x, y, A, B) and, without ``with_pos``, (A, B) (the
    texture mode's rounds), background slopes zero: the same sums in the same order, in
    scalar accumulators."""
    x, y, sx, sy, a, b = p[0], p[1], p[2], p[3], p[4], p[5]
    r0 = (gx.shape[0] - 1) // 2
    for k in range(gx.shape[0]):
        ex = (cx - r0 + k - x) / sx
        ey = (cy - r0 + k - y) / sy
        gx[k] = np.exp(-0.5 * ex * ex)
        gy[k] = np.exp(-0.5 * ey * ey)
    want_jac = mode != CHI2_ONLY
    isx2, isy2 = 1.0 / (sx * sx), 1.0 / (sy * sy)
    a00 = a10 = a11 = a20 = a21 = a22 = a30 = a31 = a32 = a33 = 0.0
    t0 = t1 = t2 = t3 = 0.0
    chi_in, chi_out = 0.0, 0.0
    for i in range(npix):
        g = gx[gxi[i]] * gy[gyi[i]]
        ag = a * g
        f = ag + b
        r = data[i] - f
        if mode != JAC_ONLY:
            chi_in += wts_in[i] * r * r
        if not want_jac:
            continue
        wi = 1.0
        if weighted:
            v = fixed_var[i]
            if v < 0.0:
                v = gain * max(f + others[i], 0.5 * gain) + read_var
            wi = 1.0 / max(v, 1e-12)
        wts_out[i] = wi
        chi_out += wi * r * r
        jm2 = wi * g
        jm3 = wi * 1.0
        if with_pos:
            j0 = ag * (px[i] - x) * isx2
            j1 = ag * (py[i] - y) * isy2
            jm0 = wi * j0
            jm1 = wi * j1
            t0 += jm0 * r
            a00 += jm0 * j0
            t1 += jm1 * r
            a10 += jm1 * j0
            a11 += jm1 * j1
            a20 += jm2 * j0
            a21 += jm2 * j1
            a30 += jm3 * j0
            a31 += jm3 * j1
        t2 += jm2 * r
        a22 += jm2 * g
        t3 += jm3 * r
        a32 += jm3 * g
        a33 += jm3 * 1.0
    if want_jac:
        if with_pos:
            jtr[0], jtr[1], jtr[2], jtr[3] = t0, t1, t2, t3
            acc[0, 0] = a00
            acc[1, 0], acc[1, 1] = a10, a11
            acc[2, 0], acc[2, 1], acc[2, 2] = a20, a21, a22
            acc[3, 0], acc[3, 1], acc[3, 2], acc[3, 3] = a30, a31, a32, a33
        else:
            jtr[0], jtr[1] = t2, t3
            acc[0, 0] = a22
            acc[1, 0], acc[1, 1] = a32, a33
    return chi_in, chi_out


@njit(cache=True)
def _eval_const(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain, read_var,
                weighted, mode, wts_in, wts_out, acc, jtr, gx, gy):
    """:func:`_eval` for the free set (x, y, sigma_x, sigma_y, A, B) (a constant background,
    the width estimate), background slopes zero: the same sums in the same order, in scalar
    accumulators."""
    x, y, sx, sy, a, b = p[0], p[1], p[2], p[3], p[4], p[5]
    r0 = (gx.shape[0] - 1) // 2
    for k in range(gx.shape[0]):
        ex = (cx - r0 + k - x) / sx
        ey = (cy - r0 + k - y) / sy
        gx[k] = np.exp(-0.5 * ex * ex)
        gy[k] = np.exp(-0.5 * ey * ey)
    want_jac = mode != CHI2_ONLY
    isx2, isy2 = 1.0 / (sx * sx), 1.0 / (sy * sy)
    isx3, isy3 = isx2 / sx, isy2 / sy
    a00 = a10 = a11 = a20 = a21 = a22 = a30 = a31 = a32 = a33 = 0.0
    a40 = a41 = a42 = a43 = a44 = a50 = a51 = a52 = a53 = a54 = a55 = 0.0
    t0 = t1 = t2 = t3 = t4 = t5 = 0.0
    chi_in, chi_out = 0.0, 0.0
    for i in range(npix):
        g = gx[gxi[i]] * gy[gyi[i]]
        ag = a * g
        f = ag + b
        r = data[i] - f
        if mode != JAC_ONLY:
            chi_in += wts_in[i] * r * r
        if not want_jac:
            continue
        wi = 1.0
        if weighted:
            v = fixed_var[i]
            if v < 0.0:
                v = gain * max(f + others[i], 0.5 * gain) + read_var
            wi = 1.0 / max(v, 1e-12)
        wts_out[i] = wi
        chi_out += wi * r * r
        dx = px[i] - x
        dy = py[i] - y
        j0 = ag * dx * isx2
        j1 = ag * dy * isy2
        j2 = ag * dx * dx * isx3
        j3 = ag * dy * dy * isy3
        j4 = g
        j5 = 1.0
        jm0 = wi * j0
        t0 += jm0 * r
        a00 += jm0 * j0
        jm1 = wi * j1
        t1 += jm1 * r
        a10 += jm1 * j0
        a11 += jm1 * j1
        jm2 = wi * j2
        t2 += jm2 * r
        a20 += jm2 * j0
        a21 += jm2 * j1
        a22 += jm2 * j2
        jm3 = wi * j3
        t3 += jm3 * r
        a30 += jm3 * j0
        a31 += jm3 * j1
        a32 += jm3 * j2
        a33 += jm3 * j3
        jm4 = wi * j4
        t4 += jm4 * r
        a40 += jm4 * j0
        a41 += jm4 * j1
        a42 += jm4 * j2
        a43 += jm4 * j3
        a44 += jm4 * j4
        jm5 = wi * j5
        t5 += jm5 * r
        a50 += jm5 * j0
        a51 += jm5 * j1
        a52 += jm5 * j2
        a53 += jm5 * j3
        a54 += jm5 * j4
        a55 += jm5 * j5
    if want_jac:
        jtr[0] = t0
        acc[0, 0] = a00
        jtr[1] = t1
        acc[1, 0] = a10
        acc[1, 1] = a11
        jtr[2] = t2
        acc[2, 0] = a20
        acc[2, 1] = a21
        acc[2, 2] = a22
        jtr[3] = t3
        acc[3, 0] = a30
        acc[3, 1] = a31
        acc[3, 2] = a32
        acc[3, 3] = a33
        jtr[4] = t4
        acc[4, 0] = a40
        acc[4, 1] = a41
        acc[4, 2] = a42
        acc[4, 3] = a43
        acc[4, 4] = a44
        jtr[5] = t5
        acc[5, 0] = a50
        acc[5, 1] = a51
        acc[5, 2] = a52
        acc[5, 3] = a53
        acc[5, 4] = a54
        acc[5, 5] = a55
    return chi_in, chi_out


@njit(cache=True)
def evaluate(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain, read_var,
              weighted, mode, wts_in, wts_out, acc, jtr, free_idx, gx, gy, jac, jf, kind):
    """:func:`_eval`, or its specialisation for ``kind`` 1 (x, y, A, B free), 2 (A, B) and
    3 (x, y, sigma_x, sigma_y, A, B)."""
    if kind == 0 or p[6] != 0.0 or p[7] != 0.0:
        return _eval(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain,
                     read_var, weighted, mode, wts_in, wts_out, acc, jtr, free_idx, gx, gy,
                     jac, jf)
    if kind == 3:
        return _eval_const(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain,
                           read_var, weighted, mode, wts_in, wts_out, acc, jtr, gx, gy)
    return _eval_xyab(p, px, py, gxi, gyi, cx, cy, data, others, fixed_var, npix, gain,
                      read_var, weighted, mode, wts_in, wts_out, acc, jtr, kind == 1, gx, gy)


@njit(cache=True)
def free_kind(free_idx):
    """1 for the free set (x, y, A, B), 2 for (A, B), 3 for (x, y, sigma_x, sigma_y, A, B),
    0 for any other."""
    if free_idx.shape[0] == 4 and free_idx[0] == 0 and free_idx[1] == 1 \
            and free_idx[2] == 4 and free_idx[3] == 5:
        return 1
    if free_idx.shape[0] == 2 and free_idx[0] == 4 and free_idx[1] == 5:
        return 2
    if free_idx.shape[0] == 6:
        for m in range(6):
            if free_idx[m] != m:
                return 0
        return 3
    return 0
