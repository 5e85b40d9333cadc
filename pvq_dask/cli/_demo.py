"""``pvq demo``: the main job on built-in synthetic data."""

from pathlib import Path

from pvq_dask.cli._common import add_command, positive_int, progress_factory

__all__ = ["add_parser", "run_demo"]


def run_demo(out_dir="pvq_demo", *, size=1024, seed=0, denoise="none", scheduler="synchronous"):
    """The main job on built-in data; returns (result path, summaries, report path).

    Synthesizes the paper's CsPbI3 core/shell dot with exact truth (``OUT/synth``), ingests
    it into ``OUT/demo.pvq``, analyses it (ABSF prefilter, columns, SOFS, metrics, maps)
    and writes the HTML report.
    """
    from pvq_dask.cli._analyze import run_analyze
    from pvq_dask.cli._report import run_report
    from pvq_dask.cli._synth import write_synthetic
    from pvq_dask.kernels.config import AnalysisConfig
    from pvq_dask.store import ingest_files

    out = Path(out_dir)
    image = write_synthetic(out / "synth", case="coreshell", size=size, seed=seed)
    result = out / "demo.pvq"
    ingest_files([image], result, overwrite=True, config={"command": "demo"},
                 progress=progress_factory("ingest"))
    cfg = AnalysisConfig(denoise=denoise, seed=seed)
    _, summaries = run_analyze([result], config=cfg, scheduler=scheduler)
    if not any(s["n_octahedra"] for s in summaries):
        return result, summaries, None       # nothing to report; the summary says why
    report = run_report(result, out / "report.html")
    return result, summaries, report


def _run(args):
    from pvq_dask.cli._info import format_info
    from pvq_dask.parallel.pipeline import summary_line

    result, summaries, report = run_demo(args.output, size=args.size, seed=args.seed,
                                         denoise=args.denoise)
    print(f"synthetic data and truth tables: {Path(args.output) / 'synth'}")
    print(summary_line(summaries))
    print(format_info(result))
    print(f"report: {report}" if report else "report: none (no octahedra found)")
    return 0


def add_parser(subparsers):
    p = add_command(
        subparsers, "demo", help="run the pipeline on a built-in synthetic dot",
        description="Synthesize the paper's CsPbI3 core/shell quantum dot with exact truth "
                    "(OUT/synth/), ingest it into OUT/demo.pvq, analyse it (columns, "
                    "SOFS, metrics, maps) and write OUT/report.html. Re-running replaces "
                    "OUT/demo.pvq.",
        epilog="example: pvq demo -o pvq_demo && pvq info pvq_demo/demo.pvq")
    p.add_argument("-o", "--output", default="pvq_demo", metavar="OUT",
                   help="output folder (default ./pvq_demo)")
    p.add_argument("--size", type=positive_int, default=1024,
                   help="frame size in px (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--denoise", choices=("none", "absf", "s2sred"), default="none",
                   help="prefilter/denoiser (default none: the most accurate at this dose)")
    p.set_defaults(func=_run)
    return p
