"""Distance of each lattice site from the particle surface, in unit cells along the lattice."""

import numpy as np
from scipy import ndimage as ndi

__all__ = ["surface_distance_uc"]


def surface_distance_uc(ij):
    """Unit cells between each site and the particle surface (0 = outermost layer).

    The sites' lattice indices are painted on a grid, interior holes (missed columns) are
    filled so they do not count as surface, and the chessboard distance to the nearest
    empty grid cell, minus one, is returned. Counting along the lattice (not in pixels)
    keeps the shell width in unit cells whatever the pixel size or rotation.

    Parameters
    ----------
    ij : ndarray of int, shape (M, 2)

    Returns
    -------
    ndarray of int, shape (M,)

    Examples
    --------
    >>> ii, jj = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    >>> d = surface_distance_uc(np.c_[ii.ravel(), jj.ravel()])
    >>> d.reshape(5, 5)[2].tolist()
    [0, 1, 2, 1, 0]
    """
    ij = np.asarray(ij, dtype=np.int64).reshape(-1, 2)
    if len(ij) == 0:
        return np.zeros(0, dtype=np.int64)
    lo = ij.min(axis=0) - 1
    shape = ij.max(axis=0) - lo + 2
    grid = np.zeros(tuple(shape), dtype=bool)
    grid[ij[:, 0] - lo[0], ij[:, 1] - lo[1]] = True
    grid = ndi.binary_fill_holes(grid)
    dist = ndi.distance_transform_cdt(grid, metric="chessboard")
    return (dist[ij[:, 0] - lo[0], ij[:, 1] - lo[1]] - 1).astype(np.int64)
