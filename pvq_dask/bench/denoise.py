"""Denoising benchmark on seeded synthetic frames with a known clean image.

For each method: PSNR and SSIM against the clean image (skimage.metrics), wall time per
frame, and, when the column fitter is available, the downstream halide position RMSE
(columns fitted from their true positions on the denoised frame, so detection plays no
part). S2S methods also report how well their MC std map is calibrated (RMS std / RMSE).

Run ``python -m pvq_dask.bench.denoise --size 256 --steps 300`` (CPU) or with
``--device cuda`` on a GPU node.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

__all__ = ["bench_denoise", "bench_absf_time", "METHODS"]

METHODS = ("raw", "absf", "bm3d", "s2s", "s2sred-fast", "s2sred-paper")


def _psnr_ssim(den, clean):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = float(np.ptp(clean))
    return (float(peak_signal_noise_ratio(clean, den, data_range=rng)),
            float(structural_similarity(clean, den, data_range=rng)))


def _halide_rmse_pm(den, frame):
    """Position RMSE (pm) of halide columns fitted on ``den`` from their true positions."""
    try:
        from pvq_dask.kernels.fit import fit_columns
    except ImportError:
        return None
    atoms = frame.atoms
    sel = atoms["inside"].to_numpy() & (atoms["species"].to_numpy() == "X")
    truth = atoms.loc[sel, ["x_px", "y_px"]].to_numpy()
    all_xy = atoms.loc[atoms["inside"].to_numpy(), ["x_px", "y_px"]].to_numpy()
    res = fit_columns(den, all_xy, sigma_px=float(np.median(atoms["sigma_px"])), rng=0)
    is_x = atoms.loc[atoms["inside"].to_numpy(), "species"].to_numpy() == "X"
    fitted = np.c_[res["x_px"], res["y_px"]][is_x]
    ok = np.asarray(res["fit_ok"])[is_x] & np.isfinite(fitted).all(axis=1)
    if not ok.any():
        return None
    err = np.linalg.norm(fitted[ok] - truth[ok], axis=1)
    return float(np.sqrt(np.mean(err**2)) * frame.pixel_size_nm * 1000.0)


def _run_method(name, image, *, device, seed, n_steps, n_mc, n_threads):
    """(denoised, std or None, info) for one method."""
    from pvq_dask.kernels.absf import absf

    if name == "raw":
        return image, None, {}
    if name == "absf":
        return absf(image)[0], None, {}
    if name == "bm3d":
        from pvq_dask.kernels.denoise import estimate_sigma, get_prior, normalise

        y, lo, hi = normalise(image)
        import torch

        out = get_prior("bm3d")(torch.as_tensor(y), estimate_sigma(y)).numpy()
        return out * (hi - lo) + lo, None, {"sigma_norm": estimate_sigma(y)}
    from pvq_dask.kernels.denoise import denoise_s2sred

    kw = {"s2s": {"profile": "fast", "prior": None},
          "s2sred-fast": {"profile": "fast"},
          "s2sred-paper": {"profile": "paper"}}[name]
    res = denoise_s2sred(image, device=device, rng=seed, n_steps=n_steps, n_mc=n_mc,
                         n_threads=n_threads, **kw)
    info = {k: v for k, v in res.info.items() if k not in ("settings", "loss_history")}
    return res.mean, res.std, info


def bench_denoise(*, size=256, dose_e_per_A2=50.0, seed=0, methods=METHODS, device="cpu",
                  out_json=None, n_steps=None, n_mc=None, n_threads=None, case="coreshell",
                  progress=None, out_npz=None):
    """Benchmark the denoisers on one synthetic frame; returns (and optionally saves) a dict.

    Parameters
    ----------
    size : int
        Frame side in px (256 on CPU, 1024 for the paper's comparison on a GPU).
    dose_e_per_A2 : float
        Dose of the synthetic frame (low dose: 50).
    seed : int
        Seeds the frame and the S2S runs.
    methods : sequence of str
        Any of :data:`METHODS`; methods whose optional dependency is missing are reported
        with an ``"error"`` entry instead of numbers.
    device : str
        Torch device for the S2S methods.
    out_json : str or Path, optional
        Write the result there as JSON.
    n_steps, n_mc : int, optional
        Override the S2S profiles' step and MC-pass counts (CPU runs cannot afford the
        ``paper`` schedule); the values used are in each method's ``info``.
    n_threads : int, optional
        Torch CPU threads.
    progress : callable, optional
        ``progress(name, row)`` after each method (e.g. to print as results come).
    out_npz : str or Path, optional
        Save the frame, its clean image and every method's output (and MC std) there.

    Returns
    -------
    dict
        ``{"config": ..., "machine": ..., "methods": {name: {"psnr_db", "ssim",
        "time_s", "halide_rmse_pm", "std_rms_over_rmse", "info"}}}``.
    """
    from pvq_dask.kernels.synth import SynthParams, synthesize_frame

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    frame = synthesize_frame(
        SynthParams.preset(case, shape=(size, size), dose_e_per_A2=dose_e_per_A2), rng=seed)
    image, clean = frame.image, frame.clean
    out = {
        "config": {"size": size, "dose_e_per_A2": dose_e_per_A2, "seed": seed, "case": case,
                   "device": device, "n_steps": n_steps, "n_mc": n_mc},
        "machine": _machine(device),
        "methods": {},
    }
    arrays = {"image": image, "clean": clean}
    for name in methods:
        t0 = time.perf_counter()
        try:
            den, std, info = _run_method(name, image, device=device, seed=seed,
                                         n_steps=n_steps, n_mc=n_mc, n_threads=n_threads)
        except ImportError as exc:
            out["methods"][name] = {"error": str(exc)}
            continue
        dt = time.perf_counter() - t0
        psnr, ssim = _psnr_ssim(den, clean)
        row = {"psnr_db": psnr, "ssim": ssim, "time_s": dt,
               "halide_rmse_pm": _halide_rmse_pm(den, frame), "info": info}
        if std is not None:
            rmse = float(np.sqrt(np.mean((den - clean) ** 2)))
            row["std_rms_over_rmse"] = float(np.sqrt(np.mean(std**2)) / rmse)
        out["methods"][name] = row
        arrays[name] = den
        if std is not None:
            arrays[name + "_std"] = std
        if out_npz is not None:
            np.savez_compressed(out_npz, **arrays)
        if progress is not None:
            progress(name, row)
    if out_json is not None:
        Path(out_json).write_text(json.dumps(out, indent=2, default=str))
    return out


def bench_absf_time(*, size=2048, repeats=3, seed=0):
    """Best-of-``repeats`` wall time (s) of :func:`~pvq_dask.kernels.absf.absf` on a
    ``size``^2 Poisson frame (acceptance: < 1 s for 2048^2 on CPU).

    Examples
    --------
    >>> bench_absf_time(size=64, repeats=1) < 1.0
    True
    """
    from pvq_dask.kernels.absf import absf

    frame = np.random.default_rng(seed).poisson(6.0, (size, size)).astype(np.float64)
    best = np.inf
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        absf(frame)
        best = min(best, time.perf_counter() - t0)
    return float(best)


def _machine(device):
    info = {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor()}
    try:
        import torch

        info["torch"] = torch.__version__
        if str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dose", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--n-mc", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    ap.add_argument("--npz", default=None, help="npz file for the images")
    ap.add_argument("--absf-size", type=int, default=2048,
                    help="also time ABSF on a frame of this side (0: skip)")
    a = ap.parse_args(argv)
    if a.absf_size:
        print(f"absf {a.absf_size}^2: {bench_absf_time(size=a.absf_size):.3f} s (best of 3)")
    bench_denoise(size=a.size, dose_e_per_A2=a.dose, seed=a.seed,
                  methods=tuple(a.methods.split(",")), device=a.device, out_json=a.out,
                  n_steps=a.steps, n_mc=a.n_mc, n_threads=a.threads, progress=_print_row,
                  out_npz=a.npz)


def _print_row(name, row):
    if "error" in row:
        print(f"{name:14s} skipped: {row['error']}", flush=True)
        return
    hal = row["halide_rmse_pm"]
    cal = row.get("std_rms_over_rmse")
    steps = row["info"].get("steps_run")
    print(f"{name:14s} PSNR {row['psnr_db']:6.2f} dB  SSIM {row['ssim']:.3f}  "
          f"{row['time_s']:8.1f} s  halide RMSE {'n/a' if hal is None else f'{hal:.1f} pm'}"
          f"{'' if cal is None else f'  std/RMSE {cal:.2f}'}"
          f"{'' if steps is None else f'  steps {steps}'}", flush=True)


if __name__ == "__main__":
    main()
