"""Line profiles of site metrics along a segment, integrating parallel lines (paper Fig. 2d).

The paper integrates "four regions adjacent to the arrow, each separated by one lattice
spacing". Here: ``n_lines`` lines parallel to the segment ``start -> end``, one ``spacing``
apart and centred on it; each collects the sites within ``spacing / 2`` of it, so together
they cover a band ``n_lines * spacing`` wide. Sites are binned by their projected distance
along the segment (bins ``bin_width`` long, default one spacing); every bin reports the
mean, standard deviation, ``n`` and standard error ``std / sqrt(n)`` of all lines together,
and the per-line means.
"""

import numpy as np

from pvq_dask.kernels.maps import err_name, lattice_spacing

__all__ = ["line_profile", "octahedra_profile"]


def line_profile(x, y, values, start, end, *, errors=None, spacing=None, n_lines=4,
                 bin_width=None, pixel_size_nm=None):
    """Profile of ``values`` along the segment ``start -> end``.

    Parameters
    ----------
    x, y, values : array_like, shape (N,)
        Site positions and values (non-finite entries are ignored).
    start, end : (float, float)
        Segment end points ``(x, y)``, in the unit of ``x`` and ``y``.
    errors : array_like, shape (N,), optional
        Per-site standard uncertainties; adds ``err_propagated = sqrt(sum e^2) / n``.
    spacing : float, optional
        Distance between the parallel lines (one lattice spacing); default the sites'
        median nearest-neighbour distance (:func:`pvq_dask.kernels.maps.lattice_spacing`).
    n_lines : int
        Number of parallel lines (the paper uses 4); 1 is a single line.
    bin_width : float, optional
        Bin length along the segment; default ``spacing``.
    pixel_size_nm : float, optional
        If given, positions are in px and the returned distances in nm; else positions
        are taken to be in nm already.

    Returns
    -------
    dict of ndarray
        ``distance_nm`` (bin centres from ``start``), ``mean``, ``std``, ``sem``, ``n``
        (per bin), ``line_mean`` (n_lines, n_bins), ``spacing_nm``, ``offset_nm`` (the
        lines' perpendicular offsets), and ``err_propagated`` when ``errors`` are given.

    Examples
    --------
    >>> xx, yy = np.meshgrid(np.arange(10.0) + 0.5, np.arange(10.0))
    >>> p = line_profile(xx.ravel(), yy.ravel(), xx.ravel(), (0, 4.5), (8, 4.5),
    ...                  bin_width=2.0)
    >>> p["distance_nm"].tolist(), p["mean"].tolist(), p["n"].tolist()
    ([1.0, 3.0, 5.0, 7.0], [1.0, 3.0, 5.0, 7.0], [8, 8, 8, 8])
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    val = np.asarray(values, dtype=float).ravel()
    if not (len(x) == len(y) == len(val)):
        raise ValueError(f"x, y and values differ in length: {len(x)}, {len(y)}, {len(val)}")
    if n_lines < 1:
        raise ValueError(f"n_lines must be >= 1, got {n_lines}")
    p0 = np.asarray(start, dtype=float).reshape(2)
    p1 = np.asarray(end, dtype=float).reshape(2)
    length = float(np.hypot(*(p1 - p0)))
    if not np.isfinite(length) or length == 0:
        raise ValueError(f"profile segment is empty or not finite: {start} -> {end}")
    scale = 1.0 if pixel_size_nm is None else float(pixel_size_nm)
    if scale <= 0:
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    if spacing is None:
        spacing = lattice_spacing(x, y)
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    bin_width = spacing if bin_width is None else float(bin_width)
    if bin_width <= 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width}")
    err = None if errors is None else np.asarray(errors, dtype=float).ravel()
    if err is not None and err.shape != val.shape:
        raise ValueError(f"errors has {err.size} entries for {val.size} values")

    t = (p1 - p0) / length                      # unit vector along the segment
    nrm = np.array([-t[1], t[0]])               # unit normal
    d = np.c_[x, y] - p0
    along = d @ t
    perp = d @ nrm
    offsets = (np.arange(n_lines) - 0.5 * (n_lines - 1)) * spacing
    line = np.rint(perp / spacing + 0.5 * (n_lines - 1)).astype(np.int64)
    n_bins = max(int(np.ceil(length / bin_width - 1e-9)), 1)
    b = np.floor(along / bin_width).astype(np.int64)
    use = (np.isfinite(val) & np.isfinite(along) & (along >= 0) & (along <= length)
           & (np.abs(perp) <= 0.5 * n_lines * spacing) & (line >= 0) & (line < n_lines))
    b = np.clip(b, 0, n_bins - 1)
    bu, lu, vu = b[use], line[use], val[use]
    n = np.bincount(bu, minlength=n_bins)
    s1 = np.bincount(bu, weights=vu, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s1 / n, np.nan)
        dev = vu - mean[bu]
        var = np.bincount(bu, weights=dev ** 2, minlength=n_bins) / (n - 1)
        std = np.where(n > 1, np.sqrt(var), np.nan)
        sem = std / np.sqrt(n)
        flat = lu * n_bins + bu
        ln = np.bincount(flat, minlength=n_lines * n_bins)
        ls = np.bincount(flat, weights=vu, minlength=n_lines * n_bins)
        line_mean = np.where(ln > 0, ls / ln, np.nan).reshape(n_lines, n_bins)
    out = {
        "distance_nm": (np.arange(n_bins) + 0.5) * bin_width * scale,
        "mean": mean, "std": std, "sem": sem, "n": n.astype(np.int64),
        "line_mean": line_mean,
        "spacing_nm": float(spacing * scale),
        "offset_nm": offsets * scale,
    }
    if err is not None:
        eu = err[use]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["err_propagated"] = np.where(
                n > 0, np.sqrt(np.bincount(bu, weights=eu ** 2, minlength=n_bins)) / n, np.nan)
    return out


def octahedra_profile(table, start, end, *, column="theta3_deg", pixel_size_nm,
                      units="nm", include_edge_excluded=False, **kwargs):
    """:func:`line_profile` of one column of an octahedra (or cells) table.

    Parameters
    ----------
    table : pandas.DataFrame or mapping of arrays
        Needs ``x_px``, ``y_px`` and ``column``; its ``*_err_*`` column is used if present.
    start, end : (float, float)
        Segment end points ``(x, y)`` in ``units``.
    column : str
    pixel_size_nm : float
    units : {"nm", "px"}
        Unit of ``start``, ``end`` and of ``spacing`` / ``bin_width`` in ``kwargs``.
    include_edge_excluded : bool
        Keep rows whose ``region`` is ``edge_excluded``.

    Examples
    --------
    >>> xx, yy = np.meshgrid(np.arange(12.0), np.arange(6.0))
    >>> t = {"x_px": 40 * xx.ravel(), "y_px": 40 * yy.ravel(),
    ...      "theta3_deg": np.where(xx.ravel() < 6, 8.0, 11.0)}
    >>> p = octahedra_profile(t, (0, 100), (440, 100), units="px", pixel_size_nm=0.015)
    >>> p["mean"].tolist()
    [8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 11.0, 11.0, 11.0, 11.0, 11.0]
    """
    if units not in ("nm", "px"):
        raise ValueError(f"units must be 'nm' or 'px', got {units!r}")
    if column not in table:
        raise ValueError(f"table has no column {column!r}")
    x = np.asarray(table["x_px"], dtype=float)
    y = np.asarray(table["y_px"], dtype=float)
    val = np.asarray(table[column], dtype=float)
    keep = np.ones(len(x), bool)
    if not include_edge_excluded and "region" in table:
        keep = np.asarray(table["region"]).astype(str) != "edge_excluded"
    ecol = err_name(column)
    err = np.asarray(table[ecol], dtype=float)[keep] if ecol in table else None
    if units == "nm":
        x, y = x * pixel_size_nm, y * pixel_size_nm
        return line_profile(x[keep], y[keep], val[keep], start, end, errors=err, **kwargs)
    return line_profile(x[keep], y[keep], val[keep], start, end, errors=err,
                        pixel_size_nm=pixel_size_nm, **kwargs)
