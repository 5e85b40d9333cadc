"""``pvq report``: a self-contained HTML report of an analysed result."""

from pathlib import Path

from pvq_dask.cli._common import add_command

__all__ = ["add_parser", "run_report"]


def run_report(path, out=None, *, frame=0, interactive=False, shell_width_uc=3):
    """Write ``OUT`` (default ``RESULT.pvq/report_frameNNNNN.html``); return its path."""
    from pvq_dask.report.html import build_report
    from pvq_dask.store import open_result

    result = open_result(path)
    if len(result.octahedra) == 0:
        raise ValueError(f"{path}: no octahedra to report; run 'pvq analyze {path}' first")
    out = Path(out) if out else Path(path) / f"report_frame{frame:05d}.html"
    build_report(result, out, frame=frame, interactive=interactive,
                 shell_width_uc=shell_width_uc)
    return out


def _run(args):
    out = run_report(args.result, args.output, frame=args.frame, interactive=args.interactive,
                     shell_width_uc=args.shell_width_uc)
    print(f"report: {out}")
    return 0


def add_parser(subparsers):
    p = add_command(
        subparsers, "report", help="write an HTML report (maps, core/shell, profiles)",
        description="Write a self-contained HTML page for one frame of an analysed result: "
                    "the image with the octahedral skeleton, theta/L/C/P maps, core/shell "
                    "statistics with standard errors, histograms, a line profile, and a GPA "
                    "cross-check of the lattice spacings.",
        epilog="example: pvq report dot.pvq --frame 0 --interactive")
    p.add_argument("result", metavar="RESULT.pvq")
    p.add_argument("-o", "--output", metavar="OUT.html", help="output file")
    p.add_argument("--frame", type=int, default=0, help="frame to report (default 0)")
    p.add_argument("--shell-width-uc", type=int, default=3, help="shell width (default 3)")
    p.add_argument("--interactive", action="store_true", help="add a bokeh theta3 map")
    p.set_defaults(func=_run)
    return p
