"""Dask layer: tiling with halos, per-frame tasks, GPU placement, stitching."""
