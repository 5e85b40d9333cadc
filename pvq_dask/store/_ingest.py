"""Build a result store from image files, all or nothing."""

import os
import shutil
import uuid
from pathlib import Path

from pvq_dask.store._errors import input_error
from pvq_dask.store.provenance import collect_provenance
from pvq_dask.store.readers import read_image
from pvq_dask.store.zarr_store import ResultStore

__all__ = ["ingest_files"]

#: Largest relative pixel-size difference between input files ingested together.
PIXEL_SIZE_RTOL = 0.005


def _read_all(paths, signal, pixel_size_nm):
    frames = [read_image(p, signal=signal, pixel_size_nm=pixel_size_nm) for p in paths]
    first = frames[0]
    for f in frames[1:]:
        if f.shape != first.shape:
            raise input_error(f.source, f"frame shape {f.shape} differs from {first.shape} of "
                                        f"{first.source}; all inputs must share one shape")
        if abs(f.pixel_size_nm - first.pixel_size_nm) > PIXEL_SIZE_RTOL * first.pixel_size_nm:
            raise input_error(f.source, f"pixel size {f.pixel_size_nm:.6g} nm differs from "
                                        f"{first.pixel_size_nm:.6g} nm of {first.source}; pass "
                                        "pixel_size_nm (--pixel-size-nm) to set one for all")
    return frames


def _check_target(out, overwrite):
    if not out.exists():
        return
    if not overwrite:
        raise input_error(out, "already exists (use --overwrite to replace it)")
    if not (out / "store.zarr").is_dir():
        raise input_error(out, "exists and is not a pvq result; refusing to replace it")


def ingest_files(paths, out, *, pixel_size_nm=None, signal=None, overwrite=False, config=None,
                 progress=None):
    """Read image files and write their frames, in order, into a new ``RESULT.pvq``.

    The store is built in a hidden temporary folder next to ``out`` and renamed into
    place at the end: a failure leaves no half-written store, and an existing ``out`` is
    replaced (``overwrite=True``) only after the new one is complete.

    Parameters
    ----------
    paths : sequence of path
        Input files (see :func:`pvq_dask.store.read_image`); frames are appended along t.
    out : path
        The ``RESULT.pvq`` directory to create.
    pixel_size_nm, signal : optional
        Passed to :func:`~pvq_dask.store.read_image` for every file.
    overwrite : bool
        Replace an existing result store at ``out``.
    config : dict, optional
        Extra configuration recorded in the provenance.
    progress : callable, optional
        ``progress(iterable, total)`` wrapping the frame loop (e.g. a tqdm factory).

    Returns
    -------
    ResultStore
        The new store, open read-only.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, str | os.PathLike) else paths)]
    if not paths:
        raise ValueError("no input files given")
    out = Path(out)
    _check_target(out, overwrite)
    frames = _read_all(paths, signal, pixel_size_nm)
    n_frames = sum(f.n_frames for f in frames)
    first = frames[0]
    sources, start = [], 0
    for f in frames:
        sources.append({"file": Path(f.source).name, "reader": f.reader, "signal": f.signal,
                        "frames": [start, start + f.n_frames]})
        start += f.n_frames
    cfg = {"command": "ingest", "pixel_size_nm": pixel_size_nm, "signal": signal,
           **(config or {})}
    prov = collect_provenance(config=cfg, inputs=paths, reader=first.reader,
                              signal=first.signal, pixel_size_nm=first.pixel_size_nm,
                              vendor_metadata=[f.metadata for f in frames])
    prov["frame_sources"] = sources
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        store = ResultStore.create(tmp, n_frames=n_frames, shape=first.shape,
                                   pixel_size_nm=first.pixel_size_nm, provenance=prov)
        jobs = [(f, i) for f in frames for i in range(f.n_frames)]
        loop = progress(jobs, len(jobs)) if progress is not None else jobs
        for t, (f, i) in enumerate(loop):
            store.write_frame("raw", t, f.data[i])
            store.set_done("ingest", t)
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ResultStore.open(out, mode="r")
