"""Metric maps: per-octahedron and per-cell values rasterised onto a regular grid in nm.

A map is a plain ``dict`` of arrays (the *map dict*), which :mod:`pvq_dask.store.maps`
turns into an xarray Dataset with dims ``(t, v, u)``:

- ``u_nm`` (U,), ``v_nm`` (V,): grid-point coordinates along image x and y, in nm, with
  ``u = 0`` at the centre of pixel column 0 (``x_nm = x_px * pixel_size_nm``);
- one (V, U) float array per metric (``theta1_deg`` ... ``P2_nm``) and its standard
  uncertainty (``theta1_err_deg`` ... ``P2_err_nm``), NaN where no site is close enough;
- ``count`` (octahedra) and ``cell_count`` (cells): int32 (V, U) numbers of sites that
  contributed to each grid point;
- ``attrs``: the options the maps were made with.

Three rasterisations: ``"gaussian"`` (a Gaussian-weighted mean of the sites within
``truncate * sigma_nm``; its uncertainty is the weighted mean's propagated error
``sqrt(sum w^2 e^2) / sum w``), ``"linear"`` (a Gaussian-weighted local linear fit, exact for
linear fields up to the particle edge) and ``"nearest"`` (value and error of the nearest
site).
Grid points farther than ``max_distance_nm`` from every site are NaN, so the maps stop at
the particle. Edge-excluded octahedra (and cells touching them) are left out by default.
"""

import numpy as np

__all__ = ["OCTAHEDRA_MAP_METRICS", "CELL_MAP_METRICS", "err_name", "lattice_spacing",
           "map_grid", "rasterize_sites", "metric_maps"]

#: Octahedra-table columns mapped by :func:`metric_maps`.
OCTAHEDRA_MAP_METRICS = ("theta1_deg", "theta2_deg", "theta3_deg", "L1_nm", "L2_nm")
#: Cells-table columns mapped by :func:`metric_maps`.
CELL_MAP_METRICS = ("C1_nm", "C2_nm", "C3_nm", "P1_nm", "P2_nm")

_METHODS = ("gaussian", "linear", "nearest")
_CHUNK = 512  # sites per block in the brute-force nearest-neighbour search
_MIN_HADAMARD = 1e-3  # local-linear fits with a flatter site cloud are left NaN


def err_name(name):
    """Name of the uncertainty column of a metric: ``theta1_deg -> theta1_err_deg``.

    Examples
    --------
    >>> err_name("theta3_deg"), err_name("C1_nm")
    ('theta3_err_deg', 'C1_err_nm')
    """
    stem, sep, unit = name.rpartition("_")
    if not sep or not stem:
        raise ValueError(f"metric name {name!r} has no unit suffix like '_deg' or '_nm'")
    return f"{stem}_err_{unit}"


def lattice_spacing(x, y):
    """Median nearest-neighbour distance of a set of sites (same unit as ``x``, ``y``).

    On the Pb sites of a perovskite this is the pseudo-cubic lattice spacing, the natural
    smoothing length of maps and the line spacing of profiles.

    Examples
    --------
    >>> xx, yy = np.meshgrid(np.arange(5) * 0.6, np.arange(4) * 0.6)
    >>> round(float(lattice_spacing(xx.ravel(), yy.ravel())), 6)
    0.6
    """
    xy = np.c_[np.asarray(x, float).ravel(), np.asarray(y, float).ravel()]
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    if len(xy) < 2:
        raise ValueError(f"lattice_spacing needs at least 2 finite sites, got {len(xy)}")
    nn = np.empty(len(xy))
    x, y = xy[:, 0], xy[:, 1]
    for s in range(0, len(xy), _CHUNK):
        bx, by = x[s:s + _CHUNK, None], y[s:s + _CHUNK, None]
        d2 = (bx - x[None, :]) ** 2 + (by - y[None, :]) ** 2
        d2[np.arange(len(bx)), s + np.arange(len(bx))] = np.inf
        nn[s:s + _CHUNK] = d2.min(axis=1)
    return float(np.sqrt(np.median(nn)))


def map_grid(shape, *, pixel_size_nm, step_nm):
    """Grid coordinates ``(u_nm, v_nm)`` covering a frame of ``shape`` (H, W) px.

    Examples
    --------
    >>> u, v = map_grid((11, 21), pixel_size_nm=0.1, step_nm=0.5)
    >>> u.tolist(), v.tolist()
    ([0.0, 0.5, 1.0, 1.5, 2.0], [0.0, 0.5, 1.0])
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {shape}")
    if pixel_size_nm <= 0 or step_nm <= 0:
        raise ValueError(f"pixel_size_nm and step_nm must be > 0, got {pixel_size_nm}, "
                         f"{step_nm}")
    h, w = shape
    nu = int(np.floor((w - 1) * pixel_size_nm / step_nm + 1e-9)) + 1
    nv = int(np.floor((h - 1) * pixel_size_nm / step_nm + 1e-9)) + 1
    return np.arange(nu) * step_nm, np.arange(nv) * step_nm


def _neighbourhoods(x, y, u, v, radius):
    """(site, flat cell, squared distance) for every grid point within ``radius`` of a site."""
    step_u = u[1] - u[0] if len(u) > 1 else 1.0
    step_v = v[1] - v[0] if len(v) > 1 else 1.0
    ku, kv = int(np.ceil(radius / step_u)), int(np.ceil(radius / step_v))
    cu = np.rint((x - u[0]) / step_u).astype(np.int64)
    cv = np.rint((y - v[0]) / step_v).astype(np.int64)
    du, dv = np.meshgrid(np.arange(-ku, ku + 1), np.arange(-kv, kv + 1))
    iu = cu[:, None] + du.ravel()[None, :]
    iv = cv[:, None] + dv.ravel()[None, :]
    d2 = (u[np.clip(iu, 0, len(u) - 1)] - x[:, None]) ** 2
    d2 += (v[np.clip(iv, 0, len(v) - 1)] - y[:, None]) ** 2
    ok = (iu >= 0) & (iu < len(u)) & (iv >= 0) & (iv < len(v)) & (d2 <= radius ** 2)
    site = np.broadcast_to(np.arange(len(x))[:, None], iu.shape)[ok]
    return site, (iv * len(u) + iu)[ok], d2[ok]


def _local_linear(x, y, val, err, u, v, site, cell, w, size):
    """Gaussian-weighted local linear fit per grid point; value = intercept at the point.

    With ``b = [1, dx, dy]`` the estimate is ``sum_i l_i v_i``, ``l_i = w_i e1' M^-1 b_i``,
    ``M = sum w b b'``; its variance ``sum l_i^2 e_i^2 = e1' M^-1 (sum w^2 e^2 b b') M^-1 e1``.
    """
    nu = len(u)
    dx = x[site] - u[cell % nu]
    dy = y[site] - v[cell // nu]
    basis = np.stack([np.ones_like(dx), dx, dy], axis=1)
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]
    mom = np.zeros((size, 3, 3))
    var = np.zeros((size, 3, 3))
    we2 = w ** 2 * err[site] ** 2
    for a, b in pairs:
        mom[:, a, b] = mom[:, b, a] = np.bincount(cell, weights=w * basis[:, a] * basis[:, b],
                                                  minlength=size)
        var[:, a, b] = var[:, b, a] = np.bincount(cell, weights=we2 * basis[:, a] * basis[:, b],
                                                  minlength=size)
    rhs = np.stack([np.bincount(cell, weights=w * val[site] * basis[:, a], minlength=size)
                    for a in range(3)], axis=1)
    # Hadamard ratio det(M) / prod(diag M) in [0, 1]: ~0 when the sites are (nearly)
    # collinear or fewer than three, and the fit is then undetermined.
    diag = mom[:, 0, 0] * mom[:, 1, 1] * mom[:, 2, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.linalg.det(mom) > _MIN_HADAMARD * diag
    ok &= diag > 0
    out_v = np.full(size, np.nan)
    out_e = np.full(size, np.nan)
    if ok.any():
        inv = np.linalg.inv(mom[ok])
        out_v[ok] = np.einsum("ni,ni->n", inv[:, 0], rhs[ok])
        out_e[ok] = np.sqrt(np.einsum("ni,nij,nj->n", inv[:, 0], var[ok], inv[:, 0]))
    return out_v, out_e


def rasterize_sites(x_nm, y_nm, values, *, u_nm, v_nm, errors=None, sigma_nm,
                    method="gaussian", truncate=3.0, max_distance_nm=None,
                    inverse_variance=False):
    """Rasterise scattered site values onto the grid ``(v_nm, u_nm)``.

    Parameters
    ----------
    x_nm, y_nm : array_like, shape (N,)
        Site positions; sites with a non-finite position are ignored.
    values : array_like, shape (N,) or (N, K)
        One or K metrics per site; non-finite values are ignored for that metric only.
    u_nm, v_nm : ndarray
        Regularly spaced grid coordinates along x and y (see :func:`map_grid`).
    errors : array_like, same shape as ``values``, optional
        Standard uncertainty of each value; the map's uncertainty is NaN without it.
    sigma_nm : float
        Width of the Gaussian weights.
    method : {"gaussian", "linear", "nearest"}
        ``"gaussian"``: weighted mean; ``"linear"``: Gaussian-weighted local linear fit
        (reproduces linear fields exactly, also at the particle edge, where a weighted
        mean is pulled towards the interior); ``"nearest"``: nearest site.
    truncate : float
        Support radius of a site in units of ``sigma_nm``; also where ``count`` is taken.
    max_distance_nm : float, optional
        Grid points with no (valid) site this close are NaN; default ``sigma_nm``.
    inverse_variance : bool
        Multiply the Gaussian weights by ``1 / errors**2`` (needs ``errors``; sites
        without a finite positive error are then ignored).

    Returns
    -------
    value, err : ndarray (V, U) or (K, V, U), float64
    count : ndarray (V, U) int32
        Number of sites within ``truncate * sigma_nm`` of each grid point.

    Examples
    --------
    >>> u = v = np.arange(5.0)
    >>> val, err, n = rasterize_sites([2.0], [2.0], [7.0], u_nm=u, v_nm=v, sigma_nm=1.0)
    >>> float(val[2, 2]), bool(np.isnan(val[0, 0])), int(n[2, 2])
    (7.0, True, 1)
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not sigma_nm or sigma_nm <= 0:
        raise ValueError(f"sigma_nm must be > 0, got {sigma_nm}")
    if truncate <= 0:
        raise ValueError(f"truncate must be > 0, got {truncate}")
    u = np.asarray(u_nm, float)
    v = np.asarray(v_nm, float)
    x = np.asarray(x_nm, float).ravel()
    y = np.asarray(y_nm, float).ravel()
    val = np.asarray(values, float)
    single = val.ndim == 1
    val = val.reshape(len(val), -1) if val.ndim else val.reshape(1, 1)
    if not (len(x) == len(y) == len(val)):
        raise ValueError(f"x_nm, y_nm and values differ in length: {len(x)}, {len(y)}, "
                         f"{len(val)}")
    if errors is None:
        if inverse_variance:
            raise ValueError("inverse_variance=True needs errors")
        err = np.full(val.shape, np.nan)
    else:
        err = np.asarray(errors, float).reshape(len(val), -1)
        if err.shape != val.shape:
            raise ValueError(f"errors has shape {err.shape}, values {val.shape}")
    fin = np.isfinite(x) & np.isfinite(y)
    x, y, val, err = x[fin], y[fin], val[fin], err[fin]
    shape = (len(v), len(u))
    size = shape[0] * shape[1]
    max_d = sigma_nm if max_distance_nm is None else float(max_distance_nm)
    support = truncate * sigma_nm
    site, cell, d2 = _neighbourhoods(x, y, u, v, max(support, max_d))
    order = np.lexsort((d2, cell))        # by cell, then distance: nearest site first
    site, cell, d2 = site[order], cell[order], d2[order]
    in_support = d2 <= support ** 2
    count = np.bincount(cell[in_support], minlength=size).astype(np.int32)
    w_all = np.exp(-0.5 * d2 / sigma_nm ** 2)
    out_v = np.full((val.shape[1], size), np.nan)
    out_e = np.full((val.shape[1], size), np.nan)
    for k in range(val.shape[1]):
        ok_site = np.isfinite(val[:, k])
        if inverse_variance:
            ok_site &= np.isfinite(err[:, k]) & (err[:, k] > 0)
        ent = ok_site[site]
        e_cell, e_site, e_d2 = cell[ent], site[ent], d2[ent]
        first = np.ones(len(e_cell), bool)
        first[1:] = e_cell[1:] != e_cell[:-1]
        covered = np.zeros(size, bool)
        covered[e_cell[first & (e_d2 <= max_d ** 2)]] = True
        if method == "nearest":
            out_v[k, e_cell[first]] = val[e_site[first], k]
            out_e[k, e_cell[first]] = err[e_site[first], k]
        else:
            sel = ent & in_support
            w = w_all[sel]
            if inverse_variance:
                w = w / err[site[sel], k] ** 2
            fit = _weighted_mean if method == "gaussian" else _local_linear
            out_v[k], out_e[k] = fit(x, y, val[:, k], err[:, k], u, v, site[sel], cell[sel],
                                     w, size)
        out_v[k, ~covered] = np.nan
        out_e[k, ~covered] = np.nan
    out_v = out_v.reshape((-1, *shape))
    out_e = out_e.reshape((-1, *shape))
    if single:
        out_v, out_e = out_v[0], out_e[0]
    return out_v, out_e, count.reshape(shape)


def _weighted_mean(x, y, val, err, u, v, site, cell, w, size):
    """Gaussian-weighted mean per grid point and its propagated standard error."""
    sw = np.bincount(cell, weights=w, minlength=size)
    swv = np.bincount(cell, weights=w * val[site], minlength=size)
    swe = np.bincount(cell, weights=(w * err[site]) ** 2, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return swv / sw, np.sqrt(swe) / sw


def _column(table, name, n):
    try:
        return np.asarray(table[name], dtype=float)
    except KeyError:
        return np.full(n, np.nan)


def _cell_keep(cells, octahedra):
    """Cells none of whose four Pb corners is an edge-excluded octahedron."""
    ci = np.asarray(cells["i"], np.int64)
    cj = np.asarray(cells["j"], np.int64)
    region = np.asarray(octahedra["region"]).astype(str)
    bad = region == "edge_excluded"
    if not bad.any():
        return np.ones(len(ci), bool)
    bi = np.asarray(octahedra["i"], np.int64)[bad]
    bj = np.asarray(octahedra["j"], np.int64)[bad]
    span = int(max(np.abs(a).max(initial=0) for a in (ci, cj, bi, bj))) + 4
    bad_keys = (bi + span) * (4 * span) + (bj + span)
    keep = np.ones(len(ci), bool)
    for di, dj in ((0, 0), (1, 0), (0, 1), (1, 1)):
        keys = (ci + di + span) * (4 * span) + (cj + dj + span)
        keep &= ~np.isin(keys, bad_keys)
    return keep


def metric_maps(octahedra, cells=None, *, pixel_size_nm, shape=None, step_nm=0.1,
                sigma_nm=None, method="gaussian", truncate=3.0, max_distance_nm=None,
                inverse_variance=False, include_edge_excluded=False):
    """Maps of every octahedron and cell metric on one grid (a *map dict*).

    Parameters
    ----------
    octahedra : pandas.DataFrame or mapping of arrays
        Octahedra table (:data:`pvq_dask.kernels.schema.OCTAHEDRA_COLUMNS`); metrics it
        lacks are mapped as NaN.
    cells : pandas.DataFrame or mapping of arrays, optional
        Cells table (:data:`pvq_dask.kernels.schema.CELL_COLUMNS`); adds C1..C3, P1, P2.
    pixel_size_nm : float
    shape : tuple (H, W), optional
        Frame shape in px; the grid covers it. Default: from 0 to the farthest site.
    step_nm : float
        Grid spacing.
    sigma_nm : float, optional
        Smoothing width; default half the lattice spacing of the octahedra's Pb sites, so a
        map point is dominated by its own octahedron.
    method, truncate, max_distance_nm, inverse_variance
        See :func:`rasterize_sites`; ``max_distance_nm`` defaults to the lattice spacing.
    include_edge_excluded : bool
        Keep ``region == "edge_excluded"`` octahedra (and cells touching them).

    Returns
    -------
    dict
        ``u_nm``, ``v_nm``, each metric, its ``*_err_*``, ``count`` and ``cell_count``,
        and ``attrs`` (the options used, for the Dataset's attributes).

    Examples
    --------
    >>> ii, jj = np.meshgrid(np.arange(6), np.arange(6))
    >>> octs = {"x_px": ii.ravel() * 30.0, "y_px": jj.ravel() * 30.0,
    ...         "theta3_deg": np.full(36, 9.0), "region": np.full(36, "core")}
    >>> m = metric_maps(octs, pixel_size_nm=0.02, step_nm=0.1)
    >>> round(float(np.nanmean(m["theta3_deg"])), 6), m["theta3_deg"].shape
    (9.0, (31, 31))
    """
    if pixel_size_nm is None or pixel_size_nm <= 0:
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    n = len(np.asarray(octahedra["x_px"]))
    keep = np.ones(n, bool)
    if not include_edge_excluded and "region" in octahedra:
        keep = np.asarray(octahedra["region"]).astype(str) != "edge_excluded"
    x = np.asarray(octahedra["x_px"], float)[keep] * pixel_size_nm
    y = np.asarray(octahedra["y_px"], float)[keep] * pixel_size_nm
    spacing = lattice_spacing(x, y) if np.isfinite(x + y).sum() >= 2 else None
    if sigma_nm is None:
        if spacing is None:
            raise ValueError("metric_maps needs sigma_nm when fewer than 2 octahedra remain")
        sigma_nm = 0.5 * spacing
    if max_distance_nm is None:
        max_distance_nm = spacing if spacing is not None else 2.0 * sigma_nm
    if shape is None:
        xs = np.concatenate([x, np.asarray(cells["x_px"], float) * pixel_size_nm
                             if cells is not None else []])
        ys = np.concatenate([y, np.asarray(cells["y_px"], float) * pixel_size_nm
                             if cells is not None else []])
        top_x = np.nanmax(xs, initial=0.0) if len(xs) else 0.0
        top_y = np.nanmax(ys, initial=0.0) if len(ys) else 0.0
        shape = (int(top_y / pixel_size_nm) + 2, int(top_x / pixel_size_nm) + 2)
    u, v = map_grid(shape, pixel_size_nm=pixel_size_nm, step_nm=step_nm)
    opts = dict(u_nm=u, v_nm=v, sigma_nm=sigma_nm, method=method, truncate=truncate,
                max_distance_nm=max_distance_nm, inverse_variance=inverse_variance)
    out = {"u_nm": u, "v_nm": v, "attrs": {
        "method": method, "sigma_nm": float(sigma_nm), "truncate": float(truncate),
        "max_distance_nm": float(max_distance_nm), "step_nm": float(step_nm),
        "pixel_size_nm": float(pixel_size_nm), "inverse_variance": bool(inverse_variance),
        "include_edge_excluded": bool(include_edge_excluded)}}
    val = np.stack([_column(octahedra, c, n)[keep] for c in OCTAHEDRA_MAP_METRICS], axis=1)
    err = np.stack([_column(octahedra, err_name(c), n)[keep] for c in OCTAHEDRA_MAP_METRICS],
                   axis=1)
    maps, errs, out["count"] = rasterize_sites(x, y, val, errors=err, **opts)
    for k, name in enumerate(OCTAHEDRA_MAP_METRICS):
        out[name], out[err_name(name)] = maps[k], errs[k]
    if cells is not None:
        out.update(_cell_maps(cells, octahedra, pixel_size_nm, include_edge_excluded, opts))
    return out


def _cell_maps(cells, octahedra, pixel_size_nm, include_edge_excluded, opts):
    m = len(np.asarray(cells["x_px"]))
    keep = np.ones(m, bool)
    if not include_edge_excluded and m and "region" in octahedra:
        keep = _cell_keep(cells, octahedra)
    x = np.asarray(cells["x_px"], float)[keep] * pixel_size_nm
    y = np.asarray(cells["y_px"], float)[keep] * pixel_size_nm
    errs = {name: _column(cells, err_name(name), m) for name in CELL_MAP_METRICS}
    if "C3_err_nm" not in cells:
        # C1 and C2 share one Cs; their covariance is ignored here.
        e1, e2 = errs["C1_nm"], errs["C2_nm"]
        both = np.isfinite(e1) & np.isfinite(e2)
        errs["C3_nm"] = np.where(both, 0.5 * np.hypot(e1, e2), np.fmin(e1, e2))
    val = np.stack([_column(cells, c, m)[keep] for c in CELL_MAP_METRICS], axis=1)
    err = np.stack([errs[c][keep] for c in CELL_MAP_METRICS], axis=1)
    maps, errs_map, count = rasterize_sites(x, y, val, errors=err, **opts)
    out = {"cell_count": count}
    for k, name in enumerate(CELL_MAP_METRICS):
        out[name], out[err_name(name)] = maps[k], errs_map[k]
    return out
