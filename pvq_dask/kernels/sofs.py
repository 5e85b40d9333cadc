"""Spiral Octahedra First Search (SOFS): halide sublattice, species and octahedra.

The paper's algorithm (ACS Nano 2026, 20, 6125, Methods and Fig. 1c-d), implemented on
fitted columns:

1. a seed halide near the particle centre (``seed``: the most halide-like column there);
2. a probabilistically weighted spiral search over the halide sublattice: ``n_candidates``
   = 8 nearest columns per node (in [001] Pbnm these are exactly 4 Pb/Cs at a/2 and 4 X at
   a/sqrt2), scored by distance, angle and intensity, the best ``branching`` = 4 kept,
   ``depth`` = 9 rings per seed; new seeds at the boundary of the covered region, each with
   a locally re-fitted lattice basis, until coverage is complete;
3. peripheral coverage by bidirectional extraction (a column joins only if the forward
   and the backward prediction agree);
4. Pb and Cs are the columns at the centres of halide squares; the brighter of the two
   square-centre parities is Pb. Everything else is ``unassigned`` (background peaks);
5. octahedra = Pb + four bond halides; those missing a halide, with an unusable column or
   without a Pb neighbour along an axis, are flagged untrusted (``edge_excluded``).

Indices are relative to the seed (with the Pb/Cs parity fixed), which is what stitching
tiles needs: two searches of overlapping regions differ by an integer translation.
"""

from dataclasses import dataclass

import numpy as np

from pvq_dask.kernels._sofs_assemble import assign_centres, build_network, periphery_pass
from pvq_dask.kernels._sofs_search import grow_halides, halide_likeness
from pvq_dask.kernels.lattice import estimate_basis
from pvq_dask.kernels.network import OctahedralNetwork
from pvq_dask.kernels.schema import SPECIES_CODE

__all__ = ["SOFSResult", "sofs"]


@dataclass
class SOFSResult:
    """Outcome of :func:`sofs`.

    Attributes
    ----------
    network : OctahedralNetwork
    species : ndarray of int (N,)
        Final species code per column (``SPECIES_CODE``: Pb, X, Cs, unassigned).
    twice_ij : ndarray of int (N, 2)
        Twice the lattice index of each assigned column; a large negative value elsewhere.
    basis_px : ndarray (2, 2)
        Lattice vectors u, v in px.
    seed : int
        Atom index of the first seed (-1 if none).
    n_conflicts : int
        Columns reached twice with different indices (kept as first assigned).
    message : str
        Empty on success, else why no network was found.
    """

    network: OctahedralNetwork
    species: np.ndarray
    twice_ij: np.ndarray
    basis_px: np.ndarray
    seed: int
    n_conflicts: int
    message: str = ""


UNSET = np.iinfo(np.int64).min // 4


def _empty(n, message, basis=None):
    z = np.zeros(0, dtype=np.int64)
    net = OctahedralNetwork(pb=z, ij=np.zeros((0, 2), np.int64), x_bonds=np.zeros((0, 4), np.int64),
                            cs=z, cs_ij=np.zeros((0, 2), np.int64), trusted=np.zeros(0, bool))
    return SOFSResult(network=net, species=np.full(n, SPECIES_CODE["unassigned"]),
                      twice_ij=np.full((n, 2), UNSET), seed=-1, n_conflicts=0,
                      basis_px=np.zeros((2, 2)) if basis is None else basis, message=message)


def _pick_seed(xy, likeness, usable):
    centre = np.median(xy[usable], axis=0)
    d = np.linalg.norm(xy - centre, axis=1)
    near = np.argsort(np.where(usable, d, np.inf))[: max(25, int(0.05 * usable.sum()))]
    best = near[np.argmax(likeness[near])]
    return int(best) if likeness[best] >= 0.5 else -1


def sofs(xy, amplitude, *, a_px=None, fit_ok=None, seed=None, branching=4, depth=9,
         n_candidates=8, min_prob=0.05, min_halides=8, min_trusted=4):
    """Find the halide sublattice, final species and PbX6 octahedra of one particle.

    Parameters
    ----------
    xy : ndarray, shape (N, 2)
        Fitted column positions (x, y) in px.
    amplitude : ndarray, shape (N,)
        Fitted peak amplitudes above background.
    a_px : float, optional
        Pseudo-cubic lattice spacing in px (estimated from the columns if omitted).
    fit_ok : ndarray of bool, optional
        Columns whose fit is trustworthy; octahedra with any other column are flagged
        untrusted (they still take part in the search, so the network stays connected).
    seed : int, optional
        Atom index of the seed halide (default: the most halide-like column near the
        centre of the columns).
    branching, depth, n_candidates : int
        The paper's B = 4, alpha = 9 and 8 candidates per depth.
    min_prob : float
        Smallest link probability accepted.
    min_halides, min_trusted : int
        Fewer linked halides or complete octahedra than this means "no crystal".

    Returns
    -------
    SOFSResult

    Examples
    --------
    >>> from pvq_dask.kernels.synth import SynthParams, synthesize_frame
    >>> f = synthesize_frame(SynthParams.preset("clean", shape=(256, 256), dot_size_nm=3.2),
    ...                      rng=0)
    >>> r = sofs(f.xy, f.atoms.amplitude.to_numpy())
    >>> bool(r.network.n_octahedra == (f.atoms.species == "Pb").sum())
    True
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    amp = np.asarray(amplitude, dtype=float).reshape(-1)
    n = len(xy)
    if len(amp) != n:
        raise ValueError(f"xy has {n} columns but amplitude has {len(amp)}")
    # Every finite column takes part in the topology; a poor fit only makes the octahedra
    # it belongs to untrusted (a missing column would break the search instead).
    usable = np.isfinite(xy).all(axis=1) & np.isfinite(amp) & (amp > 0)
    good = usable if fit_ok is None else usable & np.asarray(fit_ok, bool)
    if usable.sum() < 3 * min_halides:
        return _empty(n, f"only {int(usable.sum())} usable columns: no crystal lattice found")
    u, v = estimate_basis(xy[usable], a_px=a_px)
    basis = np.array([u, v])
    like = halide_likeness(np.where(usable[:, None], xy, 1e9), np.where(usable, amp, 1e-9),
                           u, v, n_candidates=n_candidates)
    like[~usable] = 0.0
    if seed is None:
        seed = _pick_seed(xy, like, usable)
        if seed < 0:
            return _empty(n, "no halide-like column with a regular lattice neighbourhood: "
                          "no crystal found", basis)
    keys, _, conflicts = grow_halides(xy, amp, u, v, int(seed), branching=branching,
                                      depth=depth, n_candidates=n_candidates,
                                      min_prob=min_prob, usable=usable)
    periphery_pass(xy, amp, keys, u, v, usable=usable)
    if len(keys) < min_halides:
        return _empty(n, f"the halide search linked only {len(keys)} columns: no crystal "
                      "network found", basis)
    centres, keys = assign_centres(xy, amp, keys, u, v, tol_px=0.3 * 0.5 * np.linalg.norm(u),
                                   usable=usable)
    net = build_network(keys, centres, usable=good)
    n_trusted = int(net.trusted.sum())
    if n_trusted < max(min_trusted, 0.25 * net.n_octahedra):
        # Chance alignments in amorphous material give a few ragged "octahedra", almost
        # none of them complete; a crystal gives mostly complete ones.
        return _empty(n, f"only {n_trusted} of {net.n_octahedra} candidate octahedra are "
                      "complete: no crystal network found", basis)
    # Halides that bond to no Pb are background peaks that happened to fit the lattice.
    bonded = set(int(a) for a in net.x_bonds[net.x_bonds >= 0])
    species = np.full(n, SPECIES_CODE["unassigned"])
    twice = np.full((n, 2), UNSET)
    for a, k in keys.items():
        if a in bonded:
            species[a] = SPECIES_CODE["X"]
            twice[a] = k
    species[net.pb] = SPECIES_CODE["Pb"]
    twice[net.pb] = 2 * net.ij
    species[net.cs] = SPECIES_CODE["Cs"]
    twice[net.cs] = 2 * net.cs_ij + 1
    msg = "" if net.n_octahedra else "no complete PbX6 octahedron found"
    return SOFSResult(network=net, species=species, twice_ij=twice, basis_px=basis,
                      seed=int(seed), n_conflicts=conflicts, message=msg)
