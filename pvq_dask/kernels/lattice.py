"""Pseudo-cubic lattice basis of a perovskite projection from column positions."""

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["estimate_basis", "merge_duplicates"]

_AXIS_TOL_RAD = np.deg2rad(15.0)   # neighbour vectors this close to an axis (sparse mode)


def estimate_basis(xy, *, a_px=None, sparse=False):
    """Lattice vectors (u, v) in px from column positions.

    In the [001] projection every column (Pb, X or Cs) has four nearest neighbours at
    about a_pc/2 along the pseudo-cubic axes, so the folded directions of nearest-neighbour
    vectors give the lattice orientation and their median length a_pc/2. ``u`` is the axis
    closest to the image x axis, ``v`` is ``u`` turned by +90 degrees (towards +y).

    Parameters
    ----------
    xy : ndarray, shape (N, 2)
        Column positions (x, y), N >= 5.
    a_px : float, optional
        Known pseudo-cubic spacing in px; estimated when omitted.
    sparse : bool
        For positions with many columns missing (e.g. the strong maxima of a small
        low-dose dot): the a_pc/2 family is then the one of each column's nearest neighbour
        (the 2nd-4th are often diagonal or next-nearest sites, and a median over all four
        mixed the families), and lattice direction and length come from all neighbour
        vectors within 15 deg of its axes.

    Returns
    -------
    u, v : ndarray, shape (2,)

    Examples
    --------
    >>> g = np.mgrid[0:8, 0:8].reshape(2, -1).T * 10.0
    >>> u, v = estimate_basis(g)
    >>> (np.round(u, 6) + 0.0).tolist(), (np.round(v, 6) + 0.0).tolist()
    ([20.0, 0.0], [0.0, 20.0])
    >>> half = g[np.random.default_rng(0).random(len(g)) < 0.5]   # half the columns
    >>> (np.round(estimate_basis(half)[0], 6) + 0.0).tolist()         # the diagonal family
    [20.0, 20.0]
    >>> (np.round(estimate_basis(half, sparse=True)[0], 6) + 0.0).tolist()
    [20.0, 0.0]
    """
    xy = np.asarray(xy, dtype=float)
    if len(xy) < 5:
        raise ValueError(f"need at least 5 columns to estimate a lattice, got {len(xy)}")
    dist, idx = cKDTree(xy).query(xy, k=5)
    vec = xy[idx[:, 1:]] - xy[:, None, :]
    d = dist[:, 1:].ravel()
    vec = vec.reshape(-1, 2)
    # Duplicate detections of one column give tiny distances: drop them before the median.
    ref = dist[:, 1] if sparse else d
    med = np.median(ref)
    for _ in range(3):
        med = np.median(ref[ref > 0.5 * med]) if np.any(ref > 0.5 * med) else med
    keep = np.abs(d - med) < 0.25 * med
    if sparse:
        first = vec.reshape(len(xy), 4, 2)[:, 0][np.abs(dist[:, 1] - med) < 0.25 * med]
        phi = np.angle(np.exp(4j * np.arctan2(first[:, 1], first[:, 0])).mean()) / 4.0
        off_axis = np.angle(np.exp(4j * (np.arctan2(vec[:, 1], vec[:, 0]) - phi))) / 4.0
        keep = (np.abs(off_axis) < _AXIS_TOL_RAD) & (d > 0.6 * med) & (d < 1.5 * med)
    ang = np.arctan2(vec[keep, 1], vec[keep, 0])
    phi = np.angle(np.exp(4j * ang).mean()) / 4.0      # in (-45, 45] degrees
    a = 2.0 * np.median(d[keep]) if a_px is None else float(a_px)
    u = a * np.array([np.cos(phi), np.sin(phi)])
    v = np.array([-u[1], u[0]])
    return u, v


def merge_duplicates(xy, strength, *, min_separation_px):
    """Keep one point (the strongest) of every group closer than ``min_separation_px``.

    Two fits that converged onto one column, or two maxima of one noisy column, are one
    column. Returns a boolean mask of the points to keep.

    Examples
    --------
    >>> merge_duplicates(np.array([[0.0, 0.0], [1.0, 0.0], [20.0, 0.0]]),
    ...                  np.array([1.0, 2.0, 1.0]), min_separation_px=3.0).tolist()
    [False, True, True]
    """
    xy = np.asarray(xy, float)
    s = np.asarray(strength, float)
    keep = np.isfinite(xy).all(axis=1)
    if keep.sum() < 2:
        return keep
    idx = np.flatnonzero(keep)
    pairs = cKDTree(xy[idx]).query_pairs(min_separation_px, output_type="ndarray")
    for a, b in pairs[np.argsort(-np.maximum(s[idx[pairs[:, 0]]], s[idx[pairs[:, 1]]]))]:
        ia, ib = idx[a], idx[b]
        if keep[ia] and keep[ib]:
            keep[ib if s[ia] >= s[ib] else ia] = False
    return keep
