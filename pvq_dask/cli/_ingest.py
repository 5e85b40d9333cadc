"""``pvq ingest``: image files -> a new RESULT.pvq store."""

from pvq_dask.cli._common import add_command, positive_float, progress_factory

__all__ = ["add_parser"]


def _run(args):
    from pvq_dask.store import ingest_files

    store = ingest_files(args.inputs, args.output, pixel_size_nm=args.pixel_size_nm,
                         signal=args.signal, overwrite=args.overwrite,
                         progress=progress_factory("ingest"))
    h, w = store.shape
    print(f"wrote {store.n_frames} frame(s) of {h} x {w} px at {store.pixel_size_nm:.6g} nm/px "
          f"to {store.path}")
    return 0


def add_parser(subparsers):
    from pvq_dask.store import SUPPORTED_SUFFIXES

    p = add_command(
        subparsers, "ingest", help="read image files into a new result store",
        description="Read STEM images and write their frames, in order, into a new result "
                    "store (RESULT.pvq: Zarr images + Parquet tables). Supported: "
                    f"{' '.join(SUPPORTED_SUFFIXES)}. All inputs must share one frame shape. "
                    "The store is built next to the target and renamed into place at the "
                    "end, so a failure never leaves a half-written store.",
        epilog="example: pvq ingest scan_*.emd --signal iDPC -o run1.pvq")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (frames appended)")
    p.add_argument("-o", "--output", required=True, metavar="RESULT.pvq",
                   help="result directory to create")
    p.add_argument("--pixel-size-nm", type=positive_float, default=None, metavar="P",
                   help="pixel size in nm; required when a file has no calibration, "
                        "overrides the files' calibration otherwise")
    p.add_argument("--signal", default=None, metavar="NAME",
                   help="signal (detector) to read from multi-signal files such as Velox "
                        ".emd: iDPC, DPC, HAADF, DF4... (default: iDPC, else HAADF, else "
                        "the first image)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing result store at the output path (only once the "
                        "new one is complete)")
    p.set_defaults(func=_run)
    return p
