"""Tiled analysis of a frame; per-tile SOFS searches stitched into one octahedral network.

:func:`analyze_frame_tiled` is the tiled ``analyze_frame``. Its network comes from one SOFS
search over the frame's column table (exactly the whole-frame network) or, with
``network="tiles"``, from per-tile searches stitched like dask-image's ``label``: every tile
labels its own columns (a SOFS search over the columns it owns plus a halo, lattice indices
relative to its own seed), the label frames of tiles that share columns are reconciled by
integer translations measured on the shared columns (union-find with offsets, strongest
overlaps first), and one global relabel puts every owned column into the frame of the
largest connected set of tiles. The network, species, trust and metrics are then built
once, globally, by the kernels.

Twice-index convention of :mod:`pvq_dask.kernels.sofs`: a column at lattice index (i, j)
has key (2i, 2j); Pb keys are even/even, Cs odd/odd, halides have one odd component.
"""

import time
from dataclasses import dataclass

import numpy as np

from pvq_dask.kernels._sofs_assemble import build_network
from pvq_dask.kernels._sofs_search import halide_likeness
from pvq_dask.kernels.classify import classify_columns
from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.kernels.frame import (
    FrameResult,
    atoms_table,
    drop_duplicates,
    empty_table,
    network_tables,
)
from pvq_dask.kernels.lattice import estimate_basis
from pvq_dask.kernels.schema import (
    ATOM_COLUMNS,
    CELL_COLUMNS,
    OCTAHEDRA_COLUMNS,
    SPECIES_CODE,
)
from pvq_dask.kernels.sofs import UNSET, sofs
from pvq_dask.kernels.unionfind import reconcile_offsets
from pvq_dask.parallel.tiles import compute_with, detect_fit_tiled, owner_tile

__all__ = ["TileLabels", "tile_sofs", "stitch_labels", "stitched_network", "analyze_frame_tiled"]

_UNASSIGNED = SPECIES_CODE["unassigned"]
#: SOFS halo in pseudo-cubic cells: an owned Pb's octahedron (half a cell), its neighbours
#: across every bond (one cell), and room for the search to reach it from inside the tile.
_SOFS_HALO_UC = 3.0
_MIN_TRUSTED_FRAC = 0.25    # the SOFS kernel's "no crystal" rule: trusted / all octahedra
_SEED_LIKENESS = 0.75       # halide likeness (0..1) of a tile's seed candidates
_MIN_SEED_COLUMNS = 24      # the kernel's own "no crystal" floor (3 x min_halides)


@dataclass
class TileLabels:
    """SOFS labels of the columns one tile searched.

    Attributes
    ----------
    cols : ndarray of int (n,)
        Global atom indices the tile searched (owned + halo).
    twice_ij : ndarray of int (n, 2)
        Twice the lattice index in the tile's own frame; ``UNSET`` where unlabelled.
    message : str
        The search's message (empty on success).
    """

    cols: np.ndarray
    twice_ij: np.ndarray
    message: str = ""

    @property
    def labelled(self):
        return self.twice_ij[:, 0] != UNSET


def _tile_seed(xy, amplitude, usable, a_px, n_candidates):
    """A seed halide in the tile's crystal: of the clearly halide-like columns, the one
    nearest their median position (a tile may hold a corner of a dot and much amorphous
    background, where the kernel's default, near the centre of all columns, fails)."""
    u, v = estimate_basis(xy[usable], a_px=a_px)
    like = halide_likeness(np.where(usable[:, None], xy, 1e9), np.where(usable, amplitude, 1e-9),
                           u, v, n_candidates=n_candidates)
    like[~usable] = 0.0
    good = like >= _SEED_LIKENESS
    if not good.any():
        return None
    centre = np.median(xy[good], axis=0)
    d = np.where(good, np.linalg.norm(xy - centre, axis=1), np.inf)
    return int(np.argmin(d))


def tile_sofs(cols, xy, amplitude, **sofs_options):
    """Run the SOFS kernel on the columns ``cols`` of the frame; labels in the tile's frame.

    ``xy`` and ``amplitude`` are the tile's rows (same order as ``cols``). Only the
    topology is searched here: fit quality decides which octahedra are trusted, and with
    it whether the frame holds a crystal at all, once for the whole frame
    (:func:`stitched_network`), since a tile that holds the rim of a dot has mostly
    untrusted octahedra.
    """
    cols = np.asarray(cols, dtype=np.int64)
    xy = np.asarray(xy, float).reshape(-1, 2)
    amplitude = np.asarray(amplitude, float)
    usable = np.isfinite(xy).all(axis=1) & np.isfinite(amplitude) & (amplitude > 0)
    seed = None
    if usable.sum() >= _MIN_SEED_COLUMNS:
        seed = _tile_seed(xy, amplitude, usable, sofs_options.get("a_px"),
                          sofs_options.get("n_candidates", 8))
    found = sofs(xy, amplitude, seed=seed, **sofs_options)
    return TileLabels(cols=cols, twice_ij=found.twice_ij, message=found.message)


def _pair_offsets(tiles):
    """Translation between every pair of tiles that label common columns (majority vote)."""
    pairs, offsets, weights = [], [], []
    for a in range(len(tiles)):
        la = tiles[a]
        ca = la.cols[la.labelled]
        ka = la.twice_ij[la.labelled]
        for b in range(a + 1, len(tiles)):
            lb = tiles[b]
            common, ia, ib = np.intersect1d(ca, lb.cols[lb.labelled], assume_unique=True,
                                            return_indices=True)
            if len(common) == 0:
                continue
            d = lb.twice_ij[lb.labelled][ib] - ka[ia]
            vals, counts = np.unique(d, axis=0, return_counts=True)
            best = int(np.argmax(counts))
            pairs.append((a, b))
            offsets.append(vals[best])
            weights.append(counts[best])
    return (np.array(pairs, dtype=np.int64).reshape(-1, 2),
            np.array(offsets, dtype=np.int64).reshape(-1, 2), np.array(weights, dtype=float))


def stitch_labels(n_atoms, tiles, owner):
    """Global twice-indices of every column from per-tile labels.

    Parameters
    ----------
    n_atoms : int
        Number of columns in the frame.
    tiles : list of TileLabels
        One per tile, in tile order.
    owner : ndarray of int (n_atoms,)
        Tile that owns each column (the tile whose core contains its fitted centre).

    Returns
    -------
    twice_ij : ndarray of int (n_atoms, 2)
        In the frame of the largest connected set of tiles; ``UNSET`` elsewhere.
    n_conflicts : int
        Columns labelled differently by a non-owner tile of the kept set.
    n_rejected : int
        Tile links rejected as contradicting stronger ones.
    n_dropped_sets : int
        Other connected sets of tiles (separate networks) that were dropped.
    """
    owner = np.asarray(owner, dtype=np.int64)
    if owner.shape != (n_atoms,):
        raise ValueError(f"owner must have one tile per column ({n_atoms}), got {owner.shape}")
    n_tiles = len(tiles)
    pairs, offsets, weights = _pair_offsets(tiles)
    root, to_root, rejected = reconcile_offsets(n_tiles, pairs, offsets, weights)
    # Owned labels in each tile's root frame.
    twice = np.full((n_atoms, 2), UNSET, dtype=np.int64)
    set_of = np.full(n_atoms, -1, dtype=np.int64)
    for t, lab in enumerate(tiles):
        mine = lab.labelled & (owner[lab.cols] == t)
        twice[lab.cols[mine]] = lab.twice_ij[mine] + to_root[t]
        set_of[lab.cols[mine]] = root[t]
    sets, counts = np.unique(set_of[set_of >= 0], return_counts=True)
    if len(sets) == 0:
        return twice, 0, int(rejected.sum()), 0
    keep = sets[np.argmax(counts)]
    twice[set_of != keep] = UNSET
    n_conflicts = 0
    for t, lab in enumerate(tiles):
        if root[t] != keep:
            continue
        other = lab.labelled & (owner[lab.cols] != t)
        cols = lab.cols[other]
        seen = twice[cols, 0] != UNSET
        n_conflicts += int(np.any(twice[cols[seen]] != lab.twice_ij[other][seen] + to_root[t],
                                  axis=1).sum())
    return twice, n_conflicts, int(rejected.sum()), int(len(sets) - 1)


def stitched_network(twice_ij, amplitude, usable, *, min_trusted=4):
    """Octahedral network, species and final indices from global twice-indices.

    The Pb/Cs parity is decided once for the frame, as the SOFS kernel does: the brighter
    of the two square-centre parities is Pb. Halides that bond to no Pb are unassigned.

    Parameters
    ----------
    twice_ij : ndarray of int (N, 2)
        From :func:`stitch_labels`.
    amplitude : ndarray (N,)
    usable : ndarray of bool (N,)
        Columns whose fit is usable (``fit_ok`` of finite columns): octahedra with any
        other column are untrusted.
    min_trusted : int
        As the SOFS kernel: fewer trusted octahedra than this, or than a quarter of all,
        means no crystal (chance alignments in amorphous material), and no network.

    Returns
    -------
    network : OctahedralNetwork
    species : ndarray of int (N,)
    twice_ij : ndarray of int (N, 2)
        Final keys (parity-corrected; ``UNSET`` for unassigned columns).
    n_duplicates : int
        Lattice sites claimed by more than one column (the first column keeps the site).
    """
    twice = np.asarray(twice_ij, dtype=np.int64).copy()
    amp = np.asarray(amplitude, dtype=float)
    n = len(twice)
    lab = np.flatnonzero(twice[:, 0] != UNSET)
    _, first = np.unique(twice[lab], axis=0, return_index=True)
    n_duplicates = len(lab) - len(first)
    lab = np.sort(lab[first])
    keys = twice[lab]
    odd = keys % 2
    centre = odd[:, 0] == odd[:, 1]
    even = centre & (odd[:, 0] == 0)
    ca_even, ca_odd = amp[lab[even]], amp[lab[centre & ~even]]
    if len(ca_even) and len(ca_odd) and np.median(ca_odd) > np.median(ca_even):
        keys = keys + 1
    halides = {int(a): k for a, k in zip(lab[~centre], keys[~centre])}
    centres = {int(a): k for a, k in zip(lab[centre], keys[centre])}
    net = build_network(halides, centres, usable=np.asarray(usable, bool))
    if net.trusted.sum() < max(min_trusted, _MIN_TRUSTED_FRAC * net.n_octahedra):
        # the kernel's "no crystal" rule, applied to the whole frame
        net = build_network({}, {}, usable=np.asarray(usable, bool))
    species = np.full(n, _UNASSIGNED, dtype=np.int64)
    final = np.full((n, 2), UNSET, dtype=np.int64)
    bonded = np.unique(net.x_bonds[net.x_bonds >= 0])
    species[bonded] = SPECIES_CODE["X"]
    final[bonded] = np.array([halides[int(a)] for a in bonded]).reshape(-1, 2)
    species[net.pb] = SPECIES_CODE["Pb"]
    final[net.pb] = 2 * net.ij
    species[net.cs] = SPECIES_CODE["Cs"]
    final[net.cs] = 2 * net.cs_ij + 1
    return net, species, final, int(n_duplicates)


def _sofs_tiled(xy, amp, fit_ok, layout, owner, *, halo_px, options, compute):
    """Per-tile SOFS (core + ``halo_px``), stitched: (network, species, message)."""
    import dask

    tasks = []
    for t in layout:
        y0, y1, x0, x1 = t.core
        cols = np.flatnonzero((xy[:, 0] >= x0 - 0.5 - halo_px) & (xy[:, 0] < x1 - 0.5 + halo_px)
                              & (xy[:, 1] >= y0 - 0.5 - halo_px) & (xy[:, 1] < y1 - 0.5 + halo_px))
        tasks.append(dask.delayed(tile_sofs, pure=True)(cols, xy[cols], amp[cols], **options))
    labels = compute(*tasks)
    twice, n_conf, n_rej, n_drop = stitch_labels(len(xy), labels, owner)
    good = np.isfinite(xy).all(axis=1) & np.isfinite(amp) & (amp > 0) & fit_ok
    net, species, _, n_dup = stitched_network(twice, amp, good)
    notes = []
    if net.n_octahedra == 0:
        msgs = sorted({lab.message for lab in labels if lab.message})
        notes.append(msgs[0] if msgs else "no complete PbX6 octahedron found")
    if n_conf or n_rej or n_dup:
        notes.append(f"stitching: {n_conf} columns labelled differently across tiles, {n_rej} "
                     f"tile links rejected, {n_dup} lattice sites claimed twice")
    if n_drop:
        notes.append(f"{n_drop} separate networks in other tiles dropped (largest kept)")
    return net, species, "; ".join(notes)


def analyze_frame_tiled(image, *, pixel_size_nm, config=None, tile_px=512, scheduler="threads",
                        frame=0, image_std=None, stages=None, fit_options=None,
                        network="global", sofs_halo_uc=_SOFS_HALO_UC, kernel_threads=None,
                        num_workers=None):
    """Analyse one frame tile by tile with Dask; same result type as ``analyze_frame``.

    Detection once per frame and the fit per tile
    (:func:`pvq_dask.parallel.tiles.detect_fit_tiled`), the classifier once on all columns,
    then the network: ``network="global"`` runs SOFS once on the frame's column table (it
    needs no pixels: ~1 s per 10k columns), which makes the network exactly the
    whole-frame one; ``network="tiles"`` runs SOFS per tile on the columns of its core plus
    ``sofs_halo_uc`` lattice cells and stitches the tiles (:func:`stitch_labels`). SOFS is a
    greedy search whose choices at the particle rim and next to background peaks depend on
    the order it reaches them, so per-tile searches can differ there from the whole-frame
    one (measured in tests/test_tiles.py). Species, trust and metrics are computed once for
    the frame either way. ``tile_px=0`` runs the same kernels on the whole frame as one tile.

    Parameters
    ----------
    image : ndarray or dask.array.Array (H, W)
    pixel_size_nm : float
    config : AnalysisConfig, optional
    tile_px : int or (int, int)
        Tile core size in px (rows, columns); 0 = whole frame.
    scheduler : str or distributed.Client
        ``"threads"`` (default), ``"synchronous"``, ``"processes"`` or a Client.
    frame : int
        Frame number written into the tables.
    image_std : ndarray (H, W), optional
        Monte-Carlo std of a denoised frame (see ``analyze_frame``).
    stages : sequence of str, optional
        Subset of ``("atoms", "network")``; default the config's.
    fit_options : dict, optional
        Extra keyword arguments of ``fit_columns``.
    network : {"global", "tiles"}
        Where SOFS runs (see above).
    sofs_halo_uc : float
        SOFS halo in pseudo-cubic cells (``network="tiles"``).
    kernel_threads, num_workers : int, optional
        Numba threads per tile task; size of the local pool.

    Returns
    -------
    FrameResult
    """
    cfg = AnalysisConfig() if config is None else config
    stages = tuple(cfg.stages if stages is None else stages)
    if network not in ("global", "tiles"):
        raise ValueError(f"network must be 'global' or 'tiles', got {network!r}")
    fit, info = detect_fit_tiled(image, config=cfg, tile_px=tile_px, scheduler=scheduler,
                                 image_std=image_std, fit_options=fit_options,
                                 kernel_threads=kernel_threads, num_workers=num_workers)
    t = dict(info["timings_s"])
    empty = FrameResult(atoms=empty_table(ATOM_COLUMNS), octahedra=empty_table(OCTAHEDRA_COLUMNS),
                        cells=empty_table(CELL_COLUMNS), timings_s=t)
    if len(fit["x_px"]) == 0:
        empty.message = "no atom columns found"
        return empty
    t0 = time.perf_counter()
    fit = drop_duplicates(fit)
    xy = np.c_[fit["x_px"], fit["y_px"]]
    amp = np.asarray(fit["amplitude"], float)
    sigma = 0.5 * (np.asarray(fit["sigma_x_px"]) + np.asarray(fit["sigma_y_px"]))
    species, conf = classify_columns(xy, amp, sigma, method=cfg.classify_method)
    t["classify"] = time.perf_counter() - t0
    result = FrameResult(atoms=atoms_table(fit, species, conf, frame, pixel_size_nm),
                         octahedra=empty.octahedra, cells=empty.cells, timings_s=t)
    if "network" not in stages:
        return result
    t0 = time.perf_counter()
    fit_ok = np.asarray(fit["fit_ok"], bool)
    usable = np.isfinite(xy).all(axis=1) & np.isfinite(amp) & (amp > 0)
    options = {"branching": cfg.sofs_branching, "depth": cfg.sofs_depth,
               "n_candidates": cfg.sofs_candidates}
    layout = info["tiles"]
    if network == "global" or len(layout) == 1 or usable.sum() < _MIN_SEED_COLUMNS:
        found = sofs(xy, amp, fit_ok=fit_ok, **options)
        net, found_species, result.message = found.network, found.species, found.message
        result.basis_px = found.basis_px
    else:
        # every tile searches with the frame's lattice spacing
        result.basis_px = np.array(estimate_basis(xy[usable]))
        options["a_px"] = float(np.linalg.norm(result.basis_px[0]))
        owner = owner_tile(xy, image.shape, tile_px=tile_px)
        net, found_species, result.message = _sofs_tiled(
            xy, amp, fit_ok, layout, owner, halo_px=sofs_halo_uc * options["a_px"],
            options=options, compute=compute_with(scheduler, num_workers))
    t["sofs"] = time.perf_counter() - t0
    if net.n_octahedra == 0:
        return result
    t0 = time.perf_counter()
    network_tables(result, fit, species, conf, found_species, net, pixel_size_nm=pixel_size_nm,
                    shell_width_uc=cfg.shell_width_uc, frame=frame, bond_prior=cfg.bond_prior)
    t["metrics"] = time.perf_counter() - t0
    return result
