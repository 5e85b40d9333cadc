"""Provenance of a result: package versions, git sha, config and input hashes.

Everything here is JSON-serialisable so it can live in the Zarr root attributes.
"""

import datetime as _dt
import hashlib
import json
import math
import platform
import subprocess
from importlib import metadata as _md
from pathlib import Path

import numpy as np

__all__ = ["to_jsonable", "file_sha256", "config_sha256", "package_versions", "git_sha",
           "collect_provenance"]

#: Distributions whose versions every result records (absent ones are skipped).
PACKAGES = ("pvq_dask", "numpy", "scipy", "dask", "distributed", "zarr", "xarray", "pandas",
            "pyarrow", "tifffile", "scikit-image", "numba", "torch", "rosettasciio", "bm3d")


def to_jsonable(obj):
    """A copy of ``obj`` made of dict/list/str/int/float/bool/None only.

    numpy scalars become Python numbers, bytes are decoded, small arrays become lists, NaN
    and infinities become None, anything else its ``str``.

    Examples
    --------
    >>> to_jsonable({"a": np.float32(1.5), "b": (1, b"x"), "c": float("nan")})
    {'a': 1.5, 'b': [1, 'x'], 'c': None}
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, bytes | np.bytes_):
        return bytes(obj).decode("utf-8", "replace").rstrip("\x00")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.size <= 64:
        return to_jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    return str(obj)


def file_sha256(path, *, block_bytes=1 << 20):
    """Hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(block_bytes):
            h.update(block)
    return h.hexdigest()


def config_sha256(config):
    """Hex SHA-256 of a config's canonical JSON (sorted keys, no spaces).

    Examples
    --------
    >>> config_sha256({"b": 1, "a": 2}) == config_sha256({"a": 2, "b": 1})
    True
    """
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def package_versions(names=PACKAGES):
    """``{distribution: version}`` for the installed ones among ``names`` (nothing imported)."""
    out = {}
    for name in names:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            continue
    return out


def git_sha(path=None):
    """``'<sha>'`` (``'<sha>-dirty'`` with local changes) of the git checkout holding ``path``.

    ``path`` defaults to this package's folder; None when it is not in a git checkout or
    git is missing.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def collect_provenance(*, config=None, inputs=(), reader=None, signal=None, vendor_metadata=None,
                       pixel_size_nm=None, hash_inputs=True):
    """The provenance record stored in a result's root attributes.

    Parameters
    ----------
    config : dict, optional
        Run configuration; stored with its :func:`config_sha256`.
    inputs : sequence of path
        Input files; each is recorded with its size and (``hash_inputs``) SHA-256.
    reader, signal : str, optional
        Reader and signal (detector) name used for the inputs.
    vendor_metadata : dict or list of dict, optional
        Provenance subset of the vendor metadata (see :func:`pvq_dask.store.read_image`).
    pixel_size_nm : float, optional

    Examples
    --------
    >>> p = collect_provenance(config={"sigma": 1}, pixel_size_nm=0.0168)
    >>> sorted(p)[:4], p["pixel_size_nm"]
    (['config', 'config_sha256', 'created_utc', 'git_sha'], 0.0168)
    """
    config = to_jsonable(config or {})
    files = []
    for path in inputs:
        p = Path(path)
        entry = {"path": str(p.resolve()), "name": p.name, "size_bytes": p.stat().st_size}
        if hash_inputs:
            entry["sha256"] = file_sha256(p)
        files.append(entry)
    return {
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": git_sha(),
        "config": config,
        "config_sha256": config_sha256(config),
        "inputs": files,
        "reader": reader,
        "signal": signal,
        "vendor_metadata": to_jsonable(vendor_metadata or {}),
        "pixel_size_nm": None if pixel_size_nm is None else float(pixel_size_nm),
    }
