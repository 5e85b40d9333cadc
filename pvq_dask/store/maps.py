"""Metric maps as an xarray Dataset (dims ``t, v, u``, coordinates in nm, CF attributes).

The kernels (:func:`pvq_dask.kernels.maps.metric_maps`) return a *map dict* per frame; this
module turns one or several of them into the Dataset stored in ``store.zarr/maps`` (see
:meth:`pvq_dask.store.ResultStore.write_maps`) and back.

Variables: ``theta1_deg .. theta3_deg``, ``L1_nm``, ``L2_nm``, ``C1_nm .. C3_nm``, ``P1_nm``,
``P2_nm`` (float32), their standard uncertainties ``theta1_err_deg`` ... ``P2_err_nm``
(float32) and the counts ``count`` (octahedra) and ``cell_count`` (cells) (int32).
"""

import numpy as np
import xarray as xr

from pvq_dask.kernels.maps import CELL_MAP_METRICS, OCTAHEDRA_MAP_METRICS, err_name

__all__ = ["MAP_VARIABLES", "variable_attrs", "maps_to_dataset", "empty_maps_dataset",
           "dataset_to_maps"]

_LONG_NAMES = {
    "theta1": "octahedral tilt theta1 (horizontal, mean of phi1 and phi2)",
    "theta2": "octahedral tilt theta2 (vertical, mean of phi3 and phi4)",
    "theta3": "octahedral tilt theta3 (mean of theta1 and theta2)",
    "L1": "X-Pb-X length L1 (horizontal, sigma1 + sigma2)",
    "L2": "X-Pb-X length L2 (vertical, sigma3 + sigma4)",
    "C1": "Cs-Cs spacing C1 (along u)",
    "C2": "Cs-Cs spacing C2 (along v)",
    "C3": "Cs-Cs spacing C3 (mean of C1 and C2)",
    "P1": "Pb-Pb spacing P1 (along u)",
    "P2": "Pb-Pb spacing P2 (along v)",
}
_UNITS = {"deg": "degree", "nm": "nm"}

#: Metric variables of the maps Dataset, in order.
MAP_VARIABLES = OCTAHEDRA_MAP_METRICS + CELL_MAP_METRICS
_COUNTS = {"count": "number of octahedra contributing to the grid point",
           "cell_count": "number of cells contributing to the grid point"}


def variable_attrs(name):
    """CF attributes (``units``, ``long_name``, ...) of a maps variable.

    Examples
    --------
    >>> variable_attrs("theta3_deg")["units"], variable_attrs("C1_err_nm")["long_name"]
    ('degree', 'standard uncertainty of Cs-Cs spacing C1 (along u)')
    """
    if name in _COUNTS:
        return {"units": "1", "long_name": _COUNTS[name]}
    stem, _, unit = name.rpartition("_")
    is_err = stem.endswith("_err")
    base = stem[:-4] if is_err else stem
    if base not in _LONG_NAMES or unit not in _UNITS:
        raise ValueError(f"unknown maps variable {name!r}")
    if is_err:
        return {"units": _UNITS[unit],
                "long_name": f"standard uncertainty of {_LONG_NAMES[base]}"}
    return {"units": _UNITS[unit], "long_name": _LONG_NAMES[base],
            "ancillary_variables": err_name(name)}


def _coords(u_nm, v_nm, t):
    return {
        "t": ("t", np.asarray(t, dtype=np.int64), {"long_name": "frame index", "units": "1"}),
        "v": ("v", np.asarray(v_nm, dtype=np.float64),
              {"units": "nm", "long_name": "position along image y (rows)", "axis": "Y"}),
        "u": ("u", np.asarray(u_nm, dtype=np.float64),
              {"units": "nm", "long_name": "position along image x (columns)", "axis": "X"}),
    }


def _all_names():
    names = []
    for m in MAP_VARIABLES:
        names += [m, err_name(m)]
    return names + list(_COUNTS)


def maps_to_dataset(maps, *, t=None, attrs=None):
    """Dataset (t, v, u) from one map dict or a sequence of them (one per frame).

    Parameters
    ----------
    maps : dict or sequence of dict
        Map dicts of :func:`pvq_dask.kernels.maps.metric_maps`, all on the same grid.
        Metrics a dict lacks (e.g. cell metrics without a cells table) are NaN / 0.
    t : array_like of int, optional
        Frame index of each map dict; default ``0 .. n-1``.
    attrs : dict, optional
        Extra Dataset attributes (the map dict's own ``attrs`` are included).

    Examples
    --------
    >>> u = v = np.arange(3) * 0.1
    >>> m = {"u_nm": u, "v_nm": v, "theta3_deg": np.full((3, 3), 9.5),
    ...      "count": np.ones((3, 3), np.int32)}
    >>> ds = maps_to_dataset(m, t=[4])
    >>> ds["theta3_deg"].dims, ds["theta3_deg"].attrs["units"], int(ds.t[0])
    (('t', 'v', 'u'), 'degree', 4)
    """
    seq = [maps] if isinstance(maps, dict) else list(maps)
    if not seq:
        raise ValueError("maps_to_dataset needs at least one map dict")
    u_nm = np.asarray(seq[0]["u_nm"], float)
    v_nm = np.asarray(seq[0]["v_nm"], float)
    for k, m in enumerate(seq[1:], 1):
        if not (np.array_equal(m["u_nm"], u_nm) and np.array_equal(m["v_nm"], v_nm)):
            raise ValueError(f"map dict {k} is on a different grid than map dict 0")
    t = np.arange(len(seq)) if t is None else np.atleast_1d(np.asarray(t, np.int64))
    if len(t) != len(seq):
        raise ValueError(f"got {len(t)} frame indices for {len(seq)} map dicts")
    shape = (len(v_nm), len(u_nm))
    data = {}
    for name in _all_names():
        is_count = name in _COUNTS
        stack = []
        for m in seq:
            if name in m:
                a = np.asarray(m[name])
                if a.shape != shape:
                    raise ValueError(f"map {name!r} has shape {a.shape}, grid is {shape}")
            else:
                a = np.zeros(shape) if is_count else np.full(shape, np.nan)
            stack.append(a.astype(np.int32 if is_count else np.float32))
        data[name] = (("t", "v", "u"), np.stack(stack), variable_attrs(name))
    ds_attrs = {"Conventions": "CF-1.10", "title": "pvq_dask metric maps"}
    ds_attrs.update({k: _plain(v) for k, v in dict(seq[0].get("attrs", {})).items()})
    ds_attrs.update(attrs or {})
    return xr.Dataset(data, coords=_coords(u_nm, v_nm, t), attrs=ds_attrs)


def _plain(value):
    """Attribute values that Zarr's JSON attributes accept."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None:
        return "none"
    return value


def empty_maps_dataset(u_nm, v_nm, n_frames, *, attrs=None):
    """All-NaN (counts 0) maps for ``n_frames`` frames: the template written once before
    frames are filled in one by one (:meth:`ResultStore.write_maps` with ``t``).

    Examples
    --------
    >>> ds = empty_maps_dataset(np.arange(4) * 0.1, np.arange(2) * 0.1, 3)
    >>> dict(ds.sizes), bool(ds["P1_nm"].isnull().all())
    ({'t': 3, 'v': 2, 'u': 4}, True)
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    shape = (int(n_frames), len(v_nm), len(u_nm))
    data = {}
    for name in _all_names():
        if name in _COUNTS:
            data[name] = (("t", "v", "u"), np.zeros(shape, np.int32), variable_attrs(name))
        else:
            data[name] = (("t", "v", "u"), np.full(shape, np.nan, np.float32),
                          variable_attrs(name))
    ds_attrs = {"Conventions": "CF-1.10", "title": "pvq_dask metric maps"}
    ds_attrs.update(attrs or {})
    return xr.Dataset(data, coords=_coords(u_nm, v_nm, np.arange(n_frames)), attrs=ds_attrs)


def dataset_to_maps(ds, t=0):
    """The map dict (numpy arrays) of frame ``t`` (a ``t`` coordinate value) of a Dataset.

    Examples
    --------
    >>> ds = empty_maps_dataset(np.arange(4) * 0.1, np.arange(2) * 0.1, 3)
    >>> m = dataset_to_maps(ds, t=2)
    >>> m["theta3_deg"].shape, m["u_nm"].tolist()[:2]
    ((2, 4), [0.0, 0.1])
    """
    if "t" in ds.dims:
        if t not in ds["t"].values:
            raise ValueError(f"maps have no frame t={t}; frames: {ds['t'].values.tolist()}")
        ds = ds.sel(t=t)
    out = {"u_nm": np.asarray(ds["u"].values, float), "v_nm": np.asarray(ds["v"].values, float)}
    for name in ds.data_vars:
        out[name] = np.asarray(ds[name].values)
    out["attrs"] = dict(ds.attrs)
    return out
