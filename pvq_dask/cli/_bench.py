"""``pvq bench``: speed and accuracy benchmarks on seeded synthetic frames."""

import json

from pvq_dask.cli._common import add_command, positive_int

__all__ = ["add_parser"]


def _print(result):
    print(json.dumps(result, indent=2, default=float))


def _fit(args):
    from pvq_dask.bench.fit import bench_fit

    _print(bench_fit(size=args.size, seed=args.seed, vs_atomap=args.vs_atomap,
                     dose_e_per_A2=args.dose, big_size=args.big_size or None,
                     out_json=args.json))
    return 0


def _frame(args):
    from pvq_dask.bench.frame import bench_frame

    _print(bench_frame(size=args.size, seed=args.seed, repeats=args.repeats,
                       out_json=args.json))
    return 0


def _network(args):
    from pvq_dask.bench.network import bench_network, markdown_table

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    print(markdown_table(bench_network(cases=cases, seeds=seeds, out_json=args.json)))
    return 0


def _denoise(args):
    from pvq_dask.bench.denoise import run_from_args

    run_from_args(args)
    return 0


def add_parser(subparsers):
    from pvq_dask.bench.denoise import add_arguments as add_denoise_arguments

    p = add_command(
        subparsers, "bench", help="benchmarks (fit, frame, network, denoise)",
        description="Benchmarks on seeded synthetic frames with exact truth. Each prints its "
                    "result (fit, frame: JSON; denoise: a table) and optionally writes JSON; "
                    "record results in docs/benchmarks.md.")
    sub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    f = sub.add_parser("fit", help="atoms/s and position RMSE vs CRLB (optionally vs Atomap)")
    f.add_argument("--size", type=positive_int, default=1024)
    f.add_argument("--vs-atomap", action="store_true", help="run Atomap in the same process")
    f.add_argument("--dose", type=float, default=220.0,
                   help="e/A^2 of the synthetic frames (220: the paper's; 44: 5x lower)")
    f.add_argument("--big-size", type=int, default=2048,
                   help="also time a frame of this side filled with columns (0: skip)")
    f.set_defaults(func=_fit)
    fr = sub.add_parser("frame", help="stage times and peak memory of a 2048^2 frame")
    fr.add_argument("--size", type=positive_int, default=2048)
    fr.add_argument("--repeats", type=positive_int, default=3)
    fr.set_defaults(func=_frame)
    n = sub.add_parser(
        "network", help="octahedra recall, theta/L errors and z-scores vs truth (a table)",
        description="The whole frame pipeline (no denoising) on synthetic dots, with the "
                    "corner-sharing bond prior and without it (direct), scored against truth.")
    n.add_argument("--cases", default="coreshell",
                   help="comma-separated names of pvq_dask.bench.network.CASES: coreshell, "
                        "rotated17, segregated, fine-pixels, coarse-pixels, rotated-40, "
                        "disorder2pm, disorder4pm, dose44, and the robustness sweep dose110, "
                        "haadf, no-carbon, mixed-br, wide-columns, dot6, dot15, thin-edges, "
                        "scan-distortion, opposite-sense, tilt-jitter1, bond-jitter5")
    n.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    n.add_argument("--json", metavar="OUT.json", help="also write the result here")
    n.set_defaults(func=_network)
    d = sub.add_parser(
        "denoise", help="PSNR/SSIM and downstream errors per denoiser",
        description="Raw, ABSF, BM3D, S2S and S2SRED on whole-dot synthetic frames: PSNR/SSIM, "
                    "time per frame, and the full analysis of each output scored against "
                    "truth (halide RMSE, theta MAE, octahedra recall overall and at the "
                    "margins, core/shell theta3, z-scores, false columns), per seed and "
                    "pooled. On CPU use --threads 1 and short schedules (--steps, --n-mc).")
    add_denoise_arguments(d)
    d.set_defaults(func=_denoise)
    for q in (f, fr):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", metavar="OUT.json", help="also write the result here")
    return p
