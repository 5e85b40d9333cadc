"""Per-frame tasks: read from the store, run kernels, write results and status flags.

Each function takes only the store path, the frame number and plain-dict config, so it can
run in any worker process and be retried safely (it overwrites only its own frame).
"""

from pathlib import Path

import numpy as np

from pvq_dask.kernels.config import AnalysisConfig

__all__ = ["denoise_frame_task", "process_frame_task", "frame_summary"]


def denoise_frame_task(path, t, cfg_d):
    """Prefilter/denoise frame ``t``; return the name of the image group to analyse.

    ABSF always runs (and is stored); S2SRED then denoises the ABSF output or the raw
    frame, as ``cfg_d["s2s_input"]`` says.
    """
    cfg = AnalysisConfig.from_dict(cfg_d)
    if cfg.denoise == "none":
        return "raw"
    from pvq_dask.kernels.absf import absf
    from pvq_dask.store import ResultStore

    store = ResultStore.open(path, mode="r+")
    raw = store.read_frame("raw", t)
    filtered, _ = absf(raw)
    store.write_frame("absf", t, filtered)
    store.set_done("absf", t)
    if cfg.denoise == "absf":
        return "absf"
    from pvq_dask.kernels.denoise import denoise_s2sred

    ckpt = Path(path) / "checkpoints" / f"s2sred_frame{t:05d}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    # With the ABSF input the MC std is calibrated against the raw frame (see denoise_s2sred)
    source, reference = (filtered, raw) if cfg.s2s_input == "absf" else (raw, None)
    res = denoise_s2sred(source, profile=cfg.denoise_profile, device=cfg.device,
                         rng=cfg.seed + t, checkpoint_path=str(ckpt), reference=reference)
    store.write_frame("denoised", t, res.mean)
    store.write_frame("denoised", t, res.std, name="std")
    store.set_done("denoise", t)
    return "denoised"


def frame_summary(t, result, shell_width_uc):
    """Small dict describing one analysed frame (printed by the CLI, returned by tasks)."""
    from pvq_dask.kernels.stats import summarize_octahedra

    octs = result.octahedra
    s = {"frame": int(t), "n_atoms": int(len(result.atoms)), "n_octahedra": int(len(octs)),
         "n_trusted": int((octs["region"] != "edge_excluded").sum()) if len(octs) else 0,
         "message": result.message, "timings_s": result.timings_s,
         "bond_prior": dict(result.bond_prior)}
    if len(octs):
        stats = summarize_octahedra(octs, shell_width_uc=shell_width_uc,
                                    metrics=["theta3_deg"])["metrics"]["theta3_deg"]
        for region in ("core", "shell"):
            r = stats[region]
            s[f"{region}_theta3_deg"] = (float(r["mean"]), float(r["sem"]), int(r["n"]))
    return s


def process_frame_task(path, t, cfg_d, source="raw"):
    """Atoms, network and metrics of frame ``t``, written as Parquet partitions."""
    from pvq_dask.kernels.frame import analyze_frame
    from pvq_dask.store import ResultStore

    cfg = AnalysisConfig.from_dict(cfg_d)
    store = ResultStore.open(path, mode="r+")
    image = store.read_frame(source, t)
    std = store.read_frame("denoised", t, name="std") if source == "denoised" else None
    raw = store.read_frame("raw", t) if source != "raw" else None
    if not np.isfinite(image).any():
        raise ValueError(f"{path}: frame {t} has no finite pixels")
    if cfg.tile_px:
        from pvq_dask.parallel.stitch import analyze_frame_tiled

        result = analyze_frame_tiled(image, pixel_size_nm=store.pixel_size_nm, config=cfg,
                                     frame=t, image_std=std, tile_px=cfg.tile_px,
                                     network=cfg.tile_network, scheduler="threads")
    else:
        result = analyze_frame(image, pixel_size_nm=store.pixel_size_nm, config=cfg, frame=t,
                               image_std=std, raw=raw)
    store.write_table("atoms", t, result.atoms)
    store.set_done("atoms", t)
    if "network" in cfg.stages:
        store.write_table("octahedra", t, result.octahedra)
        store.write_table("cells", t, result.cells)
        store.set_done("network", t)
    return frame_summary(t, result, cfg.shell_width_uc)
