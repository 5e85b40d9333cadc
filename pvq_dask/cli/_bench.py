"""``pvq bench``: speed and accuracy benchmarks on seeded synthetic frames."""

import json

from pvq_dask.cli._common import add_command, positive_int

__all__ = ["add_parser"]


def _print(result):
    print(json.dumps(result, indent=2, default=float))


def _fit(args):
    from pvq_dask.bench.fit import bench_fit

    _print(bench_fit(size=args.size, seed=args.seed, vs_atomap=args.vs_atomap,
                     out_json=args.json))
    return 0


def _frame(args):
    from pvq_dask.bench.frame import bench_frame

    _print(bench_frame(size=args.size, seed=args.seed, repeats=args.repeats,
                       out_json=args.json))
    return 0


def _denoise(args):
    from pvq_dask.bench.denoise import bench_denoise

    kw = {"size": args.size, "seed": args.seed, "device": args.device, "out_json": args.json}
    if args.methods:
        kw["methods"] = tuple(args.methods.split(","))
    if args.dose is not None:
        kw["dose_e_per_A2"] = args.dose
    _print(bench_denoise(**kw))
    return 0


def add_parser(subparsers):
    p = add_command(
        subparsers, "bench", help="benchmarks (fit, frame, denoise)",
        description="Benchmarks on seeded synthetic frames with exact truth. Each prints and "
                    "optionally writes JSON; record results in docs/benchmarks.md.")
    sub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    f = sub.add_parser("fit", help="atoms/s and position RMSE vs CRLB (optionally vs Atomap)")
    f.add_argument("--size", type=positive_int, default=1024)
    f.add_argument("--vs-atomap", action="store_true", help="run Atomap in the same process")
    f.set_defaults(func=_fit)
    fr = sub.add_parser("frame", help="stage times and peak memory of a 2048^2 frame")
    fr.add_argument("--size", type=positive_int, default=2048)
    fr.add_argument("--repeats", type=positive_int, default=3)
    fr.set_defaults(func=_frame)
    d = sub.add_parser("denoise", help="PSNR/SSIM and downstream errors per denoiser")
    d.add_argument("--size", type=positive_int, default=256)
    d.add_argument("--dose", type=float, help="dose in e/A^2 (default 50)")
    d.add_argument("--methods", help="comma-separated subset, e.g. raw,absf,s2sred-fast")
    d.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    d.set_defaults(func=_denoise)
    for q in (f, fr, d):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", metavar="OUT.json", help="also write the result here")
    return p
