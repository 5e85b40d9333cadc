"""The spiral search of SOFS: grow the halide sublattice over diagonal steps.

Twice-index convention: a column at lattice index (i, j) has integer key (2i, 2j). Halides
have exactly one odd component; a diagonal halide step changes both components by +-1.
"""

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["grow_halides", "DIAG_STEPS", "halide_likeness"]

#: Diagonal steps in twice-index units: (+1/2, +1/2), (+1/2, -1/2), (-1/2, +1/2), (-1/2, -1/2).
DIAG_STEPS = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.int64)


def halide_likeness(xy, amplitude, u, v, *, n_candidates=8):
    """Score in [0, 1]: how much a column looks like a halide from its surroundings.

    A halide's diagonal neighbours (at ~a/sqrt2) are halides of similar amplitude, while a
    Pb's are (dimmer) Cs and a Cs's are (brighter) Pb; it also sits near the average of its
    eight nearest candidates. Background peaks lack the regular neighbourhood.
    """
    tree = cKDTree(xy)
    k = min(n_candidates + 1, len(xy))
    _, nn = tree.query(xy, k=k)
    steps = 0.5 * (DIAG_STEPS[:, :1] * u + DIAG_STEPS[:, 1:] * v)   # (4, 2) px
    amp = np.maximum(np.asarray(amplitude, float), 1e-12)
    score = np.zeros(len(xy))
    tol = 0.18 * np.linalg.norm(u)
    for s in steps:
        pred = xy + s
        cand = xy[nn[:, 1:]]
        d = np.linalg.norm(cand - pred[:, None, :], axis=-1)
        best = np.argmin(d, axis=1)
        dmin = d[np.arange(len(xy)), best]
        ratio = amp[nn[np.arange(len(xy)), 1 + best]] / amp
        score += np.where(dmin < tol, np.exp(-np.log(ratio) ** 2 / (2 * 0.25**2)), 0.0)
    return score / 4.0


def _local_basis(keys, pos, centre_key, u, v, radius=6):
    """Affine fit position = p0 + i u + j v over assigned halides near a seed."""
    if len(keys) < 6:
        return u, v
    near = np.abs(keys - centre_key).max(axis=1) <= 2 * radius
    if near.sum() < 6:
        return u, v
    k = keys[near] / 2.0
    A = np.c_[k, np.ones(len(k))]
    coef, *_ = np.linalg.lstsq(A, pos[near], rcond=None)
    nu, nv = coef[0], coef[1]
    # Guard against degenerate fits (e.g. a single row of halides).
    if abs(np.linalg.norm(nu) / np.linalg.norm(u) - 1) > 0.15 or abs(
            np.linalg.norm(nv) / np.linalg.norm(v) - 1) > 0.15:
        return u, v
    return nu, nv


def grow_halides(xy, amplitude, u, v, seed, *, branching=4, depth=9, n_candidates=8,
                 min_prob=0.05, sigma_dist=0.14, sigma_angle_deg=14.0, sigma_log_amp=0.35,
                 usable=None):
    """Assign twice-indices to halide columns by a probabilistically weighted spiral search.

    From each node, the ``n_candidates`` nearest columns are scored against the four
    diagonal predictions by distance (relative error, ``sigma_dist``), angle
    (``sigma_angle_deg``) and intensity relative to the node (log ratio,
    ``sigma_log_amp``); at most one candidate per direction and the best ``branching`` are
    kept if their probability exceeds ``min_prob``. Each seed expands breadth-first
    ("spiral" rings) to ``depth`` rings; the nodes of its last ring become new seeds, each
    with a lattice basis re-fitted locally, until no node can grow.

    Returns
    -------
    keys : dict atom -> (2,) int twice-index
    prob : dict atom -> acceptance probability
    n_conflicts : int
    """
    xy = np.asarray(xy, float)
    amp = np.maximum(np.asarray(amplitude, float), 1e-12)
    usable = np.ones(len(xy), bool) if usable is None else np.asarray(usable, bool)
    k = min(n_candidates + 1, len(xy))
    _, nn = cKDTree(xy).query(xy, k=k)
    keys = {seed: np.array([1, 0], dtype=np.int64)}
    prob = {seed: 1.0}
    taken = {(1, 0): seed}
    n_conflicts = 0
    seeds = [(seed, u, v)]
    sig_a = np.deg2rad(sigma_angle_deg)
    while seeds:
        seed_atom, su, sv = seeds.pop(0)
        steps = 0.5 * (DIAG_STEPS[:, :1] * su + DIAG_STEPS[:, 1:] * sv)
        step_len = np.linalg.norm(steps, axis=1)
        step_ang = np.arctan2(steps[:, 1], steps[:, 0])
        frontier, ring = [seed_atom], 0
        while frontier and ring < depth:
            nxt = []
            for node in frontier:
                cands = nn[node, 1:]
                cands = cands[usable[cands]]
                if len(cands) == 0:
                    continue
                vec = xy[cands] - xy[node]
                dist = np.linalg.norm(vec, axis=1)
                ang = np.arctan2(vec[:, 1], vec[:, 0])
                dd = (dist[:, None] - step_len[None, :]) / step_len[None, :]
                da = np.angle(np.exp(1j * (ang[:, None] - step_ang[None, :])))
                la = np.log(amp[cands] / amp[node])[:, None]
                p = np.exp(-0.5 * ((dd / sigma_dist) ** 2 + (da / sig_a) ** 2
                                   + (la / sigma_log_amp) ** 2))        # (n_cand, 4)
                order = np.argsort(-p, axis=None)
                used_c, used_d, kept = set(), set(), 0
                for flat in order:
                    c, d = divmod(int(flat), 4)
                    if p[c, d] < min_prob or kept >= branching:
                        break
                    if c in used_c or d in used_d:
                        continue
                    used_c.add(c)
                    used_d.add(d)
                    kept += 1
                    atom = int(cands[c])
                    key = keys[node] + DIAG_STEPS[d]
                    tk = (int(key[0]), int(key[1]))
                    if atom in keys:
                        if not np.array_equal(keys[atom], key):
                            n_conflicts += 1
                        continue
                    if tk in taken:
                        n_conflicts += 1
                        continue
                    keys[atom] = key
                    prob[atom] = float(p[c, d])
                    taken[tk] = atom
                    nxt.append(atom)
            frontier = nxt
            ring += 1
        if frontier:
            kk = np.array([keys[a] for a in keys])
            pp = xy[list(keys)]
            for atom in frontier:
                nu, nv = _local_basis(kk, pp, keys[atom], su, sv)
                seeds.append((atom, nu, nv))
    return keys, prob, n_conflicts
