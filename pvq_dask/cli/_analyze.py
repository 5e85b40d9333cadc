"""``pvq analyze``: columns, octahedral network, metrics and maps of every frame."""

from pathlib import Path

from pvq_dask.cli._common import add_command, positive_float, progress_factory

__all__ = ["add_parser", "run_analyze"]


def _is_store(path):
    return Path(path).is_dir() and (Path(path) / "store.zarr").exists()


def run_analyze(inputs, output=None, *, config, pixel_size_nm=None, signal=None,
                scheduler="synchronous", frames=None, overwrite=False, progress=None):
    """Ingest ``inputs`` (unless it is one existing store) and analyse; return (path, summaries)."""
    from pvq_dask.parallel.pipeline import analyze_store, record_config
    from pvq_dask.store import ingest_files

    inputs = [Path(p) for p in inputs]
    if len(inputs) == 1 and _is_store(inputs[0]) and output in (None, inputs[0]):
        path = inputs[0]
    else:
        if output is None:
            raise ValueError("give -o RESULT.pvq to write the analysis of "
                             + ", ".join(str(p) for p in inputs))
        path = Path(output)
        ingest_files(inputs, path, pixel_size_nm=pixel_size_nm, signal=signal,
                     overwrite=overwrite, config={"command": "analyze", **config.to_dict()},
                     progress=progress_factory("ingest"))
    record_config(path, config)
    summaries = analyze_store(path, config, scheduler=scheduler, frames=frames,
                              progress=progress)
    return path, summaries


def _run(args):
    from pvq_dask.kernels.config import AnalysisConfig
    from pvq_dask.parallel.pipeline import summary_line

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    if "network" in stages and "atoms" not in stages:
        stages = ("atoms",) + stages
    cfg = AnalysisConfig(stages=stages, denoise=args.denoise, denoise_profile=args.profile,
                         s2s_input=args.s2s_input,
                         device=args.device, shell_width_uc=args.shell_width_uc,
                         classify_method=args.classify, seed=args.seed,
                         bond_prior=args.bond_prior,
                         tile_px=args.tile_px)
    frames = None if args.frames is None else [int(f) for f in args.frames.split(",")]
    bar = progress_factory("analyze")
    state = {"bar": None}

    def progress(done, total):
        if state["bar"] is None:
            state["bar"] = bar(range(total), total)
            state["it"] = iter(state["bar"])
        next(state["it"], None)

    path, summaries = run_analyze(args.inputs, args.output, config=cfg,
                                  pixel_size_nm=args.pixel_size_nm, signal=args.signal,
                                  scheduler=args.scheduler, frames=frames,
                                  overwrite=args.overwrite, progress=progress)
    print(summary_line(summaries))
    print(f"result: {path}  (pvq info {path}; pvq report {path})")
    return 0


def add_parser(subparsers):
    from pvq_dask.kernels.config import BOND_PRIORS, S2S_INPUTS, AnalysisConfig

    p = add_command(
        subparsers, "analyze", help="find columns, the octahedral network and its metrics",
        description="Detect and fit every atom column (batched 2D Gaussians with "
                    "uncertainties), classify Pb/X/Cs, find the halide sublattice and every "
                    "PbX6 octahedron with SOFS, and measure tilts, bond lengths, spacings, "
                    "core/shell statistics and maps. INPUT is an existing RESULT.pvq (analysed "
                    "in place) or image files (ingested into -o first).",
        epilog="examples:\n  pvq analyze dot.tif -o dot.pvq --pixel-size-nm 0.0168\n"
               "  pvq analyze dot.pvq --denoise absf --scheduler local")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="RESULT.pvq or image file(s)")
    p.add_argument("-o", "--output", metavar="RESULT.pvq", help="result store to write")
    p.add_argument("--pixel-size-nm", type=positive_float, help="pixel size (overrides file)")
    p.add_argument("--signal", help="signal of a multi-signal file (e.g. iDPC, HAADF)")
    p.add_argument("--stages", default="atoms,network,maps",
                   help="comma-separated subset of atoms,network,maps (default all)")
    p.add_argument("--denoise", choices=("none", "absf", "s2sred"), default="none",
                   help="prefilter/denoiser before fitting (default none)")
    p.add_argument("--profile", choices=("fast", "paper", "test"), default="fast",
                   help="S2SRED profile (default fast)")
    p.add_argument("--s2s-input", choices=S2S_INPUTS, default=AnalysisConfig().s2s_input,
                   help="what S2SRED denoises: the ABSF-prefiltered frame (the paper) or "
                        f"the raw frame (default {AnalysisConfig().s2s_input})")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="device for S2SRED (default cpu)")
    p.add_argument("--classify", choices=("mixture", "paper"), default="mixture",
                   help="provisional classifier before SOFS (default mixture)")
    p.add_argument("--shell-width-uc", type=int, default=3,
                   help="shell = outer N unit cells (default 3)")
    p.add_argument("--bond-prior", choices=BOND_PRIORS, default=AnalysisConfig().bond_prior,
                   help="X-Pb-X lengths: shrink towards the corner-sharing prediction from the "
                        "Pb across each bond as far as the frame's scatter allows "
                        "(corner_sharing, default) or use the halide positions alone (none)")
    p.add_argument("--tile-px", type=int, default=0,
                   help="fit one frame in tiles of this size with Dask threads (0 = whole "
                        "frame; try 1024 for 2048^2 frames on many cores)")
    p.add_argument("--scheduler", default="synchronous",
                   help="synchronous | threads | processes | local | tcp://host:port")
    p.add_argument("--frames", help="comma-separated frame numbers (default all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o store")
    p.set_defaults(func=_run)
    return p
