"""From the halide sublattice to Pb and Cs columns, octahedra and trust flags."""

import numpy as np
from scipy.spatial import cKDTree

from pvq_dask.kernels._sofs_search import DIAG_STEPS
from pvq_dask.kernels.network import BOND_OFFSETS, OctahedralNetwork, index_lookup

__all__ = ["periphery_pass", "assign_centres", "build_network"]

_HALF = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.int64)


def periphery_pass(xy, amplitude, keys, u, v, *, usable, tol_frac=0.2, rounds=3):
    """Bidirectional extraction of the outermost halides.

    A still-unassigned column is added at the empty halide key predicted from an assigned
    halide when it is the nearest column to that prediction (forward) and, seen from the
    column, the assigned halide is the nearest one to the reverse prediction (backward),
    with a tolerance of ``tol_frac`` of a diagonal step. Repeated for a few rounds so thin
    protrusions fill from the outside in.
    """
    xy = np.asarray(xy, float)
    amp = np.asarray(amplitude, float)
    tree = cKDTree(xy)
    steps = 0.5 * (DIAG_STEPS[:, :1] * u + DIAG_STEPS[:, 1:] * v)
    tol = tol_frac * np.linalg.norm(steps[0])
    added = 0
    for _ in range(rounds):
        taken = {tuple(k): a for a, k in keys.items()}
        new = {}
        for atom, key in list(keys.items()):
            for d, s in enumerate(steps):
                nk = tuple(int(x) for x in key + DIAG_STEPS[d])
                if nk in taken or nk in new:
                    continue
                dist, c = tree.query(xy[atom] + s)
                if dist > tol or c in keys or not usable[c] or c in new.values():
                    continue
                # backward check: from c, the reverse step lands nearest to `atom`
                bdist, back = tree.query(xy[c] - s)
                ratio = amp[c] / max(amp[atom], 1e-12)
                if back == atom and bdist <= tol and 0.4 < ratio < 2.2:
                    new[nk] = int(c)
        if not new:
            break
        for nk, c in new.items():
            keys[c] = np.array(nk, dtype=np.int64)
        added += len(new)
    return added


def assign_centres(xy, amplitude, keys, u, v, *, tol_px, usable):
    """Pb/Cs columns at the centres of halide squares; fix the parity so Pb are brighter.

    Returns a dict atom -> twice-index for the centre columns (Pb at even/even, Cs at
    odd/odd) and the possibly shifted halide keys.
    """
    xy = np.asarray(xy, float)
    hx = np.array(list(keys.keys()), dtype=np.int64)
    hk = np.array([keys[a] for a in hx], dtype=np.int64).reshape(-1, 2)
    lookup = index_lookup(hk)
    # Candidate centres: both neighbours-of-halide squares.
    cand = np.unique(np.concatenate([hk + o for o in _HALF]), axis=0)
    cand = cand[(cand % 2 == 0).all(axis=1) | (cand % 2 == 1).all(axis=1)]
    around = np.stack([lookup(cand + o) for o in _HALF], axis=1)      # (C, 4)
    n_have = (around >= 0).sum(axis=1)
    keep = n_have >= 2
    cand, around = cand[keep], around[keep]
    # Each halide predicts the centre half a lattice step back along its bond.
    half = 0.5 * np.array([u, -u, v, -v])
    pos = np.where((around >= 0)[..., None], xy[hx[np.maximum(around, 0)]] - half[None], 0.0)
    pred = pos.sum(axis=1) / (around >= 0).sum(axis=1, keepdims=True)
    tree = cKDTree(xy)
    dist, col = tree.query(pred)
    halides = set(int(a) for a in hx)
    ok = (dist <= tol_px) & np.array([c not in halides for c in col]) & usable[col]
    cand, col = cand[ok], col[ok]
    # One column per centre and one centre per column (closest wins).
    order = np.argsort(dist[ok])
    seen, centres = set(), {}
    for r in order:
        c = int(col[r])
        if c in seen:
            continue
        seen.add(c)
        centres[c] = cand[r]
    if not centres:
        return {}, keys
    ck = np.array(list(centres.values()))
    ca = np.asarray(amplitude, float)[list(centres.keys())]
    even = (ck % 2 == 0).all(axis=1)
    if even.any() and (~even).any() and np.median(ca[~even]) > np.median(ca[even]):
        shift = np.array([1, 1])
        keys = {a: k + shift for a, k in keys.items()}
        centres = {a: k + shift for a, k in centres.items()}
    return centres, keys


def build_network(keys, centres, *, usable):
    """OctahedralNetwork from halide keys and centre keys (twice-index units)."""
    ck = np.array(list(centres.values()), dtype=np.int64).reshape(-1, 2)
    ca = np.array(list(centres.keys()), dtype=np.int64)
    is_pb = (ck % 2 == 0).all(axis=1)
    hx = np.array(list(keys.keys()), dtype=np.int64)
    hk = np.array([keys[a] for a in hx], dtype=np.int64).reshape(-1, 2)
    lookup = index_lookup(hk)
    pb, pb_ij = ca[is_pb], ck[is_pb] // 2
    x_bonds = np.full((len(pb), 4), -1, dtype=np.int64)
    for k, off in enumerate(BOND_OFFSETS):
        r = lookup(2 * pb_ij + off)
        x_bonds[r >= 0, k] = hx[r[r >= 0]]
    cs, cs_ij = ca[~is_pb], (ck[~is_pb] - 1) // 2
    full = (x_bonds >= 0).all(axis=1)
    ok_atoms = usable[pb] & np.all(np.where(x_bonds >= 0, usable[np.maximum(x_bonds, 0)], False),
                                   axis=1)
    nb = index_lookup(pb_ij)
    has_u = (nb(pb_ij + BOND_OFFSETS[0]) >= 0) | (nb(pb_ij + BOND_OFFSETS[1]) >= 0)
    has_v = (nb(pb_ij + BOND_OFFSETS[2]) >= 0) | (nb(pb_ij + BOND_OFFSETS[3]) >= 0)
    trusted = full & ok_atoms & has_u & has_v
    return OctahedralNetwork(pb=pb, ij=pb_ij, x_bonds=x_bonds, cs=cs, cs_ij=cs_ij,
                             trusted=trusted)
