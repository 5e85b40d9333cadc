"""Periodogram of a residual reduced to per-ring medians (:mod:`pvq_dask.kernels._texture`).

The rings are annuli of radial frequency; every shape-dependent grid (Hann window, ring of
every frequency, white plateau) is cached. Medians are exact (equal to ``np.median``) but
found fast: one counting pass keeps the values within a bracket around the median (from an
earlier estimate's medians, or from a regular subsample's order statistics) and the rank is
selected among those; a bracket that misses falls back to a full selection.
"""

import functools

import numpy as np
from numba import njit

from pvq_dask.kernels._chunks import run_chunks

__all__ = ["radial_k", "ring_medians", "rings", "windowed"]

_WHITE_FROM_K = 0.75 * np.pi  # the white plateau: columns of width >= 1 px carry no power
_HINT_WIDTH = 0.2             # selections look within this relative distance of a hint first
_SUBSAMPLE = 8                # without a hint, the bracket comes from every 8th value
_ROWS_PER_CHUNK = 64          # rows per work item of run_chunks


@functools.lru_cache(maxsize=8)
def radial_k(shape):
    ky = np.fft.fftfreq(shape[0]) * 2 * np.pi
    kx = np.fft.rfftfreq(shape[1]) * 2 * np.pi
    return np.hypot(ky[:, None], kx[None, :])


@functools.lru_cache(maxsize=8)
def rings(shape):
    """Hann window, ring index of every rfft2 frequency, ring starts, white-plateau mask."""
    win = np.outer(np.hanning(shape[0]), np.hanning(shape[1]))
    kr = radial_k(shape)
    dk = 2 * np.pi / min(shape) * 2.0
    nbin = int(np.ceil(np.pi / dk))
    which = np.minimum((kr / dk).astype(np.int64), nbin)
    starts = np.r_[0, np.cumsum(np.bincount(which.ravel(), minlength=nbin + 1))]
    white = kr > _WHITE_FROM_K
    return win, dk, nbin, which, starts, white, int(white.sum())


def windowed(r, mask, win, out):
    """``out = (r - mean) * win`` over the usable pixels (finite, and in ``mask`` unless it
    is (1, 1)), 0 elsewhere; returns the sum of win^2 and the mean of (r - mean)^2 over
    them, and their count (the mean is over the usable pixels). Chunks of rows on several
    threads, sums reduced per row."""
    h = r.shape[0]
    sums = np.zeros((3, h))
    counts = np.zeros(h, np.int64)
    run_chunks(_sum_rows, h, _ROWS_PER_CHUNK, r, mask, sums, counts)
    count = int(counts.sum())
    mean = float(sums[0].sum()) / max(count, 1)
    run_chunks(_taper_rows, h, _ROWS_PER_CHUNK, r, mask, win, mean, out, sums)
    return float(sums[1].sum()), float(sums[2].sum()) / max(count, 1), count


@njit(cache=True, nogil=True)
def _sum_rows(r0, r1, r, mask, sums, counts):
    h, w = r.shape
    use_mask = mask.shape[0] == h and mask.shape[1] == w
    for i in range(r0, r1):
        total, count = 0.0, 0
        for j in range(w):
            v = r[i, j]
            if np.isfinite(v) and (not use_mask or mask[i, j]):
                total += v
                count += 1
        sums[0, i] = total
        counts[i] = count


@njit(cache=True, nogil=True)
def _taper_rows(r0, r1, r, mask, win, mean, out, sums):
    h, w = r.shape
    use_mask = mask.shape[0] == h and mask.shape[1] == w
    for i in range(r0, r1):
        w2, sq = 0.0, 0.0
        for j in range(w):
            v = r[i, j]
            out[i, j] = 0.0
            if np.isfinite(v) and (not use_mask or mask[i, j]):
                d = v - mean
                out[i, j] = d * win[i, j]
                w2 += win[i, j] * win[i, j]
                sq += d * d
        sums[1, i] = w2
        sums[2, i] = sq


@njit(cache=True)
def ring_medians(spec, scale, which, starts, nbin, white, n_white, hints):
    """Median periodogram value ``|spec|^2 * scale`` in each ring ``< nbin`` (0 if empty)
    and over the ``white`` frequencies: a counting sort into rings, then a selection per
    ring, seeded by ``hints`` (nbin + 1 earlier medians) when given (length 0: none)."""
    pos = starts.copy()
    buf = np.empty(starts[nbin] + n_white)
    nw = starts[nbin]
    h, w = spec.shape
    for i in range(h):
        for j in range(w):
            c = spec[i, j]
            re, im = np.float64(c.real), np.float64(c.imag)
            pw = (re * re + im * im) * scale
            b = which[i, j]
            if b < nbin:
                buf[pos[b]] = pw
                pos[b] += 1
            if white[i, j]:
                buf[nw] = pw
                nw += 1
    scratch = np.empty(max(n_white, np.max(starts[1:] - starts[:-1])) + 1)
    out = np.zeros(nbin + 1)
    for b in range(nbin + 1):
        lo, hi = (starts[b], starts[b + 1]) if b < nbin else (starts[nbin], nw)
        if hi > lo:
            hint = hints[b] if hints.shape[0] == nbin + 1 else np.nan
            out[b] = _median_near(buf[lo:hi], hint, scratch)
        elif b == nbin:
            out[b] = np.nan
    return out


@njit(cache=True)
def _median_near(values, hint, scratch):
    """``np.median(values)``, found among the values within 20 % of ``hint`` when the
    median is there (one counting pass and a selection on a few percent of the values),
    else by a full selection. Without a hint (``hint`` not > 0) the bracket comes from a
    regular subsample: its order statistics 4 sigma either side of its median."""
    n = values.shape[0]
    if n < 64:
        return np.median(values)
    if hint > 0.0:
        lo, hi = hint * (1.0 - _HINT_WIDTH), hint * (1.0 + _HINT_WIDTH)
    else:
        m = n // _SUBSAMPLE
        for i in range(m):
            scratch[i] = values[i * _SUBSAMPLE]
        half = 2.0 * np.sqrt(m)
        lo = _quickselect(scratch, m, max(int(0.5 * m - half), 0))
        hi = _quickselect(scratch, m, min(int(0.5 * m + half), m - 1))
    k1, k2 = (n - 1) // 2, n // 2
    below, m = 0, 0
    for i in range(n):      # branch-free: write every value, advance only past kept ones
        v = values[i]
        below += v < lo
        scratch[m] = v
        m += (v >= lo) & (v <= hi)
    if not (below <= k1 and k2 < below + m):
        return np.median(values)
    k = k1 - below
    a = _quickselect(scratch, m, k)
    if k2 == k1:
        return a
    b = np.inf
    for i in range(k + 1, m):
        b = min(b, scratch[i])
    return (a + b) / 2.0


@njit(cache=True)
def _quickselect(a, m, k):
    """In place: a[k] becomes the k-th smallest of a[:m] (everything after it is >= a[k])."""
    lo, hi = 0, m - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
        if x > y:
            y = x
        i, j = lo, hi
        while i <= j:
            while a[i] < y:
                i += 1
            while a[j] > y:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]
