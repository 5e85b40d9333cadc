"""Provisional species of fitted columns (Pb / halide / Cs) with a per-column confidence.

In the [001] projection of a CsPbX3 perovskite every column sits on one square lattice of
step a_pc/2: Pb (with its apical halide) where both lattice indices have the Pb parity, the
equatorial halides where one index differs, Cs where both differ. Species therefore follow
from two pieces of evidence:

- **lattice parity**: columns are indexed by walking the nearest-neighbour graph in units of
  the lattice step (rounding every local step, so strain and tilt displacements do not
  accumulate); the parity class whose columns are brightest *relative to their neighbours*
  is the Pb sublattice, per connected lattice;
- **brightness**: a two-component Gaussian mixture on the log of each column's amplitude over
  the median of its eight nearest neighbours (so thin, dim margins classify like the bulk).

``method="mixture"`` (default) combines them: the parity gives a strong prior (``1 -
prior_error``) that the brightness likelihoods update; ``species_conf`` is the posterior
probability of the label. ``method="paper"`` keeps the paper's rule for Pb (amplitude > 1.5x
the global mean) and uses the lattice only to split the rest into halide and Cs. SOFS
(:mod:`pvq_dask.kernels.sofs`) makes the labels final.
"""

from collections import deque

import numpy as np
from scipy.spatial import cKDTree

from pvq_dask.kernels.lattice import estimate_basis
from pvq_dask.kernels.schema import SPECIES_CODE

__all__ = ["classify_columns", "index_lattice", "local_contrast"]

PB, X, CS, NONE = (SPECIES_CODE[s] for s in ("Pb", "X", "Cs", "unassigned"))
_STEP_TOL = 0.35       # a neighbour step may deviate by this fraction of the lattice step
_MIN_COMPONENT = 8     # smaller lattice pieces are classified by brightness alone
_PAPER_FACTOR = 1.5    # the paper: Pb brighter than 1.5x the global mean amplitude


def local_contrast(xy, amplitude, *, k=8):
    """Amplitude divided by the median amplitude of the ``k`` nearest other columns.

    Examples
    --------
    >>> xy = np.c_[np.arange(6.0), np.zeros(6)]
    >>> local_contrast(xy, np.array([1.0, 1.0, 1.0, 3.0, 1.0, 1.0]), k=4).tolist()
    [1.0, 1.0, 1.0, 3.0, 1.0, 1.0]
    """
    xy = np.asarray(xy, float)
    amp = np.asarray(amplitude, float)
    kk = min(k + 1, len(xy))
    if kk < 2:
        return np.ones(len(xy))
    _, nn = cKDTree(xy).query(xy, k=kk)
    ref = np.median(amp[nn[:, 1:]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return amp / ref


def index_lattice(xy, steps):
    """Integer lattice indices of columns and the connected lattice each belongs to.

    Parameters
    ----------
    xy : ndarray (n, 2)
    steps : (ndarray (2,), ndarray (2,))
        The two lattice step vectors (a_pc / 2 along each pseudo-cubic axis), px.

    Returns
    -------
    ij : ndarray of int (n, 2)
        Indices relative to the first column of each component (0 where unindexed).
    component : ndarray of int (n,)
        Component label, -1 for columns with no lattice neighbour.

    Examples
    --------
    >>> g = np.mgrid[0:3, 0:2].reshape(2, -1).T * 10.0
    >>> ij, comp = index_lattice(g, (np.array([10.0, 0]), np.array([0, 10.0])))
    >>> ij.tolist(), comp.tolist()
    ([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]], [0, 0, 0, 0, 0, 0])
    """
    xy = np.asarray(xy, float)
    basis = np.column_stack(steps)
    inv = np.linalg.inv(basis)
    step = float(min(np.linalg.norm(steps[0]), np.linalg.norm(steps[1])))
    tree = cKDTree(xy)
    pairs = tree.query_pairs((1 + _STEP_TOL) * step, output_type="ndarray")
    ij = np.zeros((len(xy), 2), dtype=np.int64)
    comp = np.full(len(xy), -1, dtype=np.int64)
    if len(pairs) == 0:
        return ij, comp
    delta = xy[pairs[:, 1]] - xy[pairs[:, 0]]
    frac = delta @ inv.T
    move = np.rint(frac).astype(np.int64)
    err = np.linalg.norm((frac - move) @ basis.T, axis=1)
    unit = np.abs(move).sum(axis=1) == 1
    good = unit & (err < _STEP_TOL * step)
    pairs, move = pairs[good], move[good]
    adj = [[] for _ in range(len(xy))]
    for (a, b), m in zip(pairs, move):
        adj[a].append((b, m[0], m[1]))
        adj[b].append((a, -m[0], -m[1]))
    label = 0
    for start in range(len(xy)):
        if comp[start] >= 0 or not adj[start]:
            continue
        comp[start] = label
        queue = deque([start])
        while queue:
            a = queue.popleft()
            for b, di, dj in adj[a]:
                if comp[b] < 0:
                    comp[b] = label
                    ij[b] = ij[a] + (di, dj)
                    queue.append(b)
        label += 1
    return ij, comp


def _two_gaussians(z, n_iter=100):
    """1-D two-component Gaussian mixture (EM) -> (mean, std, weight) of each component,
    the upper component second."""
    lo, hi = np.percentile(z, [30, 97])
    mu = np.array([lo, hi])
    sd = np.full(2, max(z.std() / 3, 1e-3))
    w = np.array([0.75, 0.25])
    for _ in range(n_iter):
        pdf = w / sd * np.exp(-0.5 * ((z[:, None] - mu) / sd) ** 2)
        resp = pdf / np.maximum(pdf.sum(axis=1, keepdims=True), 1e-300)
        nk = resp.sum(axis=0) + 1e-12
        mu = (resp * z[:, None]).sum(axis=0) / nk
        sd = np.sqrt((resp * (z[:, None] - mu) ** 2).sum(axis=0) / nk) + 1e-3
        w = nk / nk.sum()
    order = np.argsort(mu)
    return mu[order], sd[order], w[order]


def _likelihoods(z, mu, sd):
    return np.exp(-0.5 * ((z[:, None] - mu) / sd) ** 2) / sd


def classify_columns(xy, amplitude, sigma=None, *, method="mixture", prior_error=0.02,
                     a_px=None):
    """Provisional species codes and confidences for fitted columns.

    Parameters
    ----------
    xy : ndarray (n, 2)
        Column positions (x, y), px.
    amplitude : ndarray (n,)
        Fitted peak amplitudes above background.
    sigma : ndarray (n,), optional
        Column widths; accepted for API symmetry, not used (widths of Pb and halide
        columns differ by ~5 %, far less than their fit scatter at low dose).
    method : {"mixture", "paper"}
    prior_error : float
        Probability that a column's lattice parity does not tell its species (defects,
        mis-indexing); the brightness evidence overrides parity only beyond this.
    a_px : float, optional
        Known pseudo-cubic spacing (px); estimated from the columns otherwise.

    Returns
    -------
    species : ndarray of int
        Codes of :data:`pvq_dask.kernels.schema.SPECIES_CODE` (``unassigned`` for columns
        that cannot be classified, e.g. non-finite amplitude).
    species_conf : ndarray of float in [0, 1]

    Examples
    --------
    >>> g = np.mgrid[0:8, 0:8].reshape(2, -1).T.astype(float) * 18.0
    >>> ij = np.rint(g / 18).astype(int)
    >>> truth = np.where((ij % 2 == 0).all(1), 0, np.where((ij % 2 == 1).all(1), 2, 1))
    >>> amp = np.where(truth == 0, 2.4, 1.0) * np.linspace(0.5, 1.0, 64)
    >>> sp, conf = classify_columns(g, amp)
    >>> bool((sp == truth).all()), bool(conf.min() > 0.9)
    (True, True)
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    amp = np.asarray(amplitude, float).reshape(-1)
    n = len(xy)
    if len(amp) != n:
        raise ValueError(f"xy has {n} columns but amplitude has {len(amp)}")
    if method not in ("mixture", "paper"):
        raise ValueError(f"method must be 'mixture' or 'paper', got {method!r}")
    if not 0 < prior_error < 0.5:
        raise ValueError(f"prior_error must be in (0, 0.5), got {prior_error}")
    species = np.full(n, NONE, dtype=np.int64)
    conf = np.zeros(n)
    good = np.isfinite(xy).all(axis=1) & np.isfinite(amp) & (amp > 0)
    idx = np.flatnonzero(good)
    if len(idx) < _MIN_COMPONENT:
        return species, conf
    pxy, pamp = xy[idx], amp[idx]
    z = np.log(np.clip(local_contrast(pxy, pamp), 1e-3, None))
    mu, sd, w = _two_gaussians(z)
    like = _likelihoods(z, mu, sd)          # (n, 2): light, Pb
    if method == "paper":
        thr = _PAPER_FACTOR * pamp.mean()
        p_pb = 1.0 / (1.0 + np.exp(-np.log(pamp / thr) / 0.05))
    else:
        p_pb = w[1] * like[:, 1] / np.maximum(w @ like.T, 1e-300)
    try:
        u, v = estimate_basis(pxy, a_px=a_px)
        ij, comp = index_lattice(pxy, (0.5 * u, 0.5 * v))
    except (ValueError, np.linalg.LinAlgError):
        ij, comp = np.zeros((len(idx), 2), np.int64), np.full(len(idx), -1)
    parity = ij % 2
    sp = np.where(p_pb > 0.5, PB, X)
    cf = np.where(p_pb > 0.5, p_pb, 1 - p_pb)
    for c in np.unique(comp[comp >= 0]):
        members = np.flatnonzero(comp == c)
        if len(members) < _MIN_COMPONENT:
            continue
        cls = parity[members, 0] * 2 + parity[members, 1]
        score = [np.median(z[members][cls == k]) if (cls == k).any() else -np.inf
                 for k in range(4)]
        pb_cls = int(np.argmax(score))
        pb_par = np.array([pb_cls // 2, pb_cls % 2])
        off = (parity[members] + pb_par) % 2          # parity relative to the Pb sublattice
        on_pb = (off == 0).all(axis=1)
        if method == "paper":
            post = p_pb[members]
        else:
            prior = np.where(on_pb, 1 - prior_error, prior_error)
            post = prior * like[members, 1] / np.maximum(
                prior * like[members, 1] + (1 - prior) * like[members, 0], 1e-300)
        light = np.where((off == 1).all(axis=1), CS, X)
        sp[members] = np.where(post > 0.5, PB, light)
        cf[members] = np.where(post > 0.5, post, 1 - post)
    if method == "paper" or (comp < 0).any():
        # Outside indexed lattices: halide next to a Pb (~a/2), Cs diagonal to Pb (~a/sqrt2).
        loose = np.flatnonzero((comp < 0) | (method == "paper"))
        is_pb = sp == PB
        if is_pb.sum() >= 1 and len(loose):
            d, _ = cKDTree(pxy[is_pb]).query(pxy[loose])
            step = float(np.linalg.norm(u)) / 2 if "u" in locals() else np.median(d)
            unset = loose[sp[loose] != PB]
            d_un = d[np.isin(loose, unset)]
            sp[unset] = np.where(d_un > 1.2 * step, CS, X)
    species[idx] = sp
    conf[idx] = np.clip(cf, 0.0, 1.0)
    return species, conf
