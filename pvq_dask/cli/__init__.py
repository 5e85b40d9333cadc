"""The ``pvq`` command line.

Each subcommand lives in its own module ``pvq_dask/cli/_<name>.py`` exposing
``add_parser(subparsers)``, which registers the subcommand (use
:func:`pvq_dask.cli._common.add_command`) and sets ``func(args) -> int`` as its default.
"""

import argparse
import importlib
import sys

from pvq_dask import __version__

__all__ = ["main", "build_parser"]

# To add a command: write pvq_dask/cli/_<name>.py with add_parser(subparsers) and add
# "<name>" here. Order is the order of `pvq --help`.
_COMMANDS = ("demo", "synth", "ingest", "analyze", "series", "info", "report", "bench")

#: Errors reported as one line (``pvq <cmd>: error: ...``, exit status 2) unless --debug.
_USER_ERRORS = (ValueError, OSError)


def build_parser():
    """The ``pvq`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="pvq",
        description="Quantitative PbX6 octahedral-network maps from atomic-resolution STEM "
                    "images of halide-perovskite quantum dots.",
        epilog="Run 'pvq COMMAND --help' for the options of one command. Start with "
               "'pvq demo'.")
    parser.add_argument("--version", action="version", version=f"pvq_dask {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"pvq_dask.cli._{name}").add_parser(sub)
    return parser


def main(argv=None):
    """Run ``pvq`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Examples
    --------
    >>> main(["--version"])  # doctest: +ELLIPSIS
    pvq_dask ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return int(args.func(args) or 0)
    except _USER_ERRORS as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pvq {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"pvq {args.command}: interrupted", file=sys.stderr)
        return 130
