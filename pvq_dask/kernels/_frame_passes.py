"""Frame-wide passes of the texture-aware fit (see :mod:`pvq_dask.kernels._gls`).

Each is one sweep over the pixels instead of a chain of numpy temporaries, in chunks of rows
on the calling thread and numba's other threads (:func:`pvq_dask.kernels._chunks.run_chunks`);
sums are reduced per row (or band of rows) and added in order, so results do not depend on
the thread count.

- :func:`subtract_columns`: the image minus every column, and its sum;
- :func:`render_columns`: the columns alone;
- :func:`white_variance` / :func:`invert_variance`: the pixel variance of the current model,
  then its inverse rescaled to the residual's white level;
- :func:`texture_inputs` / :func:`texture_model`: the normalised-convolution texture
  estimate of the window rounds;
- :func:`scan_line_offsets`: the offset of every scan row, from the pixels between columns.

Arrays named ``resid`` hold the image minus the rendered columns (not minus the mean level),
NaN where the image is not finite.
"""

import numpy as np
from numba import njit
from scipy.ndimage import gaussian_filter1d

from pvq_dask.kernels._chunks import run_chunks

__all__ = ["invert_variance", "render_columns", "scan_line_offsets", "subtract_columns",
           "texture_inputs", "texture_model", "white_variance"]

_BAND = 16              # rows drawn together
_BANDS_PER_CHUNK = 8    # bands per work item of run_chunks
_ROWS_PER_CHUNK = 64    # rows per work item of the plain per-pixel passes


def subtract_columns(image, params, active, n_sigma, out):
    """``out = image - sum of the active columns' Gaussians`` (NaN where the image is not
    finite); returns the sum and count of its finite pixels.

    Drawn band by band of rows (each column out to ``n_sigma`` of its wider width), each
    band summed while in cache."""
    return _draw(image, params, active, n_sigma, out, True)


def render_columns(shape, params, active, n_sigma):
    """Sum of the active columns' Gaussians (rows of ``params``: x, y, sigma_x, sigma_y,
    amplitude, ...), each out to ``n_sigma`` of its wider width: (H, W) float64."""
    out = np.empty(shape)
    _draw(out, params, active, n_sigma, out, False)
    return out


def _draw(image, params, active, n_sigma, out, subtract):
    reach, cyk, order, rmax = _band_index(params, active, float(n_sigma))
    n_band = -(-image.shape[0] // _BAND)
    sums = np.zeros(n_band)
    counts = np.zeros(n_band, np.int64)
    run_chunks(_draw_bands, n_band, _BANDS_PER_CHUNK, image, params, active, reach, cyk,
               order, cyk[order], rmax, out, sums, counts, subtract)
    return float(sums.sum()), int(counts.sum())


@njit(cache=True)
def _band_index(params, active, n_sigma):
    """Reach (px) and centre row of every active column, the columns sorted by row, and
    the largest reach."""
    n = params.shape[0]
    reach = np.zeros(n, np.int64)
    cyk = np.zeros(n, np.int64)
    rmax = 0
    for k in range(n):
        if active[k]:
            reach[k] = int(np.ceil(n_sigma * max(params[k, 2], params[k, 3])))
            cyk[k] = int(np.floor(params[k, 1] + 0.5))
            rmax = max(rmax, reach[k])
    return reach, cyk, np.argsort(cyk), rmax


@njit(cache=True, nogil=True)
def _draw_bands(b0, b1, image, params, active, reach, cyk, order, ys, rmax, out, sums,
                counts, subtract):
    """Bands ``b0`` to ``b1``: ``out = image - columns`` (``subtract``) or ``out = columns``
    (``image`` unused), and the sum and count of the finite values per band."""
    h, w = out.shape
    gx = np.empty(2 * rmax + 1)
    for bi in range(b0, b1):
        y0 = bi * _BAND
        y1 = min(y0 + _BAND, h)
        for yy in range(y0, y1):
            for xx in range(w):
                out[yy, xx] = image[yy, xx] if subtract else 0.0
        lo = np.searchsorted(ys, y0 - rmax)
        hi = np.searchsorted(ys, y1 + rmax, side="right")
        for t in range(lo, hi):
            k = order[t]
            if not active[k]:
                continue
            x, y, sx, sy, a = (params[k, 0], params[k, 1], params[k, 2], params[k, 3],
                               params[k, 4])
            rr = reach[k]
            cx, cy = int(np.floor(x + 0.5)), cyk[k]
            xa, xb = max(cx - rr, 0), min(cx + rr + 1, w)
            for xx in range(xa, xb):
                ex = (xx - x) / sx
                gx[xx - xa] = a * np.exp(-0.5 * ex * ex)
            for yy in range(max(cy - rr, y0), min(cy + rr + 1, y1)):
                ey = (yy - y) / sy
                gyv = np.exp(-0.5 * ey * ey)
                if subtract:
                    for xx in range(xa, xb):
                        out[yy, xx] -= gyv * gx[xx - xa]
                else:
                    for xx in range(xa, xb):
                        out[yy, xx] += gyv * gx[xx - xa]
        total, count = 0.0, 0
        for yy in range(y0, y1):
            for xx in range(w):
                v = out[yy, xx]
                if np.isfinite(v):
                    total += v
                    count += 1
        sums[bi] = total
        counts[bi] = count


def white_variance(image, resid, back_level, back_texture, var_img, gain, read_var, out):
    """Pixel variance of the model ``image - resid + back_level + back_texture`` (columns
    plus the background; ``back_texture`` of shape (1, 1) reads as 0) from the noise model,
    or ``var_img`` where it has the image's shape; written to ``out``, NaN where ``resid``
    is. Returns its mean over the finite pixels."""
    h = image.shape[0]
    sums = np.zeros(h)
    counts = np.zeros(h, np.int64)
    run_chunks(_white_rows, h, _ROWS_PER_CHUNK, image, resid, float(back_level), back_texture,
               var_img, float(gain), float(read_var), out, sums, counts)
    return float(sums.sum()) / max(int(counts.sum()), 1)


@njit(cache=True, nogil=True)
def _white_rows(r0, r1, image, resid, back_level, back_texture, var_img, gain, read_var, out,
                sums, counts):
    h, w = image.shape
    use_img = var_img.shape[0] == h and var_img.shape[1] == w
    use_tex = back_texture.shape[0] == h and back_texture.shape[1] == w
    for yy in range(r0, r1):
        total, count = 0.0, 0
        for xx in range(w):
            r = resid[yy, xx]
            if not np.isfinite(r):
                out[yy, xx] = np.nan
                continue
            if use_img:
                v = var_img[yy, xx]
            else:
                e = image[yy, xx] - r + back_level
                if use_tex:
                    e += back_texture[yy, xx]
                v = gain * max(e, 0.5 * gain) + read_var
            out[yy, xx] = v
            total += v
            count += 1
        sums[yy] = total
        counts[yy] = count


def invert_variance(var, scale, step):
    """In place ``var -> 1 / max(var * scale, 1e-300)`` (NaN stays NaN); returns every
    ``step``-th scaled variance in raster order (NaN where ``var`` is)."""
    h, w = var.shape
    sample = np.empty(-(-h * w // step))
    run_chunks(_invert_rows, h, _ROWS_PER_CHUNK, var, float(scale), int(step), sample)
    return sample


@njit(cache=True, nogil=True)
def _invert_rows(r0, r1, var, scale, step, sample):
    w = var.shape[1]
    for yy in range(r0, r1):
        for xx in range(w):
            i = yy * w + xx
            v = var[yy, xx] * scale
            if i % step == 0:
                sample[i // step] = v
            var[yy, xx] = 1.0 / max(v, 1e-300) if np.isfinite(v) else np.nan


def texture_inputs(resid, level, core, depth):
    """The two inputs of the normalised-convolution texture estimate, in place: ``core``
    (the rendered column cores) becomes the weight ``1 - clip(core / depth, 0, 1)`` (0 where
    ``resid`` is NaN) and the returned array is ``(resid - level) * weight``."""
    out = np.empty(resid.shape)
    run_chunks(_inputs_rows, resid.shape[0], _ROWS_PER_CHUNK, resid, float(level), core,
               float(depth), out)
    return out


@njit(cache=True, nogil=True)
def _inputs_rows(r0, r1, resid, level, core, depth, out):
    w = resid.shape[1]
    for yy in range(r0, r1):
        for xx in range(w):
            r = resid[yy, xx]
            if np.isfinite(r):
                wt = 1.0 - min(max(core[yy, xx] / depth, 0.0), 1.0)
                core[yy, xx] = wt
                out[yy, xx] = (r - level) * wt
            else:
                core[yy, xx] = 0.0
                out[yy, xx] = 0.0


def texture_model(image, resid, level, num, den, floor, out):
    """Columns plus background, in place of ``resid``'s pixels: ``image - resid + level +
    num / max(den, floor)`` (the background is NaN-free: 0 texture where the image is not
    finite, where the model is never read)."""
    run_chunks(_model_rows, image.shape[0], _ROWS_PER_CHUNK, image, resid, float(level), num,
               den, float(floor), out)


@njit(cache=True, nogil=True)
def _model_rows(r0, r1, image, resid, level, num, den, floor, out):
    w = image.shape[1]
    for yy in range(r0, r1):
        for xx in range(w):
            r = resid[yy, xx]
            smooth = num[yy, xx] / max(den[yy, xx], floor)
            out[yy, xx] = (image[yy, xx] - r + level + smooth) if np.isfinite(r) else smooth


def scan_line_offsets(image, resid, level, texture, rows, column_max, smooth_px):
    """Offset of every scan row (image row) in ``resid - level - texture``.

    STEM frames carry a random offset per scan line (the streak on the k_x = 0 axis of their
    spectrum), independent from row to row: neither shot noise nor the isotropic texture.
    ``resid`` is the image minus the columns minus the current ``rows`` offsets; only pixels
    where the columns' model is below ``column_max`` count (a column's misfit is not a row
    offset), and their mean is the row's offset (0 for rows with fewer than 16 such pixels).
    What varies slowly from row to row (over ``smooth_px``, Gaussian) is left to the texture
    model: it is what an imperfect texture estimate leaves along the rows."""
    out = np.zeros(resid.shape[0])
    run_chunks(_row_means, resid.shape[0], _ROWS_PER_CHUNK, image, resid, float(level),
               texture, rows, float(column_max), out)
    return out - gaussian_filter1d(out, smooth_px, mode="nearest")


@njit(cache=True, nogil=True)
def _row_means(r0, r1, image, resid, level, texture, rows, column_max, out):
    w = resid.shape[1]
    for y in range(r0, r1):
        total, n = 0.0, 0
        for x in range(w):
            r = resid[y, x]
            if not np.isfinite(r) or image[y, x] - r - rows[y] > column_max:
                continue
            total += r - level - texture[y, x]
            n += 1
        if n >= 16:
            out[y] = total / n
