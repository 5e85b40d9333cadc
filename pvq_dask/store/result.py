"""``open_result``: a result directory as xarray images, pandas tables and status flags."""

from functools import cached_property
from pathlib import Path

import numpy as np

from pvq_dask.store.zarr_store import GROUP_STAGE, IMAGE_GROUPS, ResultStore

__all__ = ["Result", "open_result"]


class Result:
    """Read-only view of a ``RESULT.pvq`` directory (tables and images load lazily).

    Attributes
    ----------
    images : xarray.Dataset
        Image groups present (``raw``, ``absf``, ``denoised``, ``denoised_std``), dims
        (t, y, x), coords ``t`` (frame index), ``y_nm``, ``x_nm``; dask-backed.
    atoms, octahedra, cells : pandas.DataFrame
        Empty with the schema columns when not yet written.
    maps : xarray.Dataset or None
    status : dict
        ``{stage: bool array (t,)}``.
    provenance : dict
    pixel_size_nm : float
    store : ResultStore
        The underlying store, opened read-only.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.store = ResultStore.open(self.path, mode="r")

    def __repr__(self):
        done = ", ".join(f"{k} {int(v.sum())}/{len(v)}" for k, v in self.status.items() if v.any())
        return (f"<pvq Result {str(self.path)!r}: {self.n_frames} frame(s) of {self.shape} px at "
                f"{self.pixel_size_nm:.6g} nm/px; done: {done or 'nothing'}>")

    @property
    def n_frames(self):
        return self.store.n_frames

    @property
    def shape(self):
        return self.store.shape

    @property
    def pixel_size_nm(self):
        return self.store.pixel_size_nm

    @property
    def provenance(self):
        return self.store.provenance

    @property
    def status(self):
        return self.store.status()

    @cached_property
    def images(self):
        import xarray as xr

        out = {}
        for group in IMAGE_GROUPS:
            if not self.store.has_frames(group):
                continue
            ds = xr.open_zarr(self.store.zarr_path, group=group, zarr_format=3,
                              consolidated=False)
            for name in IMAGE_GROUPS[group]:
                var = group if name == "0" else f"{group}_{name}"
                out[var] = ds[name].assign_attrs(stage=GROUP_STAGE[group])
        h, w = self.shape
        ps = self.pixel_size_nm
        coords = {"t": np.arange(self.n_frames), "y_nm": ("y", np.arange(h) * ps),
                  "x_nm": ("x", np.arange(w) * ps)}
        out = {k: v.drop_vars(["y_nm", "x_nm"], errors="ignore") for k, v in out.items()}
        return xr.Dataset(out, coords=coords, attrs={"pixel_size_nm": ps,
                                                     "source": str(self.path)})

    def table(self, name, frames=None):
        """Any table by name (e.g. ``'bonds'``), optionally for some frames only."""
        return self.store.read_table(name, frames)

    @cached_property
    def atoms(self):
        return self.table("atoms")

    @cached_property
    def octahedra(self):
        return self.table("octahedra")

    @cached_property
    def cells(self):
        return self.table("cells")

    @cached_property
    def maps(self):
        return self.store.read_maps()


def open_result(path):
    """Open a ``RESULT.pvq`` directory written by ``pvq ingest``/``pvq analyze``.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "r.pvq")
    >>> s = ResultStore.create(path, n_frames=1, shape=(4, 4), pixel_size_nm=0.02)
    >>> s.write_frame("raw", 0, np.arange(16.0).reshape(4, 4))
    >>> r = open_result(path)
    >>> r.images.raw.dims, float(r.images.x_nm[-1]), len(r.atoms)
    (('t', 'y', 'x'), 0.06, 0)
    """
    return Result(path)
