"""Parquet tables of a result, one partition per frame, written atomically.

Layout: ``RESULT.pvq/tables/<name>/frame=<t>/part.parquet`` (zstd). A writer first
writes a hidden temporary file in the partition folder and renames it over
``part.parquet``: readers never see half a file, a retried task simply replaces its own
partition, and concurrent writers of different frames never touch the same file.
"""

import os
import re
import uuid
from pathlib import Path

import pandas as pd

from pvq_dask.kernels.schema import ATOM_COLUMNS, CELL_COLUMNS, OCTAHEDRA_COLUMNS

__all__ = ["TABLE_SCHEMAS", "empty_table", "write_partition", "read_partitions",
           "partition_rows", "table_names"]

#: Tables whose columns are fixed by ``pvq_dask.kernels.schema`` (others are free-form).
TABLE_SCHEMAS = {"atoms": ATOM_COLUMNS, "octahedra": OCTAHEDRA_COLUMNS, "cells": CELL_COLUMNS}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PART = "part.parquet"


def _check_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"table name {name!r} must be a Python-style identifier")
    return name


def empty_table(name):
    """An empty DataFrame with the schema columns of ``name`` (no columns if free-form).

    Examples
    --------
    >>> list(empty_table("cells").columns)[:3]
    ['frame', 'i', 'j']
    """
    return pd.DataFrame({c: pd.Series(dtype=object) for c in TABLE_SCHEMAS.get(name, ())})


def _frame_dir(root, name, t):
    return Path(root) / _check_name(name) / f"frame={int(t)}"


def write_partition(root, name, t, df):
    """Write ``df`` as frame ``t`` of table ``name`` under the tables folder ``root``.

    A missing ``frame`` column is added; an existing one must equal ``t``. Tables in
    :data:`TABLE_SCHEMAS` must hold all their schema columns (extra columns are kept).
    Returns the partition path.
    """
    t = int(t)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"table {name!r}: expected a pandas DataFrame, got {type(df).__name__}")
    df = df.reset_index(drop=True)
    if "frame" not in df.columns:
        df.insert(0, "frame", t)
    elif len(df) and not (df["frame"] == t).all():
        raise ValueError(f"table {name!r}: column 'frame' has values other than {t}")
    missing = [c for c in TABLE_SCHEMAS.get(name, ()) if c not in df.columns]
    if missing:
        raise ValueError(f"table {name!r}: missing schema columns {missing}")
    folder = _frame_dir(root, name, t)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{_PART}.{uuid.uuid4().hex}.tmp"
    try:
        df.to_parquet(tmp, engine="pyarrow", compression="zstd", index=False)
        os.replace(tmp, folder / _PART)
    finally:
        if tmp.exists():
            tmp.unlink()
    return folder / _PART


def _partitions(root, name):
    base = Path(root) / _check_name(name)
    if not base.is_dir():
        return {}
    out = {}
    for sub in base.iterdir():
        if sub.name.startswith("frame=") and (sub / _PART).is_file():
            try:
                out[int(sub.name[6:])] = sub / _PART
            except ValueError:
                continue
    return dict(sorted(out.items()))


def read_partitions(root, name, frames=None, *, columns=None):
    """Rows of table ``name`` for ``frames`` (all if None), ordered by frame.

    Returns :func:`empty_table` when nothing has been written.
    """
    parts = _partitions(root, name)
    if frames is not None:
        wanted = {int(t) for t in ([frames] if isinstance(frames, int) else frames)}
        parts = {t: p for t, p in parts.items() if t in wanted}
    dfs = [pd.read_parquet(p, engine="pyarrow", columns=columns) for p in parts.values()]
    dfs = [d for d in dfs if len(d)] or dfs[:1]
    if not dfs:
        empty = empty_table(name)
        return empty if columns is None else empty.reindex(columns=list(columns))
    return pd.concat(dfs, ignore_index=True) if len(dfs) > 1 else dfs[0]


def partition_rows(root, name):
    """``{frame: number of rows}`` of table ``name`` from Parquet footers (no data read)."""
    import pyarrow.parquet as pq

    return {t: pq.ParquetFile(p).metadata.num_rows for t, p in _partitions(root, name).items()}


def table_names(root):
    """Names of the tables present under the tables folder ``root``."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.match(p.name))
