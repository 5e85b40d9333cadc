"""Batched 2D Gaussian fit of every atom column, with covariances.

Column model: an axis-aligned elliptical Gaussian. Axis-aligned, not rotated: in the [001]
projection a column is round; what stretches it in practice is the scan (drift, fast/slow-axis
distortion), which acts along the image axes, and a free rotation is undefined for round
columns (the fit wanders).

Two stages, both over all columns at once:

1. **Windows** (numba, one Levenberg-Marquardt fit per column in a disc of ``window_px``,
   tolerance ``tol``): position, amplitude and a local constant (or planar) background, with
   the current model of every other column subtracted from the window (``n_rounds`` rounds).
   Pixels are weighted by the inverse model variance of the noise model, recomputed at every
   accepted step (the Poisson quasi-likelihood fixed point). The paper's rule is kept: a fit
   whose core residual beyond the noise exceeds ``reject_residual_frac`` (8 %) of its peak is
   refitted from a perturbed start, seeded by ``rng``.
2. **Texture-aware refinement** (``background="texture"``, the default): amorphous carbon
   under and around the columns is a smooth random texture whose power overlaps the
   columns' own spatial frequencies; at the paper's dose it displaces halide positions by
   several times their shot-noise bound if it is modelled as a local constant. We estimate its
   power spectrum from the residual (image minus all columns) and minimise the generalised
   least-squares objective ``r^T (V + C)^-1 r`` (V: shot + read noise, C: texture covariance)
   by Gauss-Newton steps over all columns, the inverse covariance applied with FFTs and the
   per-column Hessian from the spectral factors of :class:`~pvq_dask.kernels.crlb.TextureSpectrum`.
   The covariance of every column is that GLS Hessian's inverse, so ``pos_err_px`` includes
   the texture's contribution and ``(fitted - true) / pos_err`` has unit spread
   (:mod:`pvq_dask.kernels._gls`).

Both stages see only the columns' bounding box plus a margin (two window radii and the
texture filter's support), not the whole frame. The per-column kernels and the frame-wide
passes run in chunks on the calling thread and numba's other threads
(:mod:`pvq_dask.kernels._chunks`); results do not depend on the thread count.
"""


import numpy as np
from scipy.spatial import cKDTree

from pvq_dask.kernels._fit import (
    N_PARAM,
    STATUS,
    crop_box,
    pack_windows,
    window_offsets,
)
from pvq_dask.kernels._frame_passes import render_columns
from pvq_dask.kernels._gls import MAX_SIGMA_RATIO as _MAX_SIGMA_RATIO
from pvq_dask.kernels._gls import RENDER_N_SIGMA as _RENDER_N_SIGMA
from pvq_dask.kernels._gls import gls_refine, median_width, rough_amplitude, texture_model
from pvq_dask.kernels._lm import finite_stats, fit_windows
from pvq_dask.kernels.crlb import NoiseModel, estimate_noise_model

__all__ = ["fit_columns", "FIT_KEYS"]

#: Keys of the dict returned by :func:`fit_columns` (arrays of length n, ``cov`` (n, 2, 2)).
FIT_KEYS = ("x_px", "y_px", "sigma_x_px", "sigma_y_px", "amplitude", "background",
            "x_err_px", "y_err_px", "pos_err_px", "cov", "fit_ok", "n_iter", "residual_frac",
            "chi2_red", "status")

_WINDOW_N_SIGMA = 3.0
_SIGMA_FROM_SPACING = 0.13    # first guess of the column width from the nearest-neighbour gap
_OK_SIGMA_RATIO = 1.35        # widths beyond this factor of the median: not a clean fit
_LOST_MOVE = 0.2              # a rejected fit this far (x window radius) from its start is lost
_RESID_OUTLIER = 3.0          # residual rule relative to the frame's median column residual
_MIN_PIXEL_FRAC = 0.5         # windows cut by the frame edge keep at least this pixel fraction
_NOISE_FLOOR = 1e-6           # noise variance below this fraction of the image's: noise-free
_GLS_ITER = 4                 # Gauss-Newton iterations (measured: more do not help noisy data)
_GLS_ITER_NOISE_FREE = 20
# Crop margin: two window radii (room to move) and the Wiener filter's support (its reflect
# pad); the crop is at least _MIN_CROP_PX a side (the texture spectrum needs the area).
_TEXTURE_SUPPORT_PX = 32
_MIN_CROP_PX = 256
_FREE = {"constant": (1, 1, 1, 1, 1, 1, 0, 0), "plane": (1, 1, 1, 1, 1, 1, 1, 1),
         "texture": (1, 1, 0, 0, 1, 1, 0, 0)}
_AMPLITUDE_ONLY = np.array((0, 0, 0, 0, 1, 1, 0, 0), dtype=np.bool_)


def _empty_result(n=0):
    out = {k: np.full(n, np.nan) for k in FIT_KEYS}
    out["cov"] = np.full((n, 2, 2), np.nan)
    out["fit_ok"] = np.zeros(n, dtype=bool)
    out["n_iter"] = np.zeros(n, dtype=np.int64)
    out["status"] = np.full(n, STATUS["skipped"], dtype=np.int64)
    return out


def _check_inputs(image, xy0, noise_std):
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    xy0 = np.asarray(xy0, dtype=np.float64)
    if xy0.size == 0:
        xy0 = xy0.reshape(0, 2)
    if xy0.ndim != 2 or xy0.shape[1] != 2:
        raise ValueError(f"xy0 must have shape (n, 2) of (x, y) px, got {xy0.shape}")
    if not np.all(np.isfinite(xy0)):
        raise ValueError("xy0 contains NaN or infinite positions")
    var_img = np.zeros((1, 1))
    if noise_std is not None:
        std = np.asarray(noise_std, dtype=np.float64)
        if std.shape != image.shape:
            raise ValueError(f"noise_std must have the image's shape {image.shape}, got "
                             f"{std.shape}")
        var_img = np.where(np.isfinite(std) & (std > 0), std**2, np.nan)
        if not np.isfinite(var_img).any():
            raise ValueError("noise_std has no finite positive value")
        var_img = np.where(np.isfinite(var_img), var_img, np.nanmax(var_img))
    return np.ascontiguousarray(image), xy0, np.ascontiguousarray(var_img)


class _Frame:
    """What every stage needs: image, noise, weights, window geometry."""

    def __init__(self, image, noise, var_img, radius, free, weighted, tol, max_iter):
        self.image, self.noise, self.var_img = image, noise, var_img
        self.radius = radius
        self.offsets = window_offsets(radius)
        self.min_pixels = int(_MIN_PIXEL_FRAC * len(self.offsets[0]))
        self.free = np.asarray(free, dtype=np.bool_)
        self.weighted, self.tol, self.max_iter = weighted, tol, max_iter
        self.spectrum = None   # the latest texture spectrum (seeds the next estimate)

    def run(self, model, params, rendered, centre):
        n = len(params)
        out = {"cov": np.zeros((n, N_PARAM, N_PARAM)), "chi2": np.zeros(n),
               "npix": np.zeros(n, np.int64), "niter": np.zeros(n, np.int64),
               "status": np.zeros(n, np.int64), "resid": np.zeros(n)}
        fit_windows(self.image, model, self.var_img, params, rendered, centre,
                    self.offsets[0], self.offsets[1], self.free, float(self.noise.gain),
                    float(self.noise.read_var), self.weighted, float(self.tol),
                    int(self.max_iter), self.min_pixels, out["cov"], out["chi2"], out["npix"],
                    out["niter"], out["status"], out["resid"])
        out["dof"] = np.maximum(out["npix"] - self.free.sum(), 1)
        return out


def _sane(params, res, sigma_ref):
    width = np.sqrt(np.abs(params[:, 2] * params[:, 3]))
    with np.errstate(invalid="ignore"):
        return (np.all(np.isfinite(params), axis=1) & (res["status"] == STATUS["ok"])
                & (params[:, 4] > 0) & (width < _MAX_SIGMA_RATIO * sigma_ref)
                & (width > sigma_ref / _MAX_SIGMA_RATIO))


def _start(xy0, sigma0):
    params = np.zeros((len(xy0), N_PARAM))
    params[:, :2] = xy0
    params[:, 2:4] = sigma0
    params[:, 4:6] = np.nan  # automatic amplitude/background start inside the kernel
    return params


def _window_rounds(fr, xy0, sigma0, n_rounds, texture=False):
    """LM rounds; from the second on, every other sane column's model is subtracted (and,
    with ``texture``, a Wiener estimate of the background texture).

    With ``texture`` an extra first round fits amplitudes and backgrounds only, at the
    starting positions: moving columns before the texture is known drags them onto carbon
    grains (measured: worse than the start)."""
    params = _start(xy0, sigma0)
    centre = np.rint(xy0).astype(np.int64)
    rendered = np.zeros_like(params)
    model = np.zeros(fr.image.shape)
    res = None
    free = fr.free
    for r in range(n_rounds + (1 if texture else 0)):
        if texture:
            fr.free = _AMPLITUDE_ONLY if r == 0 else free
        if r:
            active = _sane(params, res, median_width(params, res["status"] == 0, sigma0))
            rendered = np.where(active[:, None], params, 0.0)
            if texture:
                model, fr.spectrum = texture_model(fr.image, rendered, active, sigma0,
                                                   params[:, :2], fr.spectrum)
                params[active, 4:6] = np.nan  # restart amplitude/background on new data
            else:
                model = render_columns(fr.image.shape, rendered, active, _RENDER_N_SIGMA)
            near = active & np.all(np.abs(params[:, :2] - centre) < 0.5 * fr.radius, axis=1)
            centre[near] = np.rint(params[near, :2]).astype(np.int64)
            params[~active] = _start(xy0[~active], sigma0)
        res = fr.run(model, params, rendered, centre)
    fr.free = free
    return params, res, centre, model, rendered


def _reinitialise(fr, params, res, xy0, sigma0, centre, model, rendered, reject, max_reinit,
                  reinit_px, rng):
    """The paper's rule: refit columns whose core residual exceeds ``reject`` of the peak."""
    sigma_ref = median_width(params, res["status"] == 0, sigma0)
    ok = _sane(params, res, sigma_ref) & (res["resid"] <= reject)
    retry = np.nonzero(~ok & ~np.isin(res["status"], (STATUS["nan"], STATUS["few_pixels"])))[0]
    for _ in range(max_reinit):
        if len(retry) == 0:
            break
        trial = _start(xy0[retry] + reinit_px * rng.standard_normal((len(retry), 2)), sigma0)
        again = fr.run(model, trial, rendered[retry], centre[retry])
        better = (again["status"] == STATUS["ok"]) & (
            (again["resid"] <= reject) | (again["chi2"] < res["chi2"][retry]))
        idx = retry[better]
        params[idx] = trial[better]
        for key in res:
            res[key][idx] = again[key][better]
        ok = _sane(params, res, sigma_ref) & (res["resid"] <= reject)
        retry = retry[~ok[retry]]


def _first_sigma(image, xy0, sigma_px, fr_args):
    """Column width: given, else the median width of a quick fit of the brightest starts."""
    if sigma_px is not None:
        if not sigma_px > 0:
            raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
        return float(sigma_px)
    guess = 2.0
    if len(xy0) >= 2:
        gap = float(np.median(cKDTree(xy0).query(xy0, k=2)[0][:, 1]))
        guess = float(np.clip(_SIGMA_FROM_SPACING * gap, 0.8, 20.0))
    ij = np.clip(np.rint(xy0).astype(np.int64), 0, np.array(image.shape[::-1]) - 1)
    peak = np.nan_to_num(image[ij[:, 1], ij[:, 0]], nan=-np.inf)
    pick = np.argsort(-peak)[:200]
    fr = _Frame(image, *fr_args[:2], _WINDOW_N_SIGMA * guess, _FREE["constant"], *fr_args[2:])
    params, res, *_ = _window_rounds(fr, xy0[pick], guess, 1)
    return float(np.clip(median_width(params, res["status"] == 0, guess), 0.5, 20.0))


def fit_columns(image, xy0, *, sigma_px=None, window_px=None, background="texture",
                noise=None, noise_std=None, weighted=True, n_rounds=1, n_gls_iter=None,
                tol=1e-6, max_iter=100, reject_residual_frac=0.08, max_reinit=3,
                reinit_px=1.0, rng=None, backend="numba"):
    """Fit a 2D Gaussian to every column at once; positions with covariances.

    Parameters
    ----------
    image : ndarray (H, W)
        The frame (NaN pixels allowed: columns whose window touches one are flagged).
    xy0 : ndarray (n, 2)
        Starting positions (x, y) in px, e.g. from :func:`pvq_dask.kernels.peaks.refine_com`.
    sigma_px : float, optional
        Starting column width; estimated from the brightest columns when omitted.
    window_px : float, optional
        Radius of each column's pixel disc; default ``3 * sigma``.
    background : {"texture", "constant", "plane"}
        ``"texture"``: window fits of position and amplitude, then the texture-aware GLS
        refinement of position, widths and amplitude (module docstring). ``"constant"`` /
        ``"plane"``: classic independent window fits of all parameters with a local constant
        or planar background (the paper's method).
    noise : NoiseModel, optional
        Pixel-variance model; estimated from ``image`` when omitted (pass the one detection
        used, :func:`~pvq_dask.kernels.crlb.estimate_noise_model` of the same image, to
        estimate it once).
    noise_std : ndarray (H, W), optional
        Per-pixel noise standard deviation (e.g. a denoiser's Monte-Carlo std); replaces
        the noise model in the weights and covariances.
    weighted : bool
        Weight pixels by the inverse variance (True) or equally (plain least squares).
    n_rounds : int
        Window-fit rounds; from the second on, neighbours' models are subtracted.
    n_gls_iter : int, optional
        Maximum Gauss-Newton iterations of the texture-aware refinement (it stops earlier
        once no column moves by 1e-4 px); default 4, or 20 for noise-free input, where the
        texture dominates every frequency and convergence is slower.
    tol : float
        Levenberg-Marquardt tolerance (relative chi2 change, or position step in px).
    max_iter : int
        Iteration cap per window fit.
    reject_residual_frac : float
        The paper's rejection threshold (core residual beyond noise / peak amplitude); on a
        frame whose median column residual is higher (a denoised or filtered frame), a
        column is rejected beyond 3x that median instead.
    max_reinit : int
        Refits from a perturbed start for rejected fits.
    reinit_px : float
        Standard deviation of the start perturbation, px.
    rng : numpy.random.Generator or int, optional
        Seeds the perturbations.
    backend : {"numba", "atomap"}
        ``"atomap"`` runs Atomap's own refinement on the same starts (optional ``interop``
        extra; see :mod:`pvq_dask.kernels._atomap_backend`).

    Returns
    -------
    dict of ndarray
        Keys :data:`FIT_KEYS`: ``x_px, y_px, sigma_x_px, sigma_y_px, amplitude, background``
        (local background level under the column); ``x_err_px, y_err_px`` and
        ``pos_err_px = sqrt((var_x + var_y) / 2)``; ``cov`` (n, 2, 2) position covariance in
        px^2; ``fit_ok``; ``n_iter`` (window-fit iterations); ``residual_frac``; ``chi2_red``
        (of the window fit); ``status`` (codes of ``pvq_dask.kernels._fit.STATUS``). Columns
        that could not be fitted keep their start position, NaN elsewhere, ``fit_ok`` False.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:32, 0:32]
    >>> img = 5.0 + 20.0 * np.exp(-((xx - 15.3) ** 2 + (yy - 16.6) ** 2) / (2 * 2.0 ** 2))
    >>> r = fit_columns(img, [[15.0, 17.0]], sigma_px=2.0, background="constant",
    ...                 noise=NoiseModel(0.0, 1.0))
    >>> round(float(r["x_px"][0]), 4), round(float(r["y_px"][0]), 4), bool(r["fit_ok"][0])
    (15.3, 16.6, True)
    """
    image, xy0, var_img = _check_inputs(image, xy0, noise_std)
    if background not in _FREE:
        raise ValueError(f"background must be one of {sorted(_FREE)}, got {background!r}")
    if backend == "atomap":
        from pvq_dask.kernels._atomap_backend import fit_columns_atomap

        return fit_columns_atomap(image, xy0, sigma_px=sigma_px)
    if backend != "numba":
        raise ValueError(f"backend must be 'numba' or 'atomap', got {backend!r}")
    if n_rounds < (0 if background == "texture" else 1):
        raise ValueError(f"n_rounds must be >= 1 (>= 0 with texture), got {n_rounds}")
    n = len(xy0)
    n_finite, lo, hi, mean, var = finite_stats(image)
    if n == 0 or n_finite == 0 or hi == lo:
        out = _empty_result(n)  # nothing to fit (no pixels, or a constant image)
        out["x_px"], out["y_px"] = xy0[:, 0].copy(), xy0[:, 1].copy()
        return out
    rng = np.random.default_rng(rng)
    if noise is None:
        try:
            noise = estimate_noise_model(image)
        except ValueError:
            noise = NoiseModel(gain=0.0, read_var=1.0)
    floor = _NOISE_FLOOR * var
    noise_free = noise.gain * max(mean, 0.0) + noise.read_var <= floor
    if noise_free:  # plain least squares with a tiny uniform variance
        noise = NoiseModel(gain=0.0, read_var=max(floor, 1e-300))
    if n_gls_iter is None:
        n_gls_iter = _GLS_ITER_NOISE_FREE if noise_free else _GLS_ITER
    fr_args = (noise, var_img, weighted, tol, max_iter)
    sigma0 = _first_sigma(image, xy0, sigma_px, fr_args)
    radius = float(window_px) if window_px is not None else _WINDOW_N_SIGMA * sigma0
    if radius < 1.5:
        raise ValueError(f"window_px must be >= 1.5 px, got {radius}")
    # Everything below sees only the columns' bounding box plus a margin (exact for the
    # window fits; the texture stages lose only far-away carbon). Shifted back at the end.
    (y0, y1), (x0, x1) = crop_box(image.shape, xy0,
                                  2 * int(np.ceil(radius)) + _TEXTURE_SUPPORT_PX, _MIN_CROP_PX)
    offset = np.array([x0, y0], dtype=np.float64)
    image = np.ascontiguousarray(image[y0:y1, x0:x1])
    if var_img.shape != (1, 1):
        var_img = np.ascontiguousarray(var_img[y0:y1, x0:x1])
    xy0 = xy0 - offset
    fr = _Frame(image, noise, var_img, radius, _FREE[background], weighted, tol, max_iter)
    params, res, centre, model, rendered = _window_rounds(fr, xy0, sigma0, n_rounds,
                                                          background == "texture")
    _reinitialise(fr, params, res, xy0, sigma0, centre, model, rendered, reject_residual_frac,
                  max_reinit, reinit_px, rng)
    sigma_ref = median_width(params, res["status"] == 0, sigma0)
    usable = _sane(params, res, sigma_ref)
    out = pack_windows(params, res, xy0)
    if background == "texture" and usable.sum() >= 1 and min(image.shape) >= 16:
        frozen = ~usable
        params[frozen, :2] = xy0[frozen]
        params[frozen, 2:4] = sigma_ref
        params[frozen, 4] = rough_amplitude(image, xy0[frozen], sigma_ref)
        p, hinv, active, back, frac, _, _ = gls_refine(fr, params, usable, n_gls_iter,
                                                        frozen, fr.spectrum)
        for key, col in (("x_px", 0), ("y_px", 1), ("sigma_x_px", 2), ("sigma_y_px", 3),
                         ("amplitude", 4)):
            out[key][active] = p[active, col]
        out["cov"][active] = hinv[active, :2, :2]
        out["residual_frac"][active] = frac[active]
        out["background"][active] = back[active]
        usable = active
    out["x_err_px"] = np.sqrt(out["cov"][:, 0, 0])
    out["y_err_px"] = np.sqrt(out["cov"][:, 1, 1])
    out["pos_err_px"] = np.sqrt(0.5 * (out["cov"][:, 0, 0] + out["cov"][:, 1, 1]))
    moved = np.hypot(out["x_px"] - xy0[:, 0], out["y_px"] - xy0[:, 1])
    width = np.sqrt(np.abs(out["sigma_x_px"] * out["sigma_y_px"]))
    ref = float(np.nanmedian(width[usable])) if usable.any() else sigma_ref
    # Texture mode regularises widths (prior), so a much wider column swallowed a grain.
    ratio = _OK_SIGMA_RATIO if background == "texture" else _MAX_SIGMA_RATIO
    # A shape mismatch shared by the whole frame (a denoiser's or a filter's output, a probe
    # that is not Gaussian) is a property of the image, not a failed fit: the rule then
    # rejects columns whose residual stands out from the frame's typical one.
    frame_resid = out["residual_frac"][usable & np.isfinite(out["residual_frac"])]
    reject = max(reject_residual_frac, _RESID_OUTLIER * float(np.median(frame_resid))
                 if len(frame_resid) else 0.0)
    with np.errstate(invalid="ignore"):
        out["fit_ok"] = (usable & np.isfinite(out["pos_err_px"]) & (moved < 0.6 * radius)
                         & (out["residual_frac"] <= reject)
                         & (width < ratio * ref) & (width > ref / ratio))
        # Fits that wandered off their start, and the paper's rejected fits (residual rule,
        # after the re-initialisations) that moved well away from it, are no measurement:
        # the start stands, with no covariance (measured: such fits land > 3 px from the
        # truth more often than their starts on noise-free and low-dose frames).
        lost = ~out["fit_ok"] & ((moved >= 0.6 * radius) | (
            (out["residual_frac"] > reject) & (moved >= _LOST_MOVE * radius)))
    out["x_px"][lost], out["y_px"][lost] = xy0[lost, 0], xy0[lost, 1]
    for key in ("x_err_px", "y_err_px", "pos_err_px"):
        out[key][lost] = np.nan
    out["cov"][lost] = np.nan
    out["x_px"] += offset[0]
    out["y_px"] += offset[1]
    return out

