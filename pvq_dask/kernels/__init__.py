"""Pure array kernels: numpy/scipy/numba/torch only; no dask, zarr or xarray."""
