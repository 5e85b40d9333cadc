"""Denoising benchmark on seeded synthetic frames with a known clean image and truth.

Each frame holds a whole dot (centred, carbon around it), so the particle margins and the
octahedral network exist. For each method and seed: PSNR and SSIM against the clean image
(skimage.metrics), wall time of the denoiser per frame, and the downstream numbers a user
sees: the denoised frame goes through :func:`~pvq_dask.kernels.frame.analyze_frame` (with
``raw=`` the raw frame and, for S2S methods, ``image_std=`` their MC std) and is scored
against truth: halide position RMSE, theta MAE, octahedra recall overall and at the
margins, core/shell theta3, theta3 z-score std, false columns
(:mod:`pvq_dask.bench._denoise_score`). The halide RMSE of fits started at the true
positions is kept as a second number. Results are reported per seed and pooled.

The S2S methods denoise the raw frame or its ABSF output (``s2s_input``; the default is
``pvq analyze``'s, :attr:`AnalysisConfig.s2s_input`), so the benchmark measures what the
pipeline runs.

CPU: ``python -m pvq_dask.bench.denoise --size 480 --dot-nm 5.5 --seeds 0,1 --steps 300
--n-mc 16 --threads 1`` (or ``pvq bench denoise`` with the same options); GPU: add
``--device cuda``.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from pvq_dask.kernels.config import S2S_INPUTS, AnalysisConfig

__all__ = ["bench_denoise", "bench_absf_time", "run_method", "METHODS", "S2S_METHODS"]

METHODS = ("raw", "absf", "bm3d", "s2s", "s2sred-fast", "s2sred-paper")
#: Methods that run the S2S network (their input is ``s2s_input``).
S2S_METHODS = ("s2s", "s2sred-fast", "s2sred-paper")
_S2S_KW = {"s2s": {"profile": "fast", "prior": None},
           "s2sred-fast": {"profile": "fast"},
           "s2sred-paper": {"profile": "paper"}}


def _psnr_ssim(den, clean):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = float(np.ptp(clean))
    return (float(peak_signal_noise_ratio(clean, den, data_range=rng)),
            float(structural_similarity(clean, den, data_range=rng)))


def run_method(name, image, *, s2s_input="absf", s2s_profile=None, device="cpu", seed=0,
               n_steps=None, n_mc=None, n_threads=None):
    """``(denoised, std or None, info)`` of one method on a raw frame.

    Parameters
    ----------
    name : str
        One of :data:`METHODS`.
    image : ndarray (H, W)
        The raw frame.
    s2s_input : {"raw", "absf"}
        What the S2S methods denoise: the raw frame or its ABSF output (the paper's).
    s2s_profile : str, optional
        Run every S2S method with this profile instead of its own (``"test"`` for smoke
        tests); ``s2s`` keeps ``prior=None``.
    device, seed, n_steps, n_mc, n_threads
        Passed to :func:`~pvq_dask.kernels.denoise.denoise_s2sred`.
    """
    from pvq_dask.kernels.absf import absf

    if name == "raw":
        return image, None, {}
    if name == "absf":
        return absf(image)[0], None, {}
    if name == "bm3d":
        import torch

        from pvq_dask.kernels.denoise import estimate_sigma, get_prior, normalise

        y, lo, hi = normalise(image)
        sigma = estimate_sigma(y)
        out = get_prior("bm3d")(torch.as_tensor(y), sigma).numpy()
        return out * (hi - lo) + lo, None, {"sigma_norm": sigma}
    if name not in _S2S_KW:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    if s2s_input not in S2S_INPUTS:
        raise ValueError(f"s2s_input must be one of {S2S_INPUTS}, got {s2s_input!r}")
    from pvq_dask.kernels.denoise import denoise_s2sred

    kw = dict(_S2S_KW[name])
    if s2s_profile is not None:
        kw["profile"] = s2s_profile
    if s2s_input == "absf":  # as the pipeline: denoise ABSF, calibrate the std on raw
        kw.update(image=absf(image)[0], reference=image)
    else:
        kw["image"] = image
    res = denoise_s2sred(device=device, rng=seed, n_steps=n_steps, n_mc=n_mc,
                         n_threads=n_threads, **kw)
    info = {k: v for k, v in res.info.items() if k not in ("settings", "loss_history")}
    return res.mean, res.std, {**info, "s2s_input": s2s_input}


def bench_denoise(*, size=480, dot_size_nm=5.5, dose_e_per_A2=50.0, seeds=(0,),
                  methods=METHODS, s2s_input=None, s2s_profile=None, device="cpu",
                  n_steps=None, n_mc=None, n_threads=None, case="coreshell", progress=None,
                  out_json=None, out_npz=None):
    """Benchmark the denoisers on seeded whole-dot frames; returns (and optionally saves) a dict.

    Parameters
    ----------
    size : int
        Frame side in px.
    dot_size_nm : float
        Dot size; the frame must hold the whole dot (``frames[seed]["carbon_margin_px"]``
        in the result: > 0, ideally > 15 px). 480 px and 5.5 nm: ~390 columns, ~88
        octahedra, 64-69 at the margins, 5-9 in the core.
    dose_e_per_A2 : float
        Dose of the synthetic frames (low dose: 50).
    seeds : sequence of int
        One frame per seed; the seed also seeds the S2S runs.
    methods : sequence of str
        Any of :data:`METHODS`; a method whose optional dependency is missing is reported
        with an ``"error"`` entry instead of numbers.
    s2s_input : {"raw", "absf"}, optional
        What the S2S methods denoise; default :attr:`AnalysisConfig.s2s_input`.
    s2s_profile : str, optional
        Profile for every S2S method instead of its own (``"test"`` in tests).
    device : str
        Torch device for the S2S methods.
    n_steps, n_mc : int, optional
        Override the S2S profiles' step and MC-pass counts (CPU runs cannot afford the
        ``fast`` or ``paper`` schedules); the values used are in each method's ``info``.
    n_threads : int, optional
        Torch CPU threads.
    case : str
        Synthetic case (:data:`~pvq_dask.kernels.synth.CASES`).
    progress : callable, optional
        ``progress(name, seed, row)`` after each method and seed.
    out_json, out_npz : str or Path, optional
        Write the result as JSON; save every frame, clean image and method output (and MC
        std) as ``{name}_s{seed}`` arrays in an npz.

    Returns
    -------
    dict
        ``{"config", "machine", "frames": {seed: geometry}, "methods": {name: {pooled
        numbers (see :func:`~pvq_dask.bench._denoise_score.summarise`), "per_seed":
        {seed: numbers and "info"}}}}``.
    """
    from pvq_dask.bench._denoise_score import (
        frame_geometry,
        frame_scores,
        pool,
        summarise,
        whole_dot_frame,
    )

    cfg = AnalysisConfig()
    s2s_input = cfg.s2s_input if s2s_input is None else s2s_input
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if s2s_input not in S2S_INPUTS:
        raise ValueError(f"s2s_input must be one of {S2S_INPUTS}, got {s2s_input!r}")
    seeds = [int(s) for s in seeds]
    out = {
        "config": {"size": size, "dot_size_nm": dot_size_nm, "dose_e_per_A2": dose_e_per_A2,
                   "seeds": seeds, "case": case, "device": device, "s2s_input": s2s_input,
                   "s2s_profile": s2s_profile, "n_steps": n_steps, "n_mc": n_mc,
                   "n_threads": n_threads},
        "machine": _machine(device), "frames": {}, "methods": {},
    }
    scores, rows, arrays = {m: [] for m in methods}, {m: {} for m in methods}, {}
    for seed in seeds:
        frame = whole_dot_frame(size=size, dot_size_nm=dot_size_nm,
                                dose_e_per_A2=dose_e_per_A2, seed=seed, case=case)
        out["frames"][str(seed)] = frame_geometry(frame)
        image, clean = frame.image, frame.clean
        arrays.update({f"image_s{seed}": image, f"clean_s{seed}": clean})
        for name in methods:
            if "error" in out["methods"].get(name, {}):
                continue
            t0 = time.perf_counter()
            try:
                den, std, info = run_method(name, image, s2s_input=s2s_input,
                                            s2s_profile=s2s_profile, device=device,
                                            seed=seed, n_steps=n_steps, n_mc=n_mc,
                                            n_threads=n_threads)
            except ImportError as exc:
                out["methods"][name] = {"error": str(exc)}
                continue
            dt = time.perf_counter() - t0
            sc = frame_scores(den, frame, std=std, raw=None if name == "raw" else image,
                              config=cfg)
            psnr, ssim = _psnr_ssim(den, clean)
            sc["a"].update(psnr_db=np.array([psnr]), ssim=np.array([ssim]),
                           time_s=np.array([dt]))
            if std is not None:
                sc["a"].update(std_sq=np.array([np.mean(std**2)]),
                               err_sq=np.array([np.mean((den - clean) ** 2)]))
            scores[name].append(sc)
            rows[name][str(seed)] = {**summarise(sc), "info": info}
            arrays[f"{name}_s{seed}"] = den
            if std is not None:
                arrays[f"{name}_std_s{seed}"] = std
            if out_npz is not None:
                np.savez_compressed(out_npz, **arrays)
            if progress is not None:
                progress(name, seed, rows[name][str(seed)])
    for name in methods:
        if name not in out["methods"]:
            out["methods"][name] = {**summarise(pool(scores[name])), "per_seed": rows[name]}
    if out_json is not None:
        Path(out_json).write_text(json.dumps(out, indent=2, default=_json_default))
    return out


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


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


def add_arguments(parser):
    """The benchmark's options (shared by ``pvq bench denoise`` and ``python -m``)."""
    parser.add_argument("--size", type=int, default=480, help="frame side in px (480)")
    parser.add_argument("--dot-nm", type=float, default=5.5, help="dot size in nm (5.5)")
    parser.add_argument("--dose", type=float, default=50.0, help="dose in e/A^2 (50)")
    parser.add_argument("--seeds", default="0", help="comma-separated frame seeds (0)")
    parser.add_argument("--case", default="coreshell", help="synthetic case (coreshell)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--s2s-input", choices=S2S_INPUTS, default=None,
                        help="what the S2S methods denoise (default: pvq analyze's, "
                             f"{AnalysisConfig().s2s_input})")
    parser.add_argument("--profile", default=None,
                        help="run every S2S method with this profile (e.g. test)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--steps", type=int, default=None, help="S2S steps (profile's)")
    parser.add_argument("--n-mc", type=int, default=None, help="S2S MC passes (profile's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", "--out", dest="json", metavar="OUT.json", default=None,
                        help="also write the full result here")
    parser.add_argument("--npz", default=None, help="npz file for the images")
    parser.add_argument("--absf-size", type=int, default=0,
                        help="also time ABSF on a frame of this side (e.g. 2048; 0: skip)")
    return parser


def run_from_args(args):
    """Run the benchmark from parsed :func:`add_arguments` options, printing a table."""
    if args.absf_size:
        print(f"absf {args.absf_size}^2: {bench_absf_time(size=args.absf_size):.3f} s "
              "(best of 3)", flush=True)
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    print(_HEADER, flush=True)
    out = bench_denoise(size=args.size, dot_size_nm=args.dot_nm, dose_e_per_A2=args.dose,
                        seeds=seeds, methods=tuple(args.methods.split(",")),
                        s2s_input=args.s2s_input, s2s_profile=args.profile,
                        device=args.device, n_steps=args.steps, n_mc=args.n_mc,
                        n_threads=args.threads, case=args.case, progress=print_row,
                        out_json=args.json, out_npz=args.npz)
    print(f"frames: {json.dumps(out['frames'])}")
    print(f"pooled over seeds {seeds} (S2S input: {out['config']['s2s_input']}):")
    print(_HEADER)
    for name, row in out["methods"].items():
        print_row(name, "all", row)
    return out


_HEADER = ("method        seed  PSNR  SSIM   time_s  halRMSE true0  th3MAE marg  th3z "
           "colRec marg  FP fitOK octRec marg  any  core/shell th3 (truth)")


def print_row(name, seed, row):
    """One line of the results table (see ``_HEADER``)."""
    if "error" in row:
        print(f"{name:13s} skipped: {row['error']}", flush=True)
        return
    cs = (f"{row['core_theta3_deg']:5.2f}/{row['shell_theta3_deg']:5.2f} "
          f"({row['core_theta3_truth_deg']:5.2f}/{row['shell_theta3_truth_deg']:5.2f})")
    print(f"{name:13s} {seed!s:>4s} {row['psnr_db']:5.2f} {row['ssim']:5.3f} "
          f"{row['time_s']:8.1f} {row['halide_rmse_pm']:7.1f} "
          f"{row['halide_rmse_true_starts_pm']:5.1f} {row['theta3_mae_deg']:6.2f} "
          f"{row['theta3_mae_margin_deg']:4.2f} {row['theta3_z_std']:5.2f} "
          f"{row['column_recall']:6.3f} {row['column_recall_margin']:5.3f} "
          f"{row['false_columns']:3d} {row['fit_ok_frac']:5.2f} {row['oct_recall']:6.3f} "
          f"{row['oct_recall_margin']:5.3f} {row['oct_any_recall_margin']:5.3f}  {cs}"
          + (f"  std/err {row['std_rms_over_rmse']:.2f}" if "std_rms_over_rmse" in row
             else ""), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_from_args(add_arguments(ap).parse_args(argv))


if __name__ == "__main__":
    main()
