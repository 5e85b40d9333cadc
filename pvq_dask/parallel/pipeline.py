"""Run the per-frame analysis over a result store with Dask.

One task per frame (design.md section 4): it reads its frame from the store, runs the
kernels, writes its own tables, images and status flags, and returns a small summary. No
data travels through ``scatter``; a failed or retried task never touches other frames.
Denoising tasks on a distributed cluster are pinned to GPU workers with
``resources={"GPU": 1}`` (annotations on array graphs are ignored, dask/dask#7036).
"""

import time

import numpy as np

from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.parallel.frame_task import denoise_frame_task, process_frame_task
from pvq_dask.parallel.scheduler import client_for

__all__ = ["analyze_store", "summary_line", "record_config"]


def record_config(store_path, config):
    """Keep the analysis config and its sha256 in the store's provenance (client side, once)."""
    import zarr

    from pvq_dask.store import ResultStore

    root = zarr.open_group(ResultStore.open(store_path).zarr_path, mode="r+", zarr_format=3)
    root.attrs["analysis"] = {"config": config.to_dict(), "config_sha256": config.sha256()}


def _frames(store_path, frames):
    from pvq_dask.store import ResultStore

    n = ResultStore.open(store_path, mode="r").n_frames
    if frames is None:
        return list(range(n))
    bad = [t for t in frames if not 0 <= t < n]
    if bad:
        raise ValueError(f"{store_path}: frames {bad} out of range (store has {n} frames)")
    return list(frames)


def analyze_store(store_path, config=None, *, scheduler="synchronous", frames=None,
                  gpu_timeout_s=600.0, progress=None):
    """Analyse frames of a ``RESULT.pvq`` store in place.

    Parameters
    ----------
    store_path : str or Path
    config : AnalysisConfig
    scheduler : str or distributed.Client
        ``"synchronous"`` (debugging, tests), ``"threads"``, ``"processes"``, ``"local"``
        (start a LocalCluster), an address ``"tcp://host:port"``, or a Client.
    frames : list of int, optional
        Frames to analyse (default all).
    gpu_timeout_s : float
        With ``device="cuda"`` on a cluster, give up with a clear message if no worker with
        a ``GPU`` resource takes a denoising task within this time.
    progress : callable, optional
        Called with (n_done, n_total) as frames finish.

    Returns
    -------
    list of dict
        One summary per frame (counts, core/shell theta3, message, timings).
    """
    cfg = AnalysisConfig() if config is None else config
    cfg_d = cfg.to_dict()
    frames = _frames(store_path, frames)
    path = str(store_path)
    with client_for(scheduler) as client:
        if client is None:
            import dask

            tasks = [dask.delayed(_whole_frame)(path, t, cfg_d) for t in frames]
            out = []
            for i, task in enumerate(tasks):
                out.append(task.compute(scheduler=scheduler))
                if progress:
                    progress(i + 1, len(tasks))
        else:
            out = _run_distributed(client, path, frames, cfg, cfg_d, gpu_timeout_s, progress)
    from pvq_dask.parallel.maps import build_maps

    if "maps" in cfg.stages and "network" in cfg.stages:
        build_maps(path, cfg)
    return out


def _whole_frame(path, t, cfg_d):
    return process_frame_task(path, t, cfg_d, denoise_frame_task(path, t, cfg_d))


def _wait_for_gpu_worker(client, timeout_s):
    """Block until some worker offers a GPU resource, or raise a clear error."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.scheduler_info()
        if any(w.get("resources", {}).get("GPU") for w in info.get("workers", {}).values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no Dask worker offers a GPU resource after {timeout_s:.0f} s: start GPU "
                "workers with '--resources GPU=1' or analyse with --device cpu")
        time.sleep(0.5)


def _run_distributed(client, path, frames, cfg, cfg_d, gpu_timeout_s, progress):
    from distributed import as_completed

    needs_gpu = cfg.denoise == "s2sred" and cfg.device == "cuda"
    if needs_gpu:
        _wait_for_gpu_worker(client, gpu_timeout_s)
    gpu = {"resources": {"GPU": 1}} if needs_gpu else {}
    futures = []
    for t in frames:
        source = client.submit(denoise_frame_task, path, t, cfg_d, pure=False, **gpu)
        futures.append(client.submit(process_frame_task, path, t, cfg_d, source, pure=False))
    results = {}
    for i, fut in enumerate(as_completed(futures)):
        r = fut.result()
        results[r["frame"]] = r
        if progress:
            progress(i + 1, len(futures))
    return [results[t] for t in frames]


def summary_line(summaries):
    """One printable line per frame."""
    lines = []
    for s in summaries:
        core, shell = s.get("core_theta3_deg"), s.get("shell_theta3_deg")
        txt = (f"frame {s['frame']}: {s['n_atoms']} columns, {s['n_octahedra']} octahedra "
               f"({s['n_trusted']} trusted)")
        if core is not None and np.isfinite(core[0]):
            txt += f"; core theta3 {core[0]:.2f} +- {core[1]:.2f} deg (n={core[2]})"
        if shell is not None and np.isfinite(shell[0]):
            txt += f", shell {shell[0]:.2f} +- {shell[1]:.2f} deg (n={shell[2]})"
        prior = s.get("bond_prior") or {}
        if np.isfinite(prior.get("tau_nm", np.nan)):
            txt += f"; bridge asymmetry tau {prior['tau_nm'] * 1000:.1f} pm"
        if s.get("message"):
            txt += f" [{s['message']}]"
        lines.append(txt)
    return "\n".join(lines)
