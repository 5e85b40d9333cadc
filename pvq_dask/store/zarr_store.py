"""The result store ``RESULT.pvq/``: Zarr v3 images and status flags, Parquet tables.

Layout (design.md section 4)::

    RESULT.pvq/
      store.zarr/            Zarr v3, zstd; root attrs "pvq" (layout facts) and "provenance"
        raw/ absf/ denoised/ OME-Zarr 0.5 image groups: array "0" (t, y, x) float32, chunks
                             (1, 512, 512) inside one shard per frame; y_nm, x_nm coords;
                             denoised/ also holds "std" (Monte-Carlo standard deviation)
        status/done_<stage>  bool (t,), chunk (1,): one flag per frame and stage
        maps/                xarray Dataset (t, v, u), written by :meth:`ResultStore.write_maps`
      tables/<name>/frame=<t>/part.parquet

Concurrency: every frame of an image array is its own shard and every status flag its
own chunk, so processes writing different frames never share a file. All groups and
arrays are created once, by :meth:`ResultStore.create`; nothing rewrites attributes
per frame.
"""

import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from pvq_dask.store import tables as _tables
from pvq_dask.store._errors import input_error
from pvq_dask.store.provenance import to_jsonable

__all__ = ["ResultStore", "STAGES", "IMAGE_GROUPS", "GROUP_STAGE", "FORMAT_VERSION"]

FORMAT_VERSION = 1
#: Processing stages with a per-frame done flag, in pipeline order.
STAGES = ("ingest", "absf", "denoise", "atoms", "network", "maps")
#: Image groups and the arrays each holds ("0" is the OME-Zarr full-resolution level).
IMAGE_GROUPS = {"raw": ("0",), "absf": ("0",), "denoised": ("0", "std")}
#: Stage whose done flag says a frame of the group has been written.
GROUP_STAGE = {"raw": "ingest", "absf": "absf", "denoised": "denoise"}
_CHUNK_PX = 512
_ZSTD_LEVEL = 3


def _ome_attrs(name, pixel_size_nm):
    axes = [{"name": "t", "type": "time"},
            {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"}]
    scale = [{"type": "scale", "scale": [1.0, pixel_size_nm, pixel_size_nm]}]
    return {"ome": {"version": "0.5", "multiscales": [
        {"name": name, "axes": axes, "datasets": [{"path": "0",
                                                   "coordinateTransformations": scale}]}]}}


def _create_image_group(root, name, n_frames, shape, pixel_size_nm):
    h, w = shape
    chunks = (1, min(_CHUNK_PX, h), min(_CHUNK_PX, w))
    shards = (1, -(-h // chunks[1]) * chunks[1], -(-w // chunks[2]) * chunks[2])
    group = root.create_group(name, attributes=_ome_attrs(name, pixel_size_nm))
    for array in IMAGE_GROUPS[name]:
        long_name = f"{name} frames" if array == "0" else f"{name} standard deviation"
        group.create_array(array, shape=(n_frames, h, w), dtype="float32", chunks=chunks,
                           shards=shards, compressors=ZstdCodec(level=_ZSTD_LEVEL),
                           fill_value=np.nan, dimension_names=("t", "y", "x"),
                           attributes={"coordinates": "y_nm x_nm", "units": "counts",
                                       "long_name": long_name})
    for axis, n in (("y", h), ("x", w)):
        coord = group.create_array(f"{axis}_nm", shape=(n,), dtype="float64", chunks=(n,),
                                   dimension_names=(axis,),
                                   attributes={"units": "nm", "long_name": f"{axis} position"})
        coord[:] = np.arange(n) * pixel_size_nm


class ResultStore:
    """Read and write one ``RESULT.pvq`` directory (see the module docstring for the layout).

    Use :meth:`create` or :meth:`open`; instances pickle as (path, mode), so Dask tasks
    can receive one and reopen it in their worker.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "r.pvq")
    >>> s = ResultStore.create(path, n_frames=2, shape=(4, 6), pixel_size_nm=0.0168)
    >>> s.write_frame("raw", 1, np.ones((4, 6)))
    >>> s.set_done("ingest", 1)
    >>> s.read_frame("raw", 1).sum(), s.done("ingest").tolist()
    (np.float32(24.0), [False, True])
    """

    def __init__(self, path, root, mode):
        self.path = Path(path)
        self.mode = mode
        self._root = root
        meta = dict(root.attrs).get("pvq")
        if not isinstance(meta, dict) or "n_frames" not in meta:
            raise input_error(self.path, "not a pvq result store (no 'pvq' root attributes)")
        self._meta = meta

    # -- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, path, *, n_frames, shape, pixel_size_nm, provenance=None, overwrite=False):
        """Create an empty store for ``n_frames`` frames of ``shape`` (y, x) pixels.

        ``overwrite=True`` replaces an existing result store (never another folder).
        """
        path = Path(path)
        n_frames = int(n_frames)
        shape = tuple(int(v) for v in shape)
        if n_frames < 1 or len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"{path}: need n_frames >= 1 and a 2-D shape, got {n_frames}, "
                             f"{shape}")
        if not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
            raise ValueError(f"{path}: pixel_size_nm must be > 0, got {pixel_size_nm}")
        if path.exists():
            if not overwrite:
                raise ValueError(f"{path}: already exists (use overwrite)")
            if not (path / "store.zarr").is_dir() and any(path.iterdir()):
                raise ValueError(f"{path}: exists and is not a pvq result; refusing to replace it")
            shutil.rmtree(path)
        path.mkdir(parents=True)
        (path / "tables").mkdir()
        root = zarr.open_group(path / "store.zarr", mode="w", zarr_format=3)
        root.attrs.update({
            "pvq": {"format_version": FORMAT_VERSION, "n_frames": n_frames,
                    "shape": list(shape), "pixel_size_nm": float(pixel_size_nm),
                    "stages": list(STAGES), "image_groups": list(IMAGE_GROUPS)},
            "provenance": to_jsonable(provenance or {}),
        })
        for name in IMAGE_GROUPS:
            _create_image_group(root, name, n_frames, shape, float(pixel_size_nm))
        status = root.create_group("status")
        for stage in STAGES:
            status.create_array(f"done_{stage}", shape=(n_frames,), dtype="bool", chunks=(1,),
                                fill_value=False, dimension_names=("t",))
        return cls(path, root, "r+")

    @classmethod
    def open(cls, path, mode="r"):
        """Open an existing store read-only (``'r'``) or for writing frames (``'r+'``)."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        path = Path(path)
        if not (path / "store.zarr").is_dir():
            reason = "no such result" if not path.exists() else "not a pvq result (no store.zarr)"
            raise input_error(path, reason)
        return cls(path, zarr.open_group(path / "store.zarr", mode=mode, zarr_format=3), mode)

    def __getstate__(self):
        return {"path": str(self.path), "mode": self.mode}

    def __setstate__(self, state):
        other = type(self).open(state["path"], state["mode"])
        self.__dict__.update(other.__dict__)

    def __repr__(self):
        return (f"ResultStore({str(self.path)!r}, mode={self.mode!r}, n_frames={self.n_frames}, "
                f"shape={self.shape}, pixel_size_nm={self.pixel_size_nm})")

    # -- facts ----------------------------------------------------------------------------
    @property
    def n_frames(self):
        return int(self._meta["n_frames"])

    @property
    def shape(self):
        """Frame shape (y, x)."""
        return tuple(self._meta["shape"])

    @property
    def pixel_size_nm(self):
        return float(self._meta["pixel_size_nm"])

    @property
    def attrs(self):
        """Root attributes (a copy): ``pvq`` layout facts and ``provenance``."""
        return to_jsonable(dict(self._root.attrs))

    @property
    def provenance(self):
        return self.attrs.get("provenance", {})

    @property
    def zarr_path(self):
        return self.path / "store.zarr"

    @property
    def tables_path(self):
        return self.path / "tables"

    # -- checks ---------------------------------------------------------------------------
    def _writable(self):
        if self.mode != "r+":
            raise ValueError(f"{self.path}: opened read-only; use ResultStore.open(path, 'r+')")

    def _frame(self, t):
        if not isinstance(t, int | np.integer) or not 0 <= int(t) < self.n_frames:
            raise ValueError(f"{self.path}: frame {t!r} out of range 0..{self.n_frames - 1}")
        return int(t)

    def _array(self, group, name):
        if group not in IMAGE_GROUPS:
            raise ValueError(f"unknown image group {group!r}; choose one of {list(IMAGE_GROUPS)}")
        name = "0" if name is None else name
        if name not in IMAGE_GROUPS[group]:
            raise ValueError(f"image group {group!r} has no array {name!r} "
                             f"(it has {list(IMAGE_GROUPS[group])})")
        return self._root[f"{group}/{name}"]

    # -- images ---------------------------------------------------------------------------
    def write_frame(self, group, t, array, *, name=None):
        """Write frame ``t`` of image group ``group`` (array ``name``, default the image)."""
        self._writable()
        t = self._frame(t)
        data = np.asarray(array)
        if data.shape != self.shape:
            raise ValueError(f"{self.path}: frame shape {data.shape} != store shape {self.shape}")
        self._array(group, name)[t] = data.astype(np.float32, copy=False)

    def read_frame(self, group, t, *, name=None):
        """Frame ``t`` of ``group`` as a float32 array (NaN where never written)."""
        return self._array(group, name)[self._frame(t)]

    def image_array(self, group, *, name=None):
        """The underlying ``zarr.Array`` (t, y, x) of an image group."""
        return self._array(group, name)

    def has_frames(self, group):
        """Whether any frame of ``group`` has been written."""
        if self.done(GROUP_STAGE[group]).any():
            return True
        return self._array(group, None).nchunks_initialized > 0

    # -- status ---------------------------------------------------------------------------
    def _status(self, stage):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose one of {list(STAGES)}")
        return self._root[f"status/done_{stage}"]

    def set_done(self, stage, t, value=True):
        """Mark frame ``t`` done (or not) for ``stage``; one chunk per flag, so it is safe
        from concurrent processes."""
        self._writable()
        self._status(stage)[self._frame(t)] = bool(value)

    def done(self, stage):
        """Bool array (t,) of frames done for ``stage``."""
        return np.asarray(self._status(stage)[:], dtype=bool)

    def status(self):
        """``{stage: bool array (t,)}`` for every stage."""
        return {stage: self.done(stage) for stage in STAGES}

    # -- tables ---------------------------------------------------------------------------
    def write_table(self, name, t, df):
        """Write ``df`` as frame ``t`` of table ``name`` (atomic, overwrites that frame)."""
        self._writable()
        return _tables.write_partition(self.tables_path, name, self._frame(t), df)

    def read_table(self, name, frames=None, *, columns=None):
        """Table ``name`` (all frames, or ``frames``) as one DataFrame ordered by frame."""
        return _tables.read_partitions(self.tables_path, name, frames, columns=columns)

    def table_rows(self, name):
        """``{frame: rows}`` of table ``name``."""
        return _tables.partition_rows(self.tables_path, name)

    def table_names(self):
        return _tables.table_names(self.tables_path)

    # -- maps -----------------------------------------------------------------------------
    def write_maps(self, ds, *, t=None):
        """Write the maps Dataset (dims t, v, u); with ``t``, write that one frame into
        maps already written whole (``ds`` then holds that frame only)."""
        self._writable()
        if "t" not in ds.dims and t is None:
            raise ValueError(f"maps Dataset needs a 't' dimension, got dims {tuple(ds.dims)}")
        if t is None:
            if ds.sizes["t"] != self.n_frames:
                raise ValueError(f"maps have {ds.sizes['t']} frames, store has {self.n_frames}")
            # One chunk per frame, so later per-frame region writes never share a file.
            encoding = {v: {"chunks": tuple(1 if d == "t" else ds.sizes[d] for d in ds[v].dims)}
                        for v in ds.data_vars if "t" in ds[v].dims}
            ds.to_zarr(self.zarr_path, group="maps", mode="w", zarr_format=3, consolidated=False,
                       encoding=encoding)
            return
        t = self._frame(t)
        if "maps" not in self._root:
            raise ValueError(f"{self.path}: write the whole maps Dataset once before frame {t}")
        if "t" not in ds.dims:
            ds = ds.expand_dims("t")
        ds = ds.drop_vars([v for v in ds.variables if v == "t" or "t" not in ds[v].dims])
        ds.to_zarr(self.zarr_path, group="maps", region={"t": slice(t, t + 1)}, mode="r+",
                   zarr_format=3, consolidated=False)

    def read_maps(self):
        """The maps Dataset (lazy), or None when no maps were written."""
        import xarray as xr

        if "maps" not in zarr.open_group(self.zarr_path, mode="r", zarr_format=3):
            return None
        return xr.open_zarr(self.zarr_path, group="maps", zarr_format=3, consolidated=False)
