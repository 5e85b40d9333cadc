"""``pvq synth``: synthetic CsPbX3 dot frames with exact truth tables."""

import json
from pathlib import Path

from pvq_dask.cli._common import add_command, positive_float, positive_int

__all__ = ["add_parser", "write_synthetic"]

#: The paper's dot size; shrunk by default so the dot fills at most this fraction of a frame.
_PAPER_DOT_NM = 11.0
_MAX_DOT_FRACTION = 0.8


def write_synthetic(out_dir, *, case="coreshell", size=1024, seed=0, dose_e_per_A2=None,
                    n_frames=None, dot_size_nm=None):
    """Synthesize a case and write image(s), clean image(s), truth CSVs and params.json.

    Returns the path of the written image (``image.tif``, or ``series.tif`` for several
    frames).
    """
    import numpy as np
    import pandas as pd

    from pvq_dask import __version__
    from pvq_dask.kernels.synth import SynthParams, synthesize_frame, synthesize_series
    from pvq_dask.store import write_tiff
    from pvq_dask.store.provenance import to_jsonable

    overrides = {"shape": (size, size)}
    if dose_e_per_A2 is not None:
        overrides["dose_e_per_A2"] = dose_e_per_A2
    if n_frames is not None:
        overrides["n_frames"] = n_frames
    params = SynthParams.preset(case, **overrides)
    if dot_size_nm is None:
        dot_size_nm = min(_PAPER_DOT_NM, _MAX_DOT_FRACTION * size * params.pixel_size_nm)
    params = SynthParams.preset(case, dot_size_nm=dot_size_nm, **overrides)
    rng = np.random.default_rng(seed)
    series = params.n_frames > 1
    frames = synthesize_series(params, rng=rng) if series else [synthesize_frame(params, rng=rng)]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"generator": f"pvq synth (pvq_dask {__version__})", "case": case, "seed": seed,
            "dose_e_per_A2": params.dose_e_per_A2}
    image_path = out / ("series.tif" if series else "image.tif")
    stack = np.stack([f.image for f in frames]) if series else frames[0].image
    clean = np.stack([f.clean for f in frames]) if series else frames[0].clean
    write_tiff(image_path, stack, pixel_size_nm=params.pixel_size_nm, metadata=meta)
    write_tiff(out / "clean.tif", clean, pixel_size_nm=params.pixel_size_nm,
               metadata={**meta, "noise": "none (expected counts)"})
    for name in ("atoms", "octahedra", "cells"):
        table = pd.concat([getattr(f, name) for f in frames], ignore_index=True)
        table.to_csv(out / f"{name}.csv", index=False)
    record = {"case": case, "seed": seed, "pvq_dask": __version__,
              "pixel_size_nm": params.pixel_size_nm,
              "read_noise_counts": frames[0].read_noise_counts,
              "n_frames": len(frames), "image": image_path.name,
              "params": params.to_dict()}
    (out / "params.json").write_text(json.dumps(to_jsonable(record), indent=2) + "\n")
    return image_path


def _run(args):
    path = write_synthetic(args.out_dir, case=args.case, size=args.size, seed=args.seed,
                           dose_e_per_A2=args.dose, n_frames=args.frames,
                           dot_size_nm=args.dot_size_nm)
    print(f"wrote {path} (+ clean.tif, atoms.csv, octahedra.csv, cells.csv, params.json) "
          f"to {path.parent}")
    return 0


def add_parser(subparsers):
    from pvq_dask.kernels.synth import CASES

    p = add_command(
        subparsers, "synth", help="write synthetic dot images with exact truth tables",
        description="Synthesize [001] Pbnm CsPbX3 quantum-dot frames (seeded) and write "
                    "image.tif (series.tif for several frames) with the pixel size in its "
                    "metadata, clean.tif (noise-free expected counts), the truth tables "
                    "atoms.csv, octahedra.csv, cells.csv and params.json.",
        epilog="example: pvq synth out/ --case segregated --size 1024 --seed 3\n"
               "         pvq ingest out/image.tif -o out.pvq")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if missing)")
    p.add_argument("--case", default="coreshell", choices=sorted(CASES),
                   help="coreshell: the paper's CsPbI3 dot (default); segregated: Br-rich "
                        "region; uniform: one tilt; clean: no noise; series: drifting "
                        "in-situ series")
    p.add_argument("--size", type=positive_int, default=1024,
                   help="frame size in px (square; default 1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--dose", type=positive_float, default=None, metavar="E_PER_A2",
                   help="electron dose in e/A^2 (default: the case's, 220)")
    p.add_argument("--frames", type=positive_int, default=None, metavar="N",
                   help="number of frames (default: 1, or 6 for --case series)")
    p.add_argument("--dot-size-nm", type=positive_float, default=None,
                   help=f"dot edge length in nm (default {_PAPER_DOT_NM:g}, shrunk to "
                        f"{_MAX_DOT_FRACTION * 100:.0f}%% of the frame when it would not fit)")
    p.set_defaults(func=_run)
    return p
