"""One frame, all stages: detect -> fit -> classify -> SOFS -> metrics (no Dask).

This is the per-frame "UDF": the Dask layer (``pvq_dask.parallel``) only schedules it, reads
its input from the store and writes its outputs back.
"""

import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from pvq_dask.kernels.classify import classify_columns
from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.kernels.crlb import NoiseModel, estimate_noise_model
from pvq_dask.kernels.fit import fit_columns
from pvq_dask.kernels.lattice import estimate_basis, merge_duplicates
from pvq_dask.kernels.metrics import cell_metrics, octahedra_metrics
from pvq_dask.kernels.peaks import find_columns, refine_com
from pvq_dask.kernels.schema import ATOM_COLUMNS, CELL_COLUMNS, OCTAHEDRA_COLUMNS, SPECIES
from pvq_dask.kernels.sofs import sofs

__all__ = ["FrameResult", "analyze_frame", "atoms_table", "drop_duplicates", "empty_table",
           "network_tables", "particle_support"]


def empty_table(columns):
    """An empty DataFrame with the given schema columns."""
    return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})


@dataclass
class FrameResult:
    """Tables and diagnostics of one analysed frame."""

    atoms: pd.DataFrame
    octahedra: pd.DataFrame
    cells: pd.DataFrame
    message: str = ""
    timings_s: dict = field(default_factory=dict)
    peak_mb: dict = field(default_factory=dict)
    basis_px: np.ndarray | None = None
    #: the bridge-asymmetry prior of the X-Pb-X lengths (``metrics.octahedra_metrics``)
    bond_prior: dict = field(default_factory=dict)


def drop_duplicates(fit):
    """Merge fits closer than a third of the column spacing (one column found twice)."""
    xy = np.c_[fit["x_px"], fit["y_px"]]
    ok = np.isfinite(xy).all(axis=1)
    if ok.sum() < 8:
        return fit
    u, _ = estimate_basis(xy[ok])
    keep = merge_duplicates(xy, np.nan_to_num(fit["amplitude"], nan=-np.inf),
                            min_separation_px=np.linalg.norm(u) / 6.0)
    keep |= ~ok
    if keep.all():
        return fit
    n = len(keep)
    return {k: (v[keep] if isinstance(v, np.ndarray) and len(v) == n else v)
            for k, v in fit.items()}


@contextmanager
def _stage(name, timings, peaks):
    """Time a stage; with tracemalloc tracing, also record its peak allocation in MB."""
    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0
    if tracing:
        peaks[name] = tracemalloc.get_traced_memory()[1] / 1e6


def atoms_table(fit, species, conf, frame, pixel_size_nm):
    n = len(fit["x_px"])
    return pd.DataFrame({
        "frame": np.full(n, frame, dtype=np.int64),
        "atom_id": np.arange(n, dtype=np.int64),
        "x_px": fit["x_px"], "y_px": fit["y_px"],
        "x_nm": fit["x_px"] * pixel_size_nm, "y_nm": fit["y_px"] * pixel_size_nm,
        "sigma_x_px": fit["sigma_x_px"], "sigma_y_px": fit["sigma_y_px"],
        "amplitude": fit["amplitude"], "background": fit["background"],
        "pos_err_px": fit["pos_err_px"], "fit_ok": np.asarray(fit["fit_ok"], bool),
        "species": np.array(SPECIES, dtype=object)[species],
        "species_conf": conf,
    })[list(ATOM_COLUMNS)]


def particle_support(raw):
    """Where columns may be: raw-frame columns dilated by 3/8 of a_pc, holes filled.

    Filters that keep only periodic components (ABSF) or denoisers leave lattice fringes in
    the vacuum next to a particle; columns found there are not real. Fringes a full column
    spacing (a/2) beyond the outermost raw column fall outside this support, while columns
    missed in the raw frame but surrounded by found ones stay inside.
    """
    raw = np.asarray(raw, dtype=np.float64)
    xy = find_columns(raw)
    if len(xy) < 8:
        return None
    u, _ = estimate_basis(xy)
    r = 0.75 * 0.5 * np.linalg.norm(u)
    mask = np.zeros(raw.shape, bool)
    ij = np.clip(np.rint(xy).astype(int), 0, np.array(raw.shape[::-1]) - 1)
    mask[ij[:, 1], ij[:, 0]] = True
    dist = ndi.distance_transform_edt(~mask)
    return ndi.binary_fill_holes(dist <= r)


def analyze_frame(image, *, pixel_size_nm, config=None, frame=0, image_std=None,
                  stages=None, raw=None):
    """Analyse one frame: every atom column, octahedron and cell with uncertainties.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw or denoised frame.
    pixel_size_nm : float
    config : AnalysisConfig, optional
    frame : int
        Frame number written into the tables.
    image_std : ndarray (H, W), optional
        Per-pixel standard deviation of ``image`` when it is a denoiser's output (the
        S2SRED Monte-Carlo std); the fit then weights pixels by it so position
        uncertainties account for the denoiser.
    stages : sequence of str, optional
        Subset of ``("atoms", "network")``; defaults to the config's stages.
    raw : ndarray (H, W), optional
        The unfiltered frame when ``image`` is a filtered/denoised one: columns are then
        only looked for inside the raw frame's particle (:func:`particle_support`).

    Returns
    -------
    FrameResult
    """
    cfg = AnalysisConfig() if config is None else config
    stages = tuple(cfg.stages if stages is None else stages)
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {image.shape}")
    t, mem = {}, {}
    with _stage("detect", t, mem):
        support = None if raw is None else particle_support(raw)
        try:  # estimated once, for detection and fit alike
            noise = estimate_noise_model(image)
        except ValueError:
            noise = None
        xy0 = find_columns(image, min_distance_px=cfg.min_distance_px, mask=support,
                           noise=noise)
        if len(xy0):
            xy0 = refine_com(image, xy0, radius_px=cfg.com_radius_px)
    empty = FrameResult(atoms=empty_table(ATOM_COLUMNS), octahedra=empty_table(OCTAHEDRA_COLUMNS),
                        cells=empty_table(CELL_COLUMNS), timings_s=t, peak_mb=mem)
    if len(xy0) == 0:
        empty.message = "no atom columns found"
        return empty
    with _stage("fit", t, mem):
        if image_std is not None:
            # A denoised frame has no shot noise left; its pixel uncertainty is the
            # denoiser's Monte-Carlo std. Pixels are treated as independent with that
            # variance (docs/method.md: a lower bound when denoiser errors are correlated).
            var = np.asarray(image_std, float) ** 2
            noise = NoiseModel(gain=0.0, read_var=float(np.nanmedian(var[np.isfinite(var)])))
        fit = fit_columns(image, xy0, noise=noise, rng=np.random.default_rng(cfg.seed),
                          reject_residual_frac=cfg.reject_residual_frac, tol=cfg.fit_tol)
    with _stage("classify", t, mem):
        fit = drop_duplicates(fit)
        xy = np.c_[fit["x_px"], fit["y_px"]]
        sigma = 0.5 * (np.asarray(fit["sigma_x_px"]) + np.asarray(fit["sigma_y_px"]))
        species, conf = classify_columns(xy, fit["amplitude"], sigma,
                                         method=cfg.classify_method)
    result = FrameResult(atoms=atoms_table(fit, species, conf, frame, pixel_size_nm),
                         octahedra=empty.octahedra, cells=empty.cells, timings_s=t, peak_mb=mem)
    if "network" not in stages:
        return result
    with _stage("sofs", t, mem):
        found = sofs(xy, fit["amplitude"], fit_ok=fit["fit_ok"], branching=cfg.sofs_branching,
                     depth=cfg.sofs_depth, n_candidates=cfg.sofs_candidates)
    result.basis_px = found.basis_px
    if found.message:
        result.message = found.message
    if found.network.n_octahedra == 0:
        return result
    with _stage("metrics", t, mem):
        network_tables(result, fit, species, conf, found.species, found.network,
                       pixel_size_nm=pixel_size_nm, shell_width_uc=cfg.shell_width_uc,
                       frame=frame, bond_prior=cfg.bond_prior)
    return result


def network_tables(result, fit, species, conf, found_species, network, *, pixel_size_nm,
                   shell_width_uc, frame, bond_prior="corner_sharing"):
    """Make SOFS's species final and fill ``result``'s octahedra and cells tables.

    The classifier's confidence stands where it agrees with SOFS, 0.5 where they disagree
    and 0 for unassigned columns. Shared by the whole-frame and the tiled paths.
    """
    xy = np.c_[fit["x_px"], fit["y_px"]]
    final_conf = np.where(species == found_species, conf, 0.5)
    final_conf[found_species == SPECIES.index("unassigned")] = 0.0
    result.atoms["species"] = np.array(SPECIES, dtype=object)[found_species]
    result.atoms["species_conf"] = final_conf
    diag = {}
    octs = pd.DataFrame(octahedra_metrics(xy, network, pixel_size_nm=pixel_size_nm,
                                          cov=fit["cov"], shell_width_uc=shell_width_uc,
                                          bond_prior=bond_prior, diagnostics=diag))
    result.bond_prior = diag.get("bond_prior", {})
    octs.insert(0, "frame", frame)
    cells = pd.DataFrame(cell_metrics(xy, network, pixel_size_nm=pixel_size_nm, cov=fit["cov"]))
    cells.insert(0, "frame", frame)
    result.octahedra = octs[list(OCTAHEDRA_COLUMNS)]
    result.cells = cells
