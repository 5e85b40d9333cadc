"""Texture-aware refinement of the column fit (stage 2 of :mod:`pvq_dask.kernels.fit`).

Amorphous carbon under and around the columns is a smooth random texture whose power overlaps
the columns' own spatial frequencies. Its power spectrum is estimated from the residual (image
minus all columns) and the generalised least-squares objective ``r^T (V + C)^-1 r`` (V: shot
+ read noise, C: texture covariance) is minimised by Gauss-Newton steps over all columns, the
inverse covariance applied with FFTs and the per-column Hessian from the spectral factors of
:class:`~pvq_dask.kernels.crlb.TextureSpectrum` (kernels in :mod:`pvq_dask.kernels._gls_kernels`
and :mod:`pvq_dask.kernels._frame_passes`).
"""

import warnings

import numpy as np

from pvq_dask.kernels._fit import N_PARAM
from pvq_dask.kernels._frame_passes import (
    invert_variance,
    render_columns,
    scan_line_offsets,
    subtract_columns,
    texture_inputs,
    white_variance,
)
from pvq_dask.kernels._frame_passes import texture_model as texture_model_into
from pvq_dask.kernels._gls_kernels import core_residual, gls_newton
from pvq_dask.kernels.crlb import estimate_texture_spectrum

__all__ = ["full_params", "gls_refine", "median_width", "rough_amplitude", "texture_model"]

RENDER_N_SIGMA = 4.0
MAX_SIGMA_RATIO = 2.0         # widths beyond this factor of the frame median are not columns
_CORE_DEPTH = 0.3             # column-core mask of the first texture estimate (g > 0.3)
_GLS_MAX_STEP_PX = 0.5        # trust region of one Gauss-Newton position step
_GLS_TOL_PX = 1e-4            # stop when no position moves more than this
_GLS_SPECTRUM_AT = (0, 1, 3)  # iterations that re-estimate the texture spectrum
_RELAX = 0.75
_SIGMA_PRIOR_FRAC = 0.10      # width prior of the GLS stage, relative to the frame median
_SAMPLE_STEP = 16             # pixel subsampling for frame-wide quantiles
_N_TEMPLATES = 6              # white-noise levels of the per-column GLS Fisher templates
_ROW_COLUMN_FRAC = 0.1        # scan-line offsets from pixels where columns are below this
_ROW_SMOOTH_SIGMAS = 2.0      # row offsets smoother than this (column widths) are texture


def median_width(params, mask, default):
    """Median column width sqrt(sigma_x sigma_y) over ``mask`` (``default`` if none)."""
    w = np.sqrt(np.abs(params[mask, 2] * params[mask, 3]))
    w = w[np.isfinite(w)]
    return float(np.median(w)) if len(w) else float(default)


def full_params(p5):
    """(n, 5) parameters -> (n, N_PARAM) with zero background terms."""
    full = np.zeros((len(p5), N_PARAM))
    full[:, :5] = p5
    return full


def gls_refine(fr, params, active, n_iter, frozen=None, previous=None):
    """Gauss-Newton on the texture-aware GLS objective (see the module docstring).

    ``frozen`` columns are part of the model (so their signal is not taken for texture)
    but are not refined. ``previous`` (a texture spectrum of the same frame, e.g. from
    :func:`texture_model`) only speeds up the first spectrum estimate. Returns the
    parameters (n, 5), the inverse GLS Hessians (n, 5, 5), the still-active columns, the
    background (level + texture) at each column's pixel, the core residual fractions, the
    number of steps taken and the last texture spectrum."""
    frozen = np.zeros(len(params), bool) if frozen is None else frozen & ~active
    image = fr.image
    gain, read_var = float(fr.noise.gain), float(fr.noise.read_var)
    p = params[:, :5].copy()
    active = active.copy()
    sig_med = median_width(p, active, 1.0)
    hinv = np.full((len(p), 5, 5), np.nan)
    resid = np.empty(image.shape)
    vinv = np.empty(image.shape)     # white variance of the model, then its inverse
    no_texture = np.zeros((1, 1), np.float32)
    spectrum, texture, templates, back_level, n_done = None, None, None, None, 0
    rows = np.zeros(image.shape[0])  # scan-line offsets (one per scan row)
    for it in range(n_iter):
        total, count = subtract_columns(image, full_params(p), active | frozen, RENDER_N_SIGMA,
                                        resid)
        level = total / max(count, 1)
        resid -= rows[:, None]
        if spectrum is None or it in _GLS_SPECTRUM_AT:
            # Weights from the model (columns + background), never from the noisy pixels.
            mean_var = white_variance(image, resid, level if back_level is None else back_level,
                                      no_texture if texture is None else texture,
                                      fr.var_img, gain, read_var, vinv)
            hint = previous if spectrum is None else spectrum
            spectrum = estimate_texture_spectrum(resid, previous=hint, single=True)
            # One white level for filter, weights and templates: the noise model's shape,
            # the residual's own high-frequency level.
            sample = invert_variance(vinv, spectrum.white_power / max(mean_var, 1e-300),
                                     _SAMPLE_STEP)
            sample = sample[np.isfinite(sample)]
            levels = np.geomspace(*np.quantile(sample, [0.01, 0.999]) + [0, 1e-9],
                                  _N_TEMPLATES)
            templates = spectrum.column_fisher_levels(sig_med, levels)
        texture = spectrum.wiener(resid, offset=level)
        new = scan_line_offsets(image, resid, level, texture, rows,
                                _ROW_COLUMN_FRAC * np.median(p[active | frozen, 4]),
                                _ROW_SMOOTH_SIGMAS * sig_med)
        resid -= new[:, None]
        rows += new
        back_level = level
        step = np.zeros((len(p), 5))
        gls_newton(resid, level, texture, vinv, p, active, fr.radius, templates, levels,
                   sig_med, _SIGMA_PRIOR_FRAC * sig_med, step, hinv)
        step[:, :2] = np.clip(step[:, :2], -_GLS_MAX_STEP_PX, _GLS_MAX_STEP_PX)
        step[:, 2:4] = np.clip(step[:, 2:4], -0.2 * p[:, 2:4], 0.2 * p[:, 2:4])
        step[:, 4] = np.maximum(step[:, 4], -0.5 * p[:, 4])
        p[active] += _RELAX * step[active]
        n_done = it + 1
        width = np.sqrt(np.abs(p[:, 2] * p[:, 3]))
        active &= ((p[:, 4] > 0) & np.isfinite(hinv[:, 0, 0])
                   & (width < MAX_SIGMA_RATIO * sig_med) & (width > sig_med / MAX_SIGMA_RATIO))
        if np.abs(step[active, :2]).max(initial=0.0) < _GLS_TOL_PX:
            break
    frac = core_residual(image, resid, level, texture, fr.var_img, gain, read_var,
                         full_params(p), active)
    h, w = image.shape
    ij = np.clip(np.rint(p[:, :2]).astype(np.int64), 0, np.array([w - 1, h - 1]))
    back = level + texture[ij[:, 1], ij[:, 0]].astype(np.float64) + rows[ij[:, 1]]
    return p, hinv, active, back, frac, n_done, spectrum


def texture_model(image, rendered, active, sigma, xy, previous=None):
    """Columns plus background (level + Wiener texture) under the column model ``rendered``
    (rows of active columns), the texture interpolated into the column cores from around
    them (normalised convolution): a misplaced column's misfit sits in its core and must
    not be taken for background. Returns the model and the texture spectrum."""
    resid = np.empty(image.shape)
    total, count = subtract_columns(image, rendered, active, RENDER_N_SIGMA, resid)
    level = total / max(count, 1)
    spectrum = estimate_texture_spectrum(resid, previous=previous, single=True)
    core = np.zeros((len(xy), N_PARAM))
    core[:, :2] = xy
    core[:, 2:4] = sigma
    core[:, 4] = 1.0
    weight = render_columns(image.shape, core, np.ones(len(xy), np.bool_), 3.0)
    num = texture_inputs(resid, level, weight, _CORE_DEPTH)
    texture_model_into(image, resid, level, spectrum.wiener(num), spectrum.wiener(weight), 0.05,
                       resid)
    return resid, spectrum


def rough_amplitude(image, xy, sigma):
    """Peak over the local background from finite pixels only (for columns that cannot be
    fitted but whose signal must stay in the model)."""
    if len(xy) == 0:
        return np.zeros(0)
    r_in, r_out = 1.0, 3.5 * sigma
    d = np.arange(-int(np.ceil(r_out)), int(np.ceil(r_out)) + 1)
    oy, ox = [a.ravel() for a in np.meshgrid(d, d, indexing="ij")]
    dist = np.hypot(ox, oy)
    h, w = image.shape
    px = np.clip(np.rint(xy[:, :1]).astype(np.int64) + ox, 0, w - 1)
    py = np.clip(np.rint(xy[:, 1:]).astype(np.int64) + oy, 0, h - 1)
    vals = image[py, px]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        peak = np.nanmean(np.where(dist <= r_in, vals, np.nan), axis=1)
        ring = np.nanmedian(np.where(dist >= r_out - 1.0, vals, np.nan), axis=1)
    return np.nan_to_num(np.clip(peak - ring, 0.0, None))
