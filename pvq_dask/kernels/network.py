"""The octahedral network: which atom columns form which PbX6 octahedron.

A network is built either from truth (the synthetic generator) or from fitted columns
(SOFS). Metrics (:mod:`pvq_dask.kernels.metrics`) only need this structure and the atom
positions, so both paths are scored by the same code.

Lattice convention: ``i`` counts pseudo-cubic cells along the lattice axis closest to the
image x axis ("horizontal", u), ``j`` along the other axis (v). Bond slots are ordered
``k = 1..4`` as ``+u, -u, +v, -v`` (stored 0-based as columns 0..3).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["OctahedralNetwork", "BOND_OFFSETS", "index_lookup", "network_from_indices"]

#: (di, dj) of the Pb neighbour across bond slot k = 1..4 (+u, -u, +v, -v).
BOND_OFFSETS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.int64)


@dataclass(frozen=True)
class OctahedralNetwork:
    """Connectivity of the PbX6 network in atom-index space.

    Attributes
    ----------
    pb : ndarray of int, shape (M,)
        Atom index of each octahedron's central Pb column.
    ij : ndarray of int, shape (M, 2)
        Integer lattice index (i, j) of each Pb.
    x_bonds : ndarray of int, shape (M, 4)
        Atom index of the halide column in bond slots +u, -u, +v, -v; -1 where missing.
    cs : ndarray of int, shape (K,)
        Atom index of each Cs column.
    cs_ij : ndarray of int, shape (K, 2)
        Lattice index of the Pb at the lower corner of the cell the Cs centres, i.e. the Cs
        sits at (i + 1/2, j + 1/2).
    trusted : ndarray of bool, shape (M,), optional
        False for octahedra the builder could not trust (reported as ``edge_excluded``).
    """

    pb: np.ndarray
    ij: np.ndarray
    x_bonds: np.ndarray
    cs: np.ndarray
    cs_ij: np.ndarray
    trusted: np.ndarray | None = None

    def __post_init__(self):
        m = len(self.pb)
        if self.ij.shape != (m, 2) or self.x_bonds.shape != (m, 4):
            raise ValueError(
                f"network arrays disagree: pb {self.pb.shape}, ij {self.ij.shape}, "
                f"x_bonds {self.x_bonds.shape}"
            )
        if self.cs_ij.shape != (len(self.cs), 2):
            raise ValueError(f"cs {self.cs.shape} and cs_ij {self.cs_ij.shape} disagree")

    @property
    def n_octahedra(self):
        return len(self.pb)

    def pb_neighbours(self):
        """Row index (into ``pb``) of the Pb across each bond slot, -1 where absent.

        Examples
        --------
        >>> net = OctahedralNetwork(pb=np.array([0, 1]), ij=np.array([[0, 0], [1, 0]]),
        ...     x_bonds=-np.ones((2, 4), int), cs=np.zeros(0, int), cs_ij=np.zeros((0, 2), int))
        >>> net.pb_neighbours()[:, 0].tolist()
        [1, -1]
        """
        lookup = index_lookup(self.ij)
        out = np.full((len(self.pb), 4), -1, dtype=np.int64)
        for k, off in enumerate(BOND_OFFSETS):
            out[:, k] = lookup(self.ij + off)
        return out


def index_lookup(ij):
    """Return ``f(query_ij) -> row`` mapping lattice indices to row numbers (-1 if absent).

    Examples
    --------
    >>> f = index_lookup(np.array([[0, 0], [2, 1]]))
    >>> f(np.array([[2, 1], [5, 5]])).tolist()
    [1, -1]
    """
    ij = np.asarray(ij, dtype=np.int64).reshape(-1, 2)
    if len(ij) == 0:
        return lambda q: np.full(len(np.asarray(q).reshape(-1, 2)), -1, dtype=np.int64)
    lo = ij.min(axis=0)
    shape = ij.max(axis=0) - lo + 1
    grid = np.full(tuple(shape), -1, dtype=np.int64)
    grid[ij[:, 0] - lo[0], ij[:, 1] - lo[1]] = np.arange(len(ij))

    def lookup(query):
        q = np.asarray(query, dtype=np.int64).reshape(-1, 2) - lo
        ok = np.all((q >= 0) & (q < shape), axis=1)
        out = np.full(len(q), -1, dtype=np.int64)
        out[ok] = grid[q[ok, 0], q[ok, 1]]
        return out

    return lookup


def network_from_indices(species, i, j):
    """Build the network from per-atom species and (half-integer) lattice indices.

    Pb sit at integer (i, j); the halide of bond slot +u of Pb (i, j) at (i + 1/2, j), of
    slot +v at (i, j + 1/2); Cs at (i + 1/2, j + 1/2).

    Parameters
    ----------
    species : array of str ('Pb', 'X', 'Cs')
    i, j : array of float

    Examples
    --------
    >>> sp = np.array(["Pb", "X", "Pb", "Cs"])
    >>> net = network_from_indices(sp, np.array([0, 0.5, 1, 0.5]), np.array([0, 0, 0, 0.5]))
    >>> net.x_bonds.tolist()
    [[1, -1, -1, -1], [-1, 1, -1, -1]]
    """
    species = np.asarray(species)
    twice = np.rint(np.c_[np.asarray(i, float), np.asarray(j, float)] * 2).astype(np.int64)
    pb = np.flatnonzero(species == "Pb")
    xs = np.flatnonzero(species == "X")
    cs = np.flatnonzero(species == "Cs")
    ij = twice[pb] // 2
    x_at = index_lookup(twice[xs])
    x_bonds = np.full((len(pb), 4), -1, dtype=np.int64)
    for k, off in enumerate(BOND_OFFSETS):
        rows = x_at(2 * ij + off)
        x_bonds[rows >= 0, k] = xs[rows[rows >= 0]]
    return OctahedralNetwork(pb=pb, ij=ij, x_bonds=x_bonds, cs=cs, cs_ij=(twice[cs] - 1) // 2)
