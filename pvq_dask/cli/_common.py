"""Helpers shared by the ``pvq`` subcommands."""

import argparse
import math
import sys

__all__ = ["add_command", "positive_float", "positive_int", "progress_factory"]


def add_command(subparsers, name, *, help, description, epilog=None):
    """Register subcommand ``name`` with the shared options (``--debug``); returns its parser."""
    parser = subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks instead of one-line errors")
    return parser


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def progress_factory(desc, *, unit="frame"):
    """``wrap(iterable, total)`` showing a tqdm bar on an interactive stderr, else a no-op."""

    def wrap(iterable, total):
        if total < 2 or not sys.stderr.isatty():
            return iterable
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)

    return wrap
