"""Lattice growth of the column detector (see :mod:`pvq_dask.kernels.peaks`).

Strong maxima seed a lattice; it grows site by site from accepted neighbours (a site's
threshold depends on how many accepted neighbours vouch for it), then the [001] perovskite
rules complete each grown lattice (Pb sublattice, complete PbX6 octahedra, A sites).
"""

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["grow_lattices"]

MIN_LATTICE = 8              # columns in a lattice component; smaller ones are dropped
_CS_EDGE_SNR = 2.0            # an A site with only two Pb corners (surface) needs this SNR
_PB_CONTRAST = 1.3            # the Pb sublattice's median SNR over the other sites'
_PB_EXTEND = 2                # passes of Pb-sublattice extension beyond the grown lattice
# A site predicted from a translation-equivalent site (same sublattice, same octahedral-tilt
# displacement) is known to this fraction of the nearest-site step (px per axis): the
# tilt displacement of a halide (~a_pc/2 tan(theta), 3-4 px at 0.0168 nm/px) is in the
# prediction, so the search can be tighter and prefer maxima near it.
_TRANSLATED_SIGMA_FRAC = 0.1
_TRANSLATED_SEARCH_FRAC = 0.6  # of the general search radius


def grow_lattices(xy, val, strong, steps, search, thresholds, *, threshold_pb, perovskite,
                  merge_px):
    """Grow one lattice from each uncovered strong maximum, strongest first.

    ``xy`` (n, 2) candidate maxima with SNR ``val``; ``strong`` (n,) bool seeds; ``steps``
    the two half-basis vectors (nearest-site steps); ``search`` the radius around a predicted
    site; ``thresholds`` (edge, corner, inside) SNRs; with ``perovskite`` the [001]
    perovskite rules (:func:`_complete`) are applied with ``threshold_pb``. Sites of
    overlapping lattices closer than ``merge_px`` are kept once. Returns (m, 2) positions.
    """
    threshold_inside = thresholds[2]
    probe = _Probe(xy, val, search)
    covered = np.zeros(len(xy), dtype=bool)
    tree = cKDTree(xy)
    comps = []
    for seed in np.nonzero(strong)[0][np.argsort(-val[strong])]:
        if covered[seed]:
            continue
        sites = _grow(probe, xy[seed], steps, thresholds)
        pts = np.array([p for p, _, _ in sites.values()])
        for near in tree.query_ball_point(pts, search):
            covered[near] = True
        covered[seed] = True
        if len(sites) < MIN_LATTICE:
            continue
        if perovskite:
            _complete(sites, probe, steps, threshold_pb, _CS_EDGE_SNR, threshold_inside)
        comps.append(sites)
    grown = np.array([p for sites in comps for p, _, _ in sites.values()]).reshape(-1, 2)
    if len(grown) > 1:  # overlapping lattices (a seed inside an earlier one): keep one copy
        grown = grown[_first_unique(grown, merge_px)]
    return grown


_MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))
_DIAG = ((1, 1), (1, -1), (-1, 1), (-1, -1))
# Translations (in nearest-site steps) of the orthorhombic [001] Pbnm cell: they map every
# site onto one of the same sublattice with the same tilt displacement (the halide shifts
# alternate from one Pb-Pb bond to the next, so a one-bond translation does not).
_CELL = ((2, 2), (2, -2), (-2, 2), (-2, -2), (4, 0), (-4, 0), (0, 4), (0, -4))


def _translated(sites, site, steps, fallback):
    """``fallback`` (the prediction from ``site``'s neighbours) corrected by the offset that
    its real translation-equivalent sites show from their own neighbours (the tilt shift of
    a halide), or None when there is none. Offsets, not positions, are carried across the
    translation: an error of the global step length does not add up over it."""
    shifts = [_offset(sites, (site[0] - t[0], site[1] - t[1]), steps) for t in _CELL]
    shifts = [d for d in shifts if d is not None]
    return fallback + np.mean(shifts, axis=0) if shifts else None


def _offset(sites, site, steps):
    """A real site's position minus the mean prediction from its real neighbours (None if it
    is not real or has none)."""
    entry = sites.get(site)
    if entry is None or not entry[2]:
        return None
    _, pred = _from_neighbours(sites, site, steps)
    return None if pred is None else entry[0] - pred


def _from_neighbours(sites, site, steps):
    """The moves from ``site``'s real neighbours, and its mean prediction from them (None
    when it has none)."""
    have = [m for m in _MOVES if sites.get((site[0] - m[0], site[1] - m[1]), (0, 0, False))[2]]
    if not have:
        return have, None
    return have, np.mean([sites[(site[0] - m[0], site[1] - m[1])][0] + m[0] * steps[0]
                          + m[1] * steps[1] for m in have], axis=0)


class _Probe:
    """Best candidate within a disc around a predicted site.

    Without a prediction uncertainty the best is the highest SNR; with one (``sigma_px``,
    per axis) it is the highest ``snr - d^2 / (2 sigma^2)``: a weak column near a good
    prediction beats a stronger noise maximum at the edge of the disc."""

    def __init__(self, xy, snr, radius_px):
        self.xy, self.snr, self.radius = xy, snr, radius_px
        self.tree = cKDTree(xy) if len(xy) else None

    def __call__(self, pred, *, radius_px=None, sigma_px=None):
        if self.tree is None:
            return pred, -np.inf
        near = self.tree.query_ball_point(pred, self.radius if radius_px is None else radius_px)
        if not near:
            return pred, -np.inf
        near = np.asarray(near)
        score = self.snr[near]
        if sigma_px is not None:
            score = score - 0.5 * np.sum((self.xy[near] - pred) ** 2, axis=1) / sigma_px**2
        k = near[int(np.argmax(score))]
        return self.xy[k], float(self.snr[k])

    def site(self, sites, site, steps, fallback):
        """Probe ``site``: at its translation-equivalent prediction when there is one, else
        at ``fallback``. Returns (position, snr, prediction)."""
        pred = _translated(sites, site, steps, fallback)
        if pred is None:
            pos, val = self(fallback)
            return pos, val, fallback
        step = float(np.linalg.norm(steps[0]))
        pos, val = self(pred, radius_px=_TRANSLATED_SEARCH_FRAC * self.radius,
                        sigma_px=_TRANSLATED_SIGMA_FRAC * step)
        return pos, val, pred


def _grow(probe, seed_xy, steps, thresholds):
    """Grow one lattice from a seed. Returns ``(i, j) -> (position, snr, real)``; a site is
    real when a maximum passed its threshold, virtual (enclosed, placed at its prediction)
    otherwise. Only real sites vouch for their neighbours."""
    t_edge, t_corner, t_inside = thresholds
    pos, val = probe(seed_xy)
    sites = {(0, 0): (pos, val, True)}
    queue = list(_MOVES)
    while queue:
        site = queue.pop()
        if site in sites:
            continue
        have, pred = _from_neighbours(sites, site, steps)
        if pred is None:
            continue
        enclosed = len(have) >= 3 or any((-m[0], -m[1]) in have for m in have)
        need = t_inside if enclosed else (t_corner if len(have) == 2 else t_edge)
        pos, val, pred = probe.site(sites, site, steps, pred)
        if val >= need:
            sites[site] = (pos, val, True)
            queue.extend((site[0] + m[0], site[1] + m[1]) for m in _MOVES)
        elif enclosed:
            sites[site] = (pred, val, False)
    return sites


def _complete(sites, probe, steps, t_pb, t_cs_edge, t_inside):
    """Perovskite rules on one grown lattice, in place.

    The site parity with the strongest maxima is the Pb sublattice. Pb sites need ``t_pb``
    (carbon grains on Pb positions are dropped); every Pb keeps its four equatorial halides
    (PbX6 octahedra are complete: a halide's best maximum needs ``t_inside``, else it is placed
    at its prediction and left to the fit); an A site (Cs) needs two Pb corners (and
    ``t_cs_edge``) or three; halide and A sites without a Pb are dropped.
    """
    med = {}
    for (i, j), (_, v, real) in sites.items():
        if real:
            med.setdefault((i % 2, j % 2), []).append(v)
    if not med:
        return
    pb = max(med, key=lambda c: np.median(med[c]) if len(med[c]) >= 3 else -np.inf)
    rest = [v for c, vals in med.items() if c != pb for v in vals]
    if not rest or np.median(med[pb]) < _PB_CONTRAST * np.median(rest):
        return  # no sublattice stands out: not a perovskite-like contrast, leave as grown

    def kind(site):
        di, dj = (site[0] - pb[0]) % 2, (site[1] - pb[1]) % 2
        return "Pb" if di == dj == 0 else ("Cs" if di == dj == 1 else "X")

    for site in [s for s in sites if kind(s) == "Pb"]:
        if not sites[site][2] or sites[site][1] < t_pb:
            del sites[site]
    for _ in range(_PB_EXTEND):
        # The outermost Pb of a thin margin may have missed the growth thresholds: a Pb
        # sublattice site next to a Pb needs only t_pb.
        pbs = {s: v[0] for s, v in sites.items() if kind(s) == "Pb"}
        for (i, j), p in pbs.items():
            for m in _MOVES:
                site = (i + 2 * m[0], j + 2 * m[1])
                if site not in sites:
                    pos, val, _ = probe.site(sites, site, steps,
                                             p + 2 * m[0] * steps[0] + 2 * m[1] * steps[1])
                    if val >= t_pb:
                        sites[site] = (pos, val, True)
    pbs = {s: v[0] for s, v in sites.items() if kind(s) == "Pb"}
    for site in [s for s in sites if kind(s) != "Pb"]:
        if kind(site) == "X" and not any((site[0] + m[0], site[1] + m[1]) in pbs
                                         for m in _MOVES):
            del sites[site]
    for (i, j), p in pbs.items():
        for m in _MOVES:
            site = (i + m[0], j + m[1])
            if site in sites:
                continue
            other = pbs.get((i + 2 * m[0], j + 2 * m[1]))
            pred = (0.5 * (p + other) if other is not None
                    else p + m[0] * steps[0] + m[1] * steps[1])
            pos, val, pred = probe.site(sites, site, steps, pred)
            if val >= t_inside:
                sites[site] = (pos, val, True)
            else:  # the octahedron is complete: the fit will find its weak halide
                sites[site] = (pred, val, False)
    for site in {(i + d[0], j + d[1]) for (i, j) in pbs for d in _DIAG} | {
            s for s in sites if kind(s) == "Cs"}:
        corners = [pbs[(site[0] + d[0], site[1] + d[1])] - d[0] * steps[0] - d[1] * steps[1]
                   for d in _DIAG if (site[0] + d[0], site[1] + d[1]) in pbs]
        if len(corners) < 2:
            sites.pop(site, None)
            continue
        if site not in sites:
            pos, val, _ = probe.site(sites, site, steps, np.mean(corners, axis=0))
            if val >= (t_inside if len(corners) >= 3 else t_cs_edge):
                sites[site] = (pos, val, True)



def _first_unique(xy, radius):
    """Indices of points not within ``radius`` of an earlier point."""
    keep = np.ones(len(xy), dtype=bool)
    for i, j in sorted(cKDTree(xy).query_pairs(radius)):
        if keep[i]:
            keep[j] = False
    return np.nonzero(keep)[0]


