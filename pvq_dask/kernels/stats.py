"""Core/shell and per-layer statistics of octahedron metrics, and histograms.

Every summary reports the plain sample statistics (mean, standard deviation with
``ddof=1``, ``n`` and the standard error ``std / sqrt(n)``) and, when per-value standard
uncertainties are given, the inverse-variance weighted mean, its standard error
``1 / sqrt(sum 1/e^2)`` and the reduced chi-square of the values about it (near 1 when the
spread is explained by the uncertainties, larger when the structure itself varies).
Non-finite values are ignored. Results are plain Python numbers (JSON-friendly).
"""

import numpy as np

__all__ = [
    "SUMMARY_METRICS",
    "describe",
    "group_statistics",
    "layer_statistics",
    "histogram",
    "region_histograms",
    "summarize_octahedra",
    "format_summary",
]

#: Octahedra-table metrics summarised by :func:`summarize_octahedra`.
SUMMARY_METRICS = ("theta1_deg", "theta2_deg", "theta3_deg", "L1_nm", "L2_nm")


def describe(values, *, errors=None):
    """Sample statistics of ``values`` (and weighted ones when ``errors`` are given).

    Returns
    -------
    dict
        ``n, mean, std, sem, median``; with ``errors`` also ``n_weighted, weighted_mean,
        weighted_sem, reduced_chi2`` (values lacking a finite positive error are left out
        of the weighted numbers only). Undefined numbers are NaN.

    Examples
    --------
    >>> d = describe([1.0, 2.0, 3.0, np.nan])
    >>> d["n"], d["mean"], d["std"], round(d["sem"], 6)
    (3, 2.0, 1.0, 0.57735)
    >>> round(describe([1.0, 3.0], errors=[1.0, 1.0])["weighted_sem"], 6)
    0.707107
    """
    v = np.asarray(values, dtype=float).ravel()
    ok = np.isfinite(v)
    x = v[ok]
    n = int(len(x))
    out = {
        "n": n,
        "mean": float(x.mean()) if n else float("nan"),
        "std": float(x.std(ddof=1)) if n > 1 else float("nan"),
        "median": float(np.median(x)) if n else float("nan"),
    }
    out["sem"] = float(out["std"] / np.sqrt(n)) if n > 1 else float("nan")
    if errors is not None:
        e = np.asarray(errors, dtype=float).ravel()
        if e.shape != v.shape:
            raise ValueError(f"errors has {e.size} entries for {v.size} values")
        good = ok & np.isfinite(e) & (e > 0)
        w = 1.0 / e[good] ** 2
        nw = int(good.sum())
        out["n_weighted"] = nw
        if nw:
            wm = float((w * v[good]).sum() / w.sum())
            out["weighted_mean"] = wm
            out["weighted_sem"] = float(1.0 / np.sqrt(w.sum()))
            chi2 = float((w * (v[good] - wm) ** 2).sum())
            out["reduced_chi2"] = chi2 / (nw - 1) if nw > 1 else float("nan")
        else:
            out.update(weighted_mean=float("nan"), weighted_sem=float("nan"),
                       reduced_chi2=float("nan"))
    return out


def group_statistics(values, labels, *, errors=None, groups=None):
    """:func:`describe` of ``values`` per label.

    Parameters
    ----------
    values : array_like (N,)
    labels : array_like (N,)
        Group label of each value (e.g. the octahedra ``region``).
    errors : array_like (N,), optional
    groups : sequence, optional
        Labels to report, in order (groups with no values get ``n = 0``); default the
        sorted unique labels.

    Examples
    --------
    >>> s = group_statistics([1.0, 2.0, 5.0], ["a", "a", "b"])
    >>> s["a"]["mean"], s["b"]["n"]
    (1.5, 1)
    """
    v = np.asarray(values, dtype=float).ravel()
    lab = np.asarray(labels).ravel()
    if lab.shape != v.shape:
        raise ValueError(f"labels has {lab.size} entries for {v.size} values")
    e = None if errors is None else np.asarray(errors, dtype=float).ravel()
    if groups is None:
        groups = sorted(set(lab.tolist()))
    return {g: describe(v[lab == g], errors=None if e is None else e[lab == g])
            for g in groups}


def layer_statistics(values, surface_distance_uc, *, errors=None, max_layer=None):
    """:func:`describe` per surface layer (0 = outermost unit cell).

    ``max_layer`` pools every deeper layer into ``max_layer``.

    Examples
    --------
    >>> s = layer_statistics([8.0, 9.0, 11.0, 11.5], [0, 0, 1, 4], max_layer=1)
    >>> sorted(s), s[1]["mean"]
    ([0, 1], 11.25)
    """
    d = np.asarray(surface_distance_uc).ravel()
    if not np.issubdtype(d.dtype, np.integer):
        fin = np.isfinite(d.astype(float))
        d = np.where(fin, d.astype(float), -1).astype(np.int64)
    if max_layer is not None:
        d = np.where(d > max_layer, max_layer, d)
    layers = sorted(int(k) for k in np.unique(d) if k >= 0)
    return group_statistics(values, d, errors=errors, groups=layers)


def histogram(values, *, bins=30, range=None, density=False):
    """Histogram of the finite values: ``(counts, edges)`` as in :func:`numpy.histogram`.

    Examples
    --------
    >>> c, e = histogram([0.1, 0.2, 0.9, np.nan], bins=2, range=(0, 1))
    >>> c.tolist(), e.tolist()
    ([2, 1], [0.0, 0.5, 1.0])
    """
    v = np.asarray(values, dtype=float).ravel()
    return np.histogram(v[np.isfinite(v)], bins=bins, range=range, density=density)


def region_histograms(values, region, *, bins=30, range=None, density=False,
                      regions=("core", "shell")):
    """Histograms per region on shared bin edges: ``{region: counts, "edges": edges}``.

    Examples
    --------
    >>> h = region_histograms([9.0, 11.0, 11.2], ["shell", "core", "core"], bins=2,
    ...                       range=(8, 12))
    >>> h["core"].tolist(), h["shell"].tolist()
    ([0, 2], [1, 0])
    """
    v = np.asarray(values, dtype=float).ravel()
    reg = np.asarray(region).astype(str).ravel()
    fin = np.isfinite(v)
    if range is None:
        sel = fin & np.isin(reg, regions)
        range = (v[sel].min(), v[sel].max()) if sel.any() else (0.0, 1.0)
        if range[0] == range[1]:
            range = (range[0] - 0.5, range[1] + 0.5)
    edges = np.histogram_bin_edges(v[fin], bins=bins, range=range)
    out = {r: np.histogram(v[fin & (reg == r)], bins=edges, density=density)[0]
           for r in regions}
    out["edges"] = edges
    return out


def _regions(df, shell_width_uc):
    """Region per octahedron: edge_excluded kept, core/shell from the surface distance."""
    n = len(df) if hasattr(df, "columns") else len(np.asarray(next(iter(df.values()))))
    region = (np.asarray(df["region"]).astype(str) if "region" in df
              else np.full(n, "core", dtype=object).astype(str))
    if "surface_distance_uc" in df:
        d = np.asarray(df["surface_distance_uc"], dtype=float)
        region = np.where(region == "edge_excluded", "edge_excluded",
                          np.where(d < shell_width_uc, "shell", "core"))
    elif "region" not in df:
        raise ValueError("octahedra table needs a 'region' or 'surface_distance_uc' column")
    return region


def summarize_octahedra(df, *, shell_width_uc=3, metrics=SUMMARY_METRICS):
    """Core/shell numbers of an octahedra table (what ``pvq analyze`` prints).

    The shell is the outer ``shell_width_uc`` unit cells (``surface_distance_uc <
    shell_width_uc``), the core the rest; ``edge_excluded`` octahedra are left out.

    Parameters
    ----------
    df : pandas.DataFrame or mapping of arrays
        Octahedra table (:data:`pvq_dask.kernels.schema.OCTAHEDRA_COLUMNS`).
    shell_width_uc : int
    metrics : sequence of str
        Columns to summarise; their ``*_err_*`` columns, where present, add the weighted
        statistics.

    Returns
    -------
    dict
        ``n_octahedra, n_core, n_shell, n_edge_excluded, shell_width_uc``, ``metrics``:
        ``{metric: {"core": describe, "shell": describe, "all": describe,
        "core_minus_shell": {"diff", "sem"}}}`` and ``layers``: ``{metric: {layer:
        describe}}`` per surface layer (when ``surface_distance_uc`` is present).

    Examples
    --------
    >>> df = {"theta3_deg": np.array([9.0, 9.2, 11.0, 11.4, 3.0]),
    ...       "surface_distance_uc": np.array([0, 2, 3, 5, 0]),
    ...       "region": np.array(["shell", "shell", "core", "core", "edge_excluded"])}
    >>> s = summarize_octahedra(df, metrics=["theta3_deg"])
    >>> s["n_core"], s["n_shell"], s["metrics"]["theta3_deg"]["core"]["mean"]
    (2, 2, 11.2)
    >>> round(s["metrics"]["theta3_deg"]["core_minus_shell"]["diff"], 6)
    2.1
    """
    if shell_width_uc < 0:
        raise ValueError(f"shell_width_uc must be >= 0, got {shell_width_uc}")
    region = _regions(df, shell_width_uc)
    out = {
        "n_octahedra": int(len(region)),
        "n_core": int((region == "core").sum()),
        "n_shell": int((region == "shell").sum()),
        "n_edge_excluded": int((region == "edge_excluded").sum()),
        "shell_width_uc": int(shell_width_uc),
        "metrics": {},
        "layers": {},
    }
    used = region != "edge_excluded"
    for name in metrics:
        if name not in df:
            continue
        v = np.asarray(df[name], dtype=float)
        stem, _, unit = name.rpartition("_")
        err_col = f"{stem}_err_{unit}"
        e = np.asarray(df[err_col], dtype=float) if err_col in df else None
        per = group_statistics(v, region, errors=e, groups=("core", "shell"))
        per["all"] = describe(v[used], errors=None if e is None else e[used])
        c, s = per["core"], per["shell"]
        per["core_minus_shell"] = {"diff": c["mean"] - s["mean"],
                                   "sem": float(np.hypot(c["sem"], s["sem"]))}
        out["metrics"][name] = per
        if "surface_distance_uc" in df:
            out["layers"][name] = layer_statistics(
                v[used], np.asarray(df["surface_distance_uc"])[used],
                errors=None if e is None else e[used])
    return out


def _fmt(d, digits):
    if not d["n"]:
        return "n=0"
    sem = "nan" if not np.isfinite(d["sem"]) else f"{d['sem']:.{digits}f}"
    return f"{d['mean']:.{digits}f} +- {sem} (n={d['n']})"


def format_summary(summary):
    """Human-readable lines of :func:`summarize_octahedra`'s result.

    Examples
    --------
    >>> df = {"theta3_deg": np.array([9.0, 9.2, 11.0, 11.4]),
    ...       "surface_distance_uc": np.array([0, 2, 3, 5])}
    >>> print(format_summary(summarize_octahedra(df, metrics=["theta3_deg"])))
    octahedra: 4 (core 2, shell 2, edge-excluded 0; shell = outer 3 unit cells)
    theta3_deg: core 11.200 +- 0.200 (n=2) | shell 9.100 +- 0.100 (n=2) | core-shell 2.100 +- 0.224
    """
    s = summary
    lines = [f"octahedra: {s['n_octahedra']} (core {s['n_core']}, shell {s['n_shell']}, "
             f"edge-excluded {s['n_edge_excluded']}; shell = outer {s['shell_width_uc']} "
             f"unit cells)"]
    for name, per in s["metrics"].items():
        digits = 3 if name.endswith("_deg") else 4
        d = per["core_minus_shell"]
        lines.append(f"{name}: core {_fmt(per['core'], digits)} | shell "
                     f"{_fmt(per['shell'], digits)} | core-shell {d['diff']:.{digits}f} +- "
                     f"{d['sem']:.{digits}f}")
    return "\n".join(lines)
