"""``pvq demo``: the main job on built-in synthetic data."""

from pathlib import Path

from pvq_dask.cli._common import add_command, positive_int, progress_factory

__all__ = ["add_parser", "run_demo"]


def run_demo(out_dir="pvq_demo", *, size=1024, seed=0):
    """Synthesize the paper's CsPbI3 dot, ingest it into ``OUT/demo.pvq``; return its path.

    Later stages (analysis, report) are added here as they land.
    """
    from pvq_dask.cli._synth import write_synthetic
    from pvq_dask.store import ingest_files

    out = Path(out_dir)
    image = write_synthetic(out / "synth", case="coreshell", size=size, seed=seed)
    result = out / "demo.pvq"
    ingest_files([image], result, overwrite=True, config={"command": "demo"},
                 progress=progress_factory("ingest"))
    return result


def _run(args):
    from pvq_dask.cli._info import format_info

    result = run_demo(args.output, size=args.size, seed=args.seed)
    print(f"synthetic data and truth tables: {Path(args.output) / 'synth'}")
    print(format_info(result))
    return 0


def add_parser(subparsers):
    p = add_command(
        subparsers, "demo", help="run the pipeline on a built-in synthetic dot",
        description="Synthesize the paper's CsPbI3 core/shell quantum dot with exact truth "
                    "(OUT/synth/), ingest it into OUT/demo.pvq and print what the result "
                    "holds. Re-running replaces OUT/demo.pvq.",
        epilog="example: pvq demo -o pvq_demo && pvq info pvq_demo/demo.pvq")
    p.add_argument("-o", "--output", default="pvq_demo", metavar="OUT",
                   help="output folder (default ./pvq_demo)")
    p.add_argument("--size", type=positive_int, default=1024,
                   help="frame size in px (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_run)
    return p
