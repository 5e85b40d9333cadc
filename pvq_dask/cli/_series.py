"""``pvq series``: drift, tracked octahedra and a time table for an in-situ series."""

from pvq_dask.cli._common import add_command

__all__ = ["add_parser"]


def _run(args):
    from pvq_dask.kernels.config import AnalysisConfig
    from pvq_dask.parallel.series import analyze_series, format_time_table

    cfg = AnalysisConfig(denoise=args.denoise, seed=args.seed)
    frames = None if args.frames is None else [int(f) for f in args.frames.split(",")]
    table = analyze_series(args.result, cfg, scheduler=args.scheduler,
                           reference_frame=args.reference_frame, frames=frames,
                           analyze=not args.no_analyze)
    print(format_time_table(table))
    return 0


def add_parser(subparsers):
    p = add_command(
        subparsers, "series", help="drift, tracked octahedra and metrics over time",
        description="For a multi-frame RESULT.pvq: analyse frames not yet analysed, measure "
                    "drift between and within frames against a reference frame, track every "
                    "octahedron through time (tables/tracks) and print the time table of "
                    "core/shell theta3 (tables/series).",
        epilog="example: pvq ingest series.tif -o run.pvq && pvq series run.pvq")
    p.add_argument("result", metavar="RESULT.pvq")
    p.add_argument("--reference-frame", type=int, help="reference frame (default: automatic)")
    p.add_argument("--frames", help="comma-separated frame numbers (default all)")
    p.add_argument("--denoise", choices=("none", "absf", "s2sred"), default="none")
    p.add_argument("--scheduler", default="synchronous",
                   help="synchronous | threads | processes | local | tcp://host:port")
    p.add_argument("--no-analyze", action="store_true", help="use existing tables only")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
    return p
