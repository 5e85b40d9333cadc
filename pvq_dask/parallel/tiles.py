"""Tiled fitting of one frame with Dask: halos, tile layout, ownership.

For frames too big for one task, or to use many cores on one frame. The wrapper holds no
numerics (the style of dask-image's ``ndfilters``): every tile task runs the fit kernel on
the tile's core plus a halo whose depth comes from one helper, :func:`halo_px`, computed
from the kernel's own parameters (window, neighbour model radius, rounds). A column belongs
to the tile whose core contains its detected centre: every tile fits the same candidates of
the frame's detection, so each column has exactly one owner even where two tiles' fits of it
differ (they do not for a local fit; see :func:`halo_px`).

What a kernel would otherwise estimate from whatever image it is given is computed once per
frame and handed to every tile: the noise model, the column width and the candidates. The
detector is frame-wide by design (a matched filter whitened by the frame's own background
spectrum, then lattice growth from the strongest maxima, whose decisions chain across the
frame), so detection is one task per frame; the fit, the bulk of the work, runs per tile::

    detect(frame) -> fit(tile) ... -> gather (canonical order)

SOFS per tile, stitching and the tiled frame analysis are in :mod:`pvq_dask.parallel.stitch`.
"""

import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.kernels.crlb import NoiseModel, estimate_noise_model
from pvq_dask.kernels.fit import _MAX_SIGMA_RATIO as _FIT_MAX_SIGMA_RATIO
from pvq_dask.kernels.fit import _RENDER_N_SIGMA as _FIT_RENDER_N_SIGMA
from pvq_dask.kernels.fit import _WINDOW_N_SIGMA as _FIT_WINDOW_N_SIGMA
from pvq_dask.kernels.fit import FIT_KEYS, fit_columns
from pvq_dask.kernels.peaks import estimate_column_sigma, find_columns, refine_com

__all__ = ["Tile", "FrameContext", "halo_px", "tile_layout", "owner_tile", "detect_frame",
           "detect_fit_tiled", "fit_options_from_config", "compute_with"]

# Reach of the fit kernel, in its own constants (imported above): the window is
# _WINDOW_N_SIGMA widths unless given, a neighbour's model is rendered to _RENDER_N_SIGMA
# of its width, widths are accepted up to _MAX_SIGMA_RATIO times the frame's; a window's
# centre follows its column by at most half the window per round.
_FIT_CENTRE_SHIFT_FRAC = 0.5
_HALO_QUANTUM_PX = 8
_GUESS_SIGMA_PX = 2.5           # column width for the halo when none could be measured


@dataclass(frozen=True)
class Tile:
    """One tile: its core (owned pixels) and outer box (core + halo, clipped to the frame).

    Boxes are ``(y0, y1, x0, x1)`` in frame pixels, half-open.
    """

    index: int
    core: tuple
    outer: tuple

    @property
    def outer_slices(self):
        y0, y1, x0, x1 = self.outer
        return slice(y0, y1), slice(x0, x1)

    @property
    def origin_xy(self):
        """Frame (x, y) of the outer box's first pixel."""
        return np.array([self.outer[2], self.outer[0]], dtype=float)


@dataclass(frozen=True)
class FrameContext:
    """Frame-wide inputs every tile's kernels share.

    Attributes
    ----------
    noise : pvq_dask.kernels.crlb.NoiseModel
    sigma_px : float
        Starting column width of the fit.
    """

    noise: object
    sigma_px: float


def halo_px(*, sigma_px, window_px=None, n_rounds=2):
    """Halo depth (px) that makes a tile's fitted columns independent of the tile's edge.

    Candidates come from the whole frame's detection. A fitted position depends on the
    pixels of its window and, from the second round on, on the models of neighbours whose
    rendered footprint reaches the window; summed over the rounds, plus the distance a
    window centre may follow its column::

        n_rounds * window * (1 + shift) + (n_rounds - 1) * render

    rounded up to a multiple of 8 px. This is the reach of the windowed (paper) fit; the
    texture-aware refinement of :func:`~pvq_dask.kernels.fit.fit_columns` filters the
    residual of the image it is given in Fourier space and is not strictly local.

    Parameters
    ----------
    sigma_px : float
        Column width (the fit's starting width).
    window_px : float, optional
        Fit window radius; the fit's default when omitted.
    n_rounds : int
        Fit rounds with neighbour subtraction.

    Returns
    -------
    int

    Examples
    --------
    >>> halo_px(sigma_px=2.4)
    48
    >>> halo_px(sigma_px=2.4, n_rounds=1) < halo_px(sigma_px=2.4)
    True
    """
    if sigma_px is None or not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    if n_rounds < 1:
        raise ValueError(f"n_rounds must be >= 1, got {n_rounds}")
    window = _FIT_WINDOW_N_SIGMA * sigma_px if window_px is None else float(window_px)
    render = _FIT_RENDER_N_SIGMA * _FIT_MAX_SIGMA_RATIO * sigma_px
    reach = n_rounds * window * (1.0 + _FIT_CENTRE_SHIFT_FRAC) + (n_rounds - 1) * render
    return int(np.ceil(reach / _HALO_QUANTUM_PX) * _HALO_QUANTUM_PX)


def _edges(size, step):
    return np.r_[np.arange(0, size, step), size].astype(np.int64)


def _tile_shape(tile_px, shape):
    if np.ndim(tile_px) == 0:
        tile_px = (tile_px, tile_px)
    ty, tx = (int(v) for v in tile_px)
    if ty < 0 or tx < 0:
        raise ValueError(f"tile_px must be >= 0, got {tile_px}")
    # 0 means one tile along that axis
    return (ty or shape[0], tx or shape[1])


def tile_layout(shape, *, tile_px, halo_px):
    """Tiles whose cores partition a frame of ``shape``.

    Parameters
    ----------
    shape : (int, int)
        Frame shape (H, W).
    tile_px : int or (int, int)
        Core size (rows, columns); 0 = the whole frame along that axis. Edge tiles are
        smaller when the size does not divide the frame.
    halo_px : int
        Halo depth on every side (clipped at the frame edge).

    Returns
    -------
    list of Tile

    Examples
    --------
    >>> [t.core for t in tile_layout((100, 150), tile_px=(100, 80), halo_px=10)]
    [(0, 100, 0, 80), (0, 100, 80, 150)]
    >>> tile_layout((100, 150), tile_px=(100, 80), halo_px=10)[1].outer
    (0, 100, 70, 150)
    """
    h, w = (int(v) for v in shape)
    ty, tx = _tile_shape(tile_px, (h, w))
    if halo_px < 0:
        raise ValueError(f"halo_px must be >= 0, got {halo_px}")
    ey, ex = _edges(h, ty), _edges(w, tx)
    tiles = []
    for i in range(len(ey) - 1):
        for j in range(len(ex) - 1):
            core = (int(ey[i]), int(ey[i + 1]), int(ex[j]), int(ex[j + 1]))
            outer = (max(core[0] - halo_px, 0), min(core[1] + halo_px, h),
                     max(core[2] - halo_px, 0), min(core[3] + halo_px, w))
            tiles.append(Tile(index=len(tiles), core=core, outer=outer))
    return tiles


def owner_tile(xy, shape, *, tile_px):
    """Tile index owning each position: the tile whose core contains the pixel of (x, y).

    Positions outside the frame belong to the nearest edge tile, so every column has
    exactly one owner.

    Examples
    --------
    >>> owner_tile(np.array([[10.0, 5.0], [79.6, 5.0], [200.0, -3.0]]), (100, 150),
    ...            tile_px=(100, 80)).tolist()
    [0, 1, 1]
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    h, w = (int(v) for v in shape)
    ty, tx = _tile_shape(tile_px, (h, w))
    ey, ex = _edges(h, ty), _edges(w, tx)
    col = np.clip(np.floor(np.nan_to_num(xy[:, 0]) + 0.5), 0, w - 1)
    row = np.clip(np.floor(np.nan_to_num(xy[:, 1]) + 0.5), 0, h - 1)
    i = np.searchsorted(ey, row, side="right") - 1
    j = np.searchsorted(ex, col, side="right") - 1
    return (i * (len(ex) - 1) + j).astype(np.int64)


def detect_frame(image, *, config=None, image_std=None):
    """Candidates and frame context: the detection stage of ``analyze_frame``.

    Returns ``(xy0, FrameContext)``: centre-of-mass refined candidates (x, y) px, and what
    every tile's fit shares: the noise model (estimated from the frame; for a denoised
    frame the median of its Monte-Carlo variance ``image_std**2`` as pure read noise, as
    ``analyze_frame`` does) and the column width the detector measured.
    """
    cfg = AnalysisConfig() if config is None else config
    image = np.asarray(image, dtype=float)
    finite = np.isfinite(image)
    if not finite.any() or np.ptp(image[finite]) == 0:
        return np.zeros((0, 2)), FrameContext(noise=None, sigma_px=None)
    noise = estimate_noise_model(image, mask=finite)
    sigma = estimate_column_sigma(image, noise=noise)
    xy0 = find_columns(image, min_distance_px=cfg.min_distance_px, sigma_px=sigma, noise=noise)
    if len(xy0):
        xy0 = refine_com(image, xy0, radius_px=cfg.com_radius_px)
    if image_std is not None:
        var = np.asarray(image_std, float) ** 2
        noise = NoiseModel(gain=0.0, read_var=float(np.nanmedian(var[np.isfinite(var)])))
    return np.asarray(xy0, float).reshape(-1, 2), FrameContext(noise=noise, sigma_px=sigma)


def _fit_tile(image, cand, xy0, own, origin, context, fit_options, kernel_threads):
    """Fit the candidates of a tile's outer box (``xy0`` frame coords, indices ``cand``);
    return the indices and fits of the columns the tile owns (``own``), frame coords."""
    if kernel_threads:
        import numba

        numba.set_num_threads(int(kernel_threads))
    fit = fit_columns(image, xy0 - origin, sigma_px=context.sigma_px, noise=context.noise,
                      **fit_options)
    fit["x_px"] = fit["x_px"] + origin[0]
    fit["y_px"] = fit["y_px"] + origin[1]
    return cand[own], {k: np.asarray(v)[own] for k, v in fit.items()}


def _concat(fits):
    """One fit dict from the tiles' ``(candidates, fit)``, in candidate (detection) order,
    which is the same whatever the tiling."""
    cand = np.concatenate([c for c, _ in fits])
    order = np.argsort(cand, kind="stable")
    return {k: np.concatenate([np.asarray(f[k]) for _, f in fits])[order] for k in FIT_KEYS}


def _inside(xy, shape, box):
    """Which positions have their pixel (clipped to the frame) inside ``box``."""
    p = np.clip(np.floor(xy + 0.5), 0, np.array(shape[::-1]) - 1)
    y0, y1, x0, x1 = box
    return (p[:, 0] >= x0) & (p[:, 0] < x1) & (p[:, 1] >= y0) & (p[:, 1] < y1)


def compute_with(scheduler, num_workers=None):
    """``f(*delayed) -> results`` for a local scheduler name or a distributed Client."""
    import dask

    from pvq_dask.parallel.scheduler import LOCAL_SCHEDULERS

    kw = {} if num_workers is None else {"num_workers": int(num_workers)}
    if isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
        return lambda *objs: dask.compute(*objs, scheduler=scheduler, **kw)
    if hasattr(scheduler, "get"):          # a distributed.Client
        return lambda *objs: dask.compute(*objs, scheduler=scheduler.get)
    raise ValueError(f"scheduler must be one of {LOCAL_SCHEDULERS} or a distributed.Client, "
                     f"got {scheduler!r}")


def fit_options_from_config(cfg, overrides=None):
    """Keyword arguments of ``fit_columns`` for a config, plus explicit overrides."""
    opts = {"rng": cfg.seed, "reject_residual_frac": cfg.reject_residual_frac,
            "tol": cfg.fit_tol}
    opts.update(overrides or {})
    return opts


def detect_fit_tiled(image, *, config=None, tile_px=512, scheduler="threads",
                     image_std=None, fit_options=None, kernel_threads=None, num_workers=None):
    """Detect the atom columns of a frame (one task), then fit them one Dask task per tile.

    Each tile fits the frame's candidates inside its core + halo with the frame's noise
    model and column width, and keeps the columns whose detected centre lies in its core.

    Parameters
    ----------
    image : ndarray or dask.array.Array (H, W)
    config : AnalysisConfig, optional
    tile_px : int or (int, int)
        Tile core size (rows, columns); 0 = the whole frame as one tile.
    scheduler : str or distributed.Client
        ``"threads"``, ``"synchronous"``, ``"processes"`` or a Client.
    image_std : ndarray (H, W), optional
        Monte-Carlo std of a denoised ``image``: sets the fit's noise model, as in
        ``analyze_frame``.
    fit_options : dict, optional
        Extra keyword arguments of :func:`pvq_dask.kernels.fit.fit_columns` (e.g.
        ``background``).
    kernel_threads : int, optional
        Numba threads inside each tile task (1 avoids oversubscribing the cores the Dask
        pool already uses).
    num_workers : int, optional
        Size of the local thread or process pool.

    Returns
    -------
    fit : dict of ndarray
        ``fit_columns``'s keys for every column of the frame, in frame coordinates and in
        the detector's order.
    info : dict
        ``tiles`` (the layout), ``halo_px``, ``context`` (FrameContext), ``timings_s``.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:96, 0:96]
    >>> img = 5.0 + sum(40.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
    ...                 for y in range(12, 96, 18) for x in range(12, 96, 18))
    >>> local = {"background": "plane", "max_reinit": 0}
    >>> fit, info = detect_fit_tiled(img, tile_px=48, scheduler="synchronous",
    ...                              fit_options=local)
    >>> whole, _ = detect_fit_tiled(img, tile_px=0, scheduler="synchronous", fit_options=local)
    >>> len(info["tiles"]), bool(np.allclose(fit["x_px"], whole["x_px"], rtol=0, atol=1e-6))
    (4, True)
    """
    import dask

    cfg = AnalysisConfig() if config is None else config
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {image.shape}")
    opts = fit_options_from_config(cfg, fit_options)
    compute = compute_with(scheduler, num_workers)
    delayed = partial(dask.delayed, pure=True)
    timings = {}
    t0 = time.perf_counter()
    ((xy0, context),) = compute(delayed(detect_frame)(image, config=cfg, image_std=image_std))
    timings["detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    halo = halo_px(sigma_px=context.sigma_px or _GUESS_SIGMA_PX,
                   window_px=opts.get("window_px"), n_rounds=opts.get("n_rounds", 2))
    layout = tile_layout(image.shape, tile_px=tile_px, halo_px=halo)
    owner = owner_tile(xy0, image.shape, tile_px=tile_px)
    tasks = []
    for t in layout:
        cand = np.flatnonzero(_inside(xy0, image.shape, t.outer))
        tasks.append(delayed(_fit_tile)(image[t.outer_slices], cand, xy0[cand],
                                        owner[cand] == t.index, t.origin_xy, context, opts,
                                        kernel_threads))
    fit = _concat(compute(*tasks))
    timings["fit"] = time.perf_counter() - t0
    return fit, {"tiles": layout, "halo_px": halo, "context": context, "timings_s": timings}
