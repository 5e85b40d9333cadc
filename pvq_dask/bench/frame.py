"""``pvq bench frame``: stage-by-stage wall time and peak memory of one large frame."""

import json
import platform
import time
import tracemalloc

import numpy as np

from pvq_dask.bench.score import score_atoms, score_octahedra
from pvq_dask.kernels.frame import analyze_frame
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

__all__ = ["bench_frame", "machine_info"]


def machine_info():
    """Where a benchmark ran (recorded with every result)."""
    import os

    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "numpy": np.__version__}


def bench_frame(*, size=2048, seed=0, case="coreshell", dot_size_nm=None, repeats=3,
                out_json=None):
    """Analyse a seeded synthetic frame (everything but denoising) and time each stage.

    The default dot fills a 2048^2 frame (~12k columns). Reports the median over
    ``repeats`` runs of each stage's wall time, the peak traced memory per stage (one
    extra traced run: tracing slows numpy, so it is not timed), and accuracy vs truth.
    """
    if dot_size_nm is None:
        dot_size_nm = 0.9 * size * 0.0168
    p = SynthParams.preset(case, shape=(size, size), dot_size_nm=dot_size_nm)
    t0 = time.perf_counter()
    f = synthesize_frame(p, rng=seed)
    synth_s = time.perf_counter() - t0
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        r = analyze_frame(f.image, pixel_size_nm=f.pixel_size_nm)
        r.timings_s["total"] = time.perf_counter() - t0
        runs.append(r.timings_s)
    tracemalloc.start()
    traced = analyze_frame(f.image, pixel_size_nm=f.pixel_size_nm)
    peak_total = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    stages = list(runs[0])
    atoms = score_atoms(traced.atoms, f.atoms, pixel_size_nm=f.pixel_size_nm)
    octs = score_octahedra(traced.octahedra, traced.atoms, f.octahedra, f.atoms)
    out = {
        "benchmark": "frame", "size": size, "seed": seed, "case": case,
        "n_truth_columns": int(len(f.atoms)), "n_columns": int(len(traced.atoms)),
        "n_octahedra": int(len(traced.octahedra)), "synth_s": synth_s,
        "median_s": {k: float(np.median([r[k] for r in runs])) for k in stages},
        "peak_mb": {**traced.peak_mb, "total": peak_total},
        "accuracy": {k: v for k, v in {**{f"atoms_{k}": v for k, v in atoms.items()},
                                       **{f"octahedra_{k}": v for k, v in octs.items()}}.items()
                     if not k.endswith("_pairs")},
        "machine": machine_info(),
    }
    if out_json:
        with open(out_json, "w") as fh:
            json.dump(out, fh, indent=2, default=float)
    return out
