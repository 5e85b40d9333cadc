"""Link octahedra across the frames of a series: one global lattice index per site.

Each frame's SOFS network numbers its Pb sites (i, j) from an arbitrary origin, and its
axes may come out permuted or reversed relative to another frame's. Frame ``t`` is mapped
onto the reference frame's numbering by an integer lattice transform

    (i, j)_ref = M (i, j)_t + offset

``M`` (a signed permutation: one of the 8 symmetries of the square lattice) comes from the
two frames' fitted lattice vectors; ``offset`` from a vote: every octahedron whose
drift-corrected Pb position lies within ``match_radius`` lattice spacings of a reference
octahedron votes for ``ij_ref - M ij_t``, and the most common vote wins. Octahedra that
appear or vanish at the edge simply do not vote; a frame with no octahedron near a
reference one falls back on the reference lattice extrapolated to its positions. The global
index is the reference frame's (i, j); ``track_id`` numbers the global sites.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from pvq_dask.kernels.register import correct_positions

__all__ = ["LatticeLink", "fit_lattice", "link_lattice", "track_octahedra", "TRACK_COLUMNS"]

#: Columns of the tracks table (x_ref_px, y_ref_px: drift-corrected Pb position).
TRACK_COLUMNS = ("frame", "oct_id", "track_id", "i_global", "j_global", "x_ref_px", "y_ref_px")

_SQUARE_SYMMETRIES = tuple(
    np.array(m) for m in ([[1, 0], [0, 1]], [[-1, 0], [0, -1]], [[1, 0], [0, -1]],
                          [[-1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1], [-1, 0]],
                          [[0, 1], [-1, 0]], [[0, -1], [1, 0]]))


@dataclass
class LatticeLink:
    """Integer map from a frame's lattice indices to the reference's.

    Attributes
    ----------
    matrix : ndarray of int (2, 2)
    offset : ndarray of int (2,)
    n_votes : int
        Octahedra matched to a reference octahedron (0: extrapolated reference lattice).
    agreement : float
        Fraction of the votes that chose ``offset`` (1.0 when all agree).
    """

    matrix: np.ndarray
    offset: np.ndarray
    n_votes: int
    agreement: float

    def apply(self, ij):
        """Reference-frame indices of ``ij`` (N, 2)."""
        return np.asarray(ij, dtype=np.int64).reshape(-1, 2) @ self.matrix.T + self.offset


def fit_lattice(ij, xy):
    """Least-squares lattice ``xy = origin + ij @ basis`` from indexed positions.

    Returns
    -------
    origin : ndarray (2,)
    basis : ndarray (2, 2)
        Rows are the lattice vectors (px) of unit steps in i and j.

    Examples
    --------
    >>> ij = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    >>> origin, basis = fit_lattice(ij, 5.0 + ij @ np.array([[10.0, 1.0], [-1.0, 10.0]]))
    >>> origin.round(6).tolist(), basis.round(6).tolist()
    ([5.0, 5.0], [[10.0, 1.0], [-1.0, 10.0]])
    """
    ij = np.asarray(ij, dtype=float).reshape(-1, 2)
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(ij) != len(xy):
        raise ValueError(f"ij ({len(ij)}) and xy ({len(xy)}) must have the same rows")
    design = np.c_[np.ones(len(ij)), ij]
    if len(ij) < 3 or np.linalg.matrix_rank(design) < 3:
        raise ValueError(f"need at least 3 non-collinear sites to fit a lattice, got {len(ij)}")
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    return coef[0], coef[1:]


def _symmetry(basis, ref_basis):
    """The square-lattice symmetry M with basis ~ M^T-mapped reference basis."""
    # xy = ij_t @ basis = ij_ref @ ref_basis with ij_ref = ij_t @ M.T  ->  basis = M.T @ ref_basis
    scale = np.linalg.norm(ref_basis, axis=1).mean()
    errs = [np.linalg.norm(basis - m.T @ ref_basis) for m in _SQUARE_SYMMETRIES]
    best = int(np.argmin(errs))
    if errs[best] > 0.5 * scale:
        raise ValueError("frame lattice does not match the reference lattice (spacings or "
                         f"angle differ by {errs[best] / scale:.0%} of a spacing)")
    return _SQUARE_SYMMETRIES[best]


def link_lattice(ij, xy, ref_ij, ref_xy, *, match_radius=0.3):
    """Integer transform from a frame's lattice indices to a reference frame's.

    Parameters
    ----------
    ij : ndarray of int (N, 2)
        The frame's octahedron indices.
    xy : ndarray (N, 2)
        Their Pb positions, already drift-corrected into the reference frame.
    ref_ij, ref_xy : ndarray (M, 2)
        The reference frame's octahedra.
    match_radius : float
        Matching radius in lattice spacings (< 0.5).

    Returns
    -------
    LatticeLink

    Examples
    --------
    >>> ref_ij = np.array([[i, j] for i in range(4) for j in range(4)])
    >>> ref_xy = ref_ij * 20.0
    >>> link = link_lattice(ref_ij[:, ::-1] - 7, ref_xy + 0.5, ref_ij, ref_xy)
    >>> link.matrix.tolist(), link.offset.tolist(), link.n_votes
    ([[0, 1], [1, 0]], [7, 7], 16)
    """
    ij = np.asarray(ij, dtype=np.int64).reshape(-1, 2)
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    ref_ij = np.asarray(ref_ij, dtype=np.int64).reshape(-1, 2)
    ref_xy = np.asarray(ref_xy, dtype=float).reshape(-1, 2)
    if not 0 < match_radius < 0.5:
        raise ValueError(f"match_radius must be in (0, 0.5) lattice spacings, got {match_radius}")
    if len(ij) == 0:
        raise ValueError("frame has no octahedra to link")
    ref_origin, ref_basis = fit_lattice(ref_ij, ref_xy)
    if len(ij) >= 3 and np.linalg.matrix_rank(np.c_[np.ones(len(ij)), ij]) == 3:
        matrix = _symmetry(fit_lattice(ij, xy)[1], ref_basis)
    else:  # too few sites for axes of its own: assume the reference's
        matrix = _SQUARE_SYMMETRIES[0]
    spacing = np.linalg.norm(ref_basis, axis=1).min()
    dist, idx = cKDTree(ref_xy).query(xy, distance_upper_bound=match_radius * spacing)
    hit = np.isfinite(dist)
    mapped = ij @ matrix.T
    if hit.any():
        votes = ref_ij[idx[hit]] - mapped[hit]
    else:  # no overlap: the reference lattice, extrapolated, must pass through the sites
        frac = (xy - ref_origin) @ np.linalg.inv(ref_basis)
        near = np.abs(frac - np.rint(frac)).max(axis=1) < match_radius
        if near.mean() < 0.5:
            raise ValueError(f"only {near.mean():.0%} of the frame's sites lie on the "
                             "reference lattice (a shifted sublattice, e.g. Pb/Cs swapped?)")
        votes = np.rint(frac[near]).astype(np.int64) - mapped[near]
    keys, counts = np.unique(votes, axis=0, return_counts=True)
    best = int(np.argmax(counts))
    return LatticeLink(matrix=matrix, offset=keys[best].astype(np.int64),
                       n_votes=int(hit.sum()), agreement=float(counts[best] / counts.sum()))


def _corrected(xy, drift, t, height_px):
    """Positions of frame ``t`` mapped into the reference frame with its drift row."""
    if drift is None:
        return np.asarray(xy, dtype=float)
    row = drift.loc[drift["frame"] == t]
    if len(row) != 1:
        raise ValueError(f"drift table needs exactly one row for frame {t}, has {len(row)}")
    return correct_positions(xy, row.iloc[0], height_px=height_px)


def track_octahedra(octahedra, drift=None, *, height_px, reference_frame=0, match_radius=0.3):
    """Global lattice indices and track ids of every octahedron of a series.

    Parameters
    ----------
    octahedra : pandas.DataFrame
        Octahedra of all frames (at least ``frame, oct_id, x_px, y_px, i, j``).
    drift : pandas.DataFrame, optional
        Per frame ``frame, drift_x_px, drift_y_px`` and optionally the other
        :data:`~pvq_dask.kernels.register.DRIFT_COLUMNS` (scan drift, strain, rotation,
        centre) relative to ``reference_frame``; no drift when omitted.
    height_px : int
        Frame height (for the intra-frame drift model).
    reference_frame : int
        Frame whose numbering becomes the global one; it needs at least 3 octahedra.
    match_radius : float
        Matching radius in lattice spacings.

    Returns
    -------
    tracks : pandas.DataFrame
        :data:`TRACK_COLUMNS`, one row per octahedron of every linked frame.
    links : dict
        ``{frame: LatticeLink}``; None for a frame whose lattice does not match the
        reference's (its octahedra get no track rows).
    """
    need = {"frame", "oct_id", "x_px", "y_px", "i", "j"}
    missing = sorted(need - set(octahedra.columns))
    if missing:
        raise ValueError(f"octahedra table lacks columns {missing}")
    by_frame = dict(tuple(octahedra.groupby("frame", sort=True)))
    ref = by_frame.get(reference_frame, octahedra.iloc[:0])
    if len(ref) < 3:
        raise ValueError(f"reference frame {reference_frame} has {len(ref)} octahedra; "
                         "choose a frame with a network")
    ref_ij = ref[["i", "j"]].to_numpy(np.int64)
    ref_xy = _corrected(ref[["x_px", "y_px"]].to_numpy(float), drift, reference_frame,
                        height_px)
    parts, links = [], {}
    for t, o in by_frame.items():
        xy = _corrected(o[["x_px", "y_px"]].to_numpy(float), drift, t, height_px)
        try:
            link = link_lattice(o[["i", "j"]].to_numpy(np.int64), xy, ref_ij, ref_xy,
                                match_radius=match_radius)
        except ValueError:
            links[int(t)] = None  # a lattice unlike the reference's: left unlinked
            continue
        links[int(t)] = link
        g = link.apply(o[["i", "j"]].to_numpy(np.int64))
        parts.append(pd.DataFrame({
            "frame": np.full(len(o), t, dtype=np.int64),
            "oct_id": o["oct_id"].to_numpy(np.int64),
            "i_global": g[:, 0], "j_global": g[:, 1],
            "x_ref_px": xy[:, 0], "y_ref_px": xy[:, 1]}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c[0] != "x" and c[0] != "y"
                                          else float) for c in TRACK_COLUMNS}), links
    tracks = pd.concat(parts, ignore_index=True)
    _, track_id = np.unique(tracks[["i_global", "j_global"]].to_numpy(), axis=0,
                            return_inverse=True)
    tracks.insert(2, "track_id", track_id.reshape(-1).astype(np.int64))
    return tracks[list(TRACK_COLUMNS)], links
