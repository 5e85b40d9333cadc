"""pvq_dask: quantitative PbX6 octahedral-network maps from STEM images of perovskite dots.

Layers (imports run one way, top to bottom):

- ``pvq_dask.cli``, ``pvq_dask.bench``: commands and benchmarks;
- ``pvq_dask.parallel`` (Dask: tiling, scheduling, stitching), ``pvq_dask.report``;
- ``pvq_dask.store`` (readers, Zarr/Parquet result store);
- ``pvq_dask.kernels``: pure numpy/scipy/numba/torch functions on arrays.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "open_result"]


def open_result(path):
    """Open a ``RESULT.pvq`` directory; see :func:`pvq_dask.store.open_result`."""
    from pvq_dask.store import open_result as _open

    return _open(path)
