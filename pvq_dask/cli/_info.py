"""``pvq info``: what a result store holds."""

from pvq_dask.cli._common import add_command

__all__ = ["add_parser", "format_info"]


def _sources(prov):
    inputs = prov.get("inputs") or []
    by_name = {s.get("file"): s for s in prov.get("frame_sources") or []}
    lines = []
    for entry in inputs:
        src = by_name.get(entry.get("name"), {})
        span = src.get("frames")
        frames = f", frames {span[0]}..{span[1] - 1}" if span else ""
        signal = f", signal {src['signal']}" if src.get("signal") else ""
        sha = (entry.get("sha256") or "")[:12]
        lines.append(f"{entry.get('name')} ({src.get('reader', prov.get('reader'))}{signal}"
                     f"{frames}) sha256 {sha}")
    return lines or ["(none recorded)"]


def format_info(path):
    """Multi-line summary of the result at ``path``: frames, pixel size, sources, stages
    done per frame, table sizes, maps."""
    from pvq_dask.store import STAGES, open_result

    res = open_result(path)
    store = res.store
    h, w = res.shape
    n = res.n_frames
    ps = res.pixel_size_nm
    prov = res.provenance
    packages = prov.get("packages") or {}
    git = prov.get("git_sha")
    lines = [
        f"{res.path}",
        f"  frames      {n} of {h} x {w} px (y, x)",
        f"  pixel size  {ps:.6g} nm  (field {w * ps:.2f} x {h * ps:.2f} nm)",
        f"  created     {prov.get('created_utc', '?')} with pvq_dask "
        f"{packages.get('pvq_dask', '?')}" + (f" (git {git[:12]})" if git else ""),
    ]
    sources = _sources(prov)
    lines.append(f"  sources     {sources[0]}")
    lines += [f"              {s}" for s in sources[1:]]
    status = res.status
    lines.append("  stages      " + ", ".join(f"{s} {int(status[s].sum())}/{n}" for s in STAGES))
    images = [g for g in ("raw", "absf", "denoised") if store.has_frames(g)]
    lines.append(f"  images      {', '.join(images) or 'none'}")
    names = list(dict.fromkeys(["atoms", "octahedra", "cells", *store.table_names()]))
    parts = []
    for name in names:
        rows = store.table_rows(name)
        parts.append(f"{name} {sum(rows.values())} rows in {len(rows)} frame(s)" if rows
                     else f"{name} -")
    lines.append(f"  tables      {'; '.join(parts)}")
    maps = res.maps
    if maps is None:
        lines.append("  maps        none")
    else:
        dims = " x ".join(f"{d} {maps.sizes[d]}" for d in maps.dims)
        lines.append(f"  maps        {', '.join(sorted(maps.data_vars))} ({dims})")
    return "\n".join(lines)


def _run(args):
    print(format_info(args.result))
    return 0


def add_parser(subparsers):
    p = add_command(
        subparsers, "info", help="summarise a result store",
        description="Print what a result store holds: frames, shape, pixel size, source "
                    "files, stages done per frame (e.g. 'atoms 3/3'), rows per table and "
                    "the maps present.",
        epilog="example: pvq info pvq_demo/demo.pvq")
    p.add_argument("result", metavar="RESULT.pvq", help="result directory")
    p.set_defaults(func=_run)
    return p
