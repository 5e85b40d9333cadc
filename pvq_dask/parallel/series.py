"""In-situ series: drift, tracked octahedra and a time table for a result store.

Steps, each reading its inputs from the store (design.md section 4):

1. frames not yet analysed run through :func:`~pvq_dask.parallel.pipeline.analyze_store`;
2. one Dask task per frame registers it against the reference frame
   (:func:`~pvq_dask.kernels.register.estimate_scan_drift`);
3. on the client, :func:`~pvq_dask.kernels.track.track_octahedra` links every frame's
   octahedra to the reference numbering; the drift is then refined from the matched Pb
   positions (:func:`~pvq_dask.kernels.register.fit_drift`: drift, scan drift and the
   particle's own rotation and isotropic strain; ~50 sites give a few hundredths of a px)
   and the tracks recomputed with it;
4. ``tables/tracks/`` and ``tables/series/`` are written per frame, and the time table
   (:data:`TIME_COLUMNS`) is returned.
"""

import numpy as np
import pandas as pd

from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.kernels.register import DRIFT_COLUMNS, DriftFit, estimate_scan_drift, fit_drift
from pvq_dask.kernels.stats import summarize_octahedra
from pvq_dask.kernels.track import TRACK_COLUMNS, track_octahedra
from pvq_dask.parallel.scheduler import client_for

__all__ = ["analyze_series", "register_frame_task", "format_time_table", "TIME_COLUMNS"]

#: Columns of the time table (one row per frame). ``drift_*``: displacement of the frame's
#: middle scan row relative to the reference frame; ``scan_drift_*``: extra displacement
#: over one frame's scan relative to the reference; ``drift_source``: ``lattice`` (fit to
#: tracked Pb) or ``image`` (registration only); ``strain``, ``rotation_deg``: the
#: particle's own isotropic strain and rotation relative to the reference (lattice fit only,
#: else 0); ``image_drift_*``: the registration; ``*_theta3_*``, ``n_core``, ``n_shell``:
#: statistics of the octahedra tracked in that frame (none when it did not link).
TIME_COLUMNS = (
    "frame", "drift_x_px", "drift_y_px", "scan_drift_x_px", "scan_drift_y_px", "strain",
    "rotation_deg", "drift_source",
    "image_drift_x_px", "image_drift_y_px", "n_octahedra", "n_tracked", "n_matched",
    "link_agreement", "core_theta3_deg", "core_theta3_sem_deg", "n_core",
    "shell_theta3_deg", "shell_theta3_sem_deg", "n_shell",
)
_GROUP_OF_DENOISER = {"none": "raw", "absf": "absf", "s2sred": "denoised"}
#: Automatic reference: the first frame with this share of the best frame's octahedra (a
#: network built on the wrong sublattice typically has half).
_REFERENCE_SHARE = 0.8


def register_frame_task(path, group, reference, t, n_bands=3):
    """Drift of frame ``t`` of image group ``group`` relative to frame ``reference``."""
    from pvq_dask.store import ResultStore

    store = ResultStore.open(path, mode="r")
    h, w = store.shape
    if t == reference:
        fit = DriftFit(shift_px=np.zeros(2), centre_px=np.array([(w - 1) / 2.0, (h - 1) / 2.0]))
        return {"frame": int(t), **fit.as_row()}
    ref = store.read_frame(group, reference)
    img = store.read_frame(group, t)
    for k, a in ((reference, ref), (t, img)):
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: frame {k} of '{group}' has missing pixels; ingest or "
                             "denoise it before registering")
    return {"frame": int(t), **estimate_scan_drift(ref, img, n_bands=n_bands).as_row()}


def _check_frames(store, frames, reference_frame):
    n = store.n_frames
    frames = list(range(n)) if frames is None else sorted({int(t) for t in frames})
    bad = [t for t in frames if not 0 <= t < n]
    if bad:
        raise ValueError(f"{store.path}: frames {bad} out of range (store has {n} frames)")
    if reference_frame is not None and reference_frame not in frames:
        raise ValueError(f"{store.path}: reference frame {reference_frame} is not among the "
                         f"frames analysed ({frames[0]}..{frames[-1]})")
    return frames


def _pick_reference(store, frames, reference_frame):
    """The given reference; else the first frame with at least ``_REFERENCE_SHARE`` of the
    most octahedra."""
    rows = store.table_rows("octahedra")
    counts = np.array([rows.get(t, 0) for t in frames])
    if reference_frame is None:
        reference_frame = frames[int(np.argmax(counts >= _REFERENCE_SHARE * counts.max(initial=0)))]
    if rows.get(reference_frame, 0) < 3:
        raise ValueError(f"{store.path}: reference frame {reference_frame} has no octahedral "
                         "network to track against; choose another reference_frame")
    return int(reference_frame)


def _track(octs, image_drift, height, reference, min_matches):
    """Links with the image drift, drift refined from the links, links again."""
    tracks, links = track_octahedra(octs, image_drift, height_px=height,
                                    reference_frame=reference)
    drift = _lattice_drift(octs, tracks, image_drift, reference, height, min_matches)
    tracks, links = track_octahedra(octs, drift, height_px=height, reference_frame=reference)
    return drift, tracks, links


def _register(path, group, reference, frames, scheduler):
    with client_for(scheduler) as client:
        if client is None:
            import dask

            tasks = [dask.delayed(register_frame_task)(path, group, reference, t)
                     for t in frames]
            rows = dask.compute(*tasks, scheduler=scheduler)
        else:
            futures = [client.submit(register_frame_task, path, group, reference, t,
                                     pure=False) for t in frames]
            rows = client.gather(futures)
    return pd.DataFrame(list(rows), columns=list(DRIFT_COLUMNS))


def _lattice_drift(octs, tracks, drift, reference, height_px, min_matches):
    """Refine the drift of each frame from its tracked Pb positions (else keep the image's)."""
    pos = tracks.merge(octs[["frame", "oct_id", "x_px", "y_px"]], on=["frame", "oct_id"])
    ref = pos[pos["frame"] == reference][["i_global", "j_global", "x_px", "y_px"]]
    out = drift.copy()
    out["drift_source"] = "image"
    out["n_matched"] = 0
    for t, p in pos.groupby("frame"):
        m = p.merge(ref, on=["i_global", "j_global"], suffixes=("", "_ref"))
        row = out.index[out["frame"] == t]
        out.loc[row, "n_matched"] = len(m)
        if t == reference:
            out.loc[row, "drift_source"] = "lattice"
            continue
        if len(m) < min_matches:
            continue
        try:
            fit = fit_drift(m[["x_px_ref", "y_px_ref"]].to_numpy(float),
                            m[["x_px", "y_px"]].to_numpy(float), height_px=height_px)
        except (ValueError, np.linalg.LinAlgError):
            continue  # degenerate matches: keep the registration
        for k, v in fit.as_row().items():
            out.loc[row, k] = v
        out.loc[row, "drift_source"] = "lattice"
    return out


def _theta3_stats(o, shell_width_uc):
    out = {}
    stats = summarize_octahedra(o, shell_width_uc=shell_width_uc,
                                metrics=["theta3_deg"])["metrics"].get("theta3_deg")
    for region in ("core", "shell"):
        r = stats[region] if stats else {"mean": np.nan, "sem": np.nan, "n": 0}
        out[f"{region}_theta3_deg"] = float(r["mean"])
        out[f"{region}_theta3_sem_deg"] = float(r["sem"])
        out[f"n_{region}"] = int(r["n"])
    return out


def _time_table(frames, drift, image_drift, octs, tracks, links, shell_width_uc):
    by_frame = dict(tuple(octs.groupby("frame")))
    tracked_ids = {t: set(g["oct_id"]) for t, g in tracks.groupby("frame")}
    n_tracked = tracks.groupby("frame").size()
    rows = []
    for t in frames:
        d = drift[drift["frame"] == t].iloc[0]
        im = image_drift[image_drift["frame"] == t].iloc[0]
        o = by_frame.get(t, octs.iloc[:0])
        link = links.get(t)
        # statistics over the tracked octahedra only: a network that does not link to the
        # reference lattice (wrong sublattice, failed search) is not this particle's
        row = {"frame": t, "drift_x_px": d["drift_x_px"], "drift_y_px": d["drift_y_px"],
               "scan_drift_x_px": d["scan_drift_x_px"], "scan_drift_y_px": d["scan_drift_y_px"],
               "strain": d["strain"], "rotation_deg": d["rotation_deg"],
               "drift_source": d["drift_source"], "image_drift_x_px": im["drift_x_px"],
               "image_drift_y_px": im["drift_y_px"], "n_octahedra": len(o),
               "n_tracked": int(n_tracked.get(t, 0)), "n_matched": int(d["n_matched"]),
               "link_agreement": np.nan if link is None else link.agreement}
        row.update(_theta3_stats(o[o["oct_id"].isin(tracked_ids.get(t, ()))], shell_width_uc))
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(TIME_COLUMNS))
    for c in ("frame", "n_octahedra", "n_tracked", "n_matched", "n_core", "n_shell"):
        table[c] = table[c].astype(np.int64)
    return table


def analyze_series(store_path, config=None, *, scheduler="synchronous", reference_frame=None,
                   frames=None, analyze=True, image_group=None, min_lattice_matches=8,
                   progress=None):
    """Drift, tracked octahedra and time-resolved core/shell tilt of an in-situ series.

    Parameters
    ----------
    store_path : str or Path
        A ``RESULT.pvq`` store holding the series (``pvq ingest``).
    config : AnalysisConfig, optional
        Used to analyse frames whose network is not done yet, and for the shell width.
    scheduler : str or distributed.Client
        As in :func:`~pvq_dask.parallel.pipeline.analyze_store`.
    reference_frame : int, optional
        Frame whose position and lattice numbering are the series' reference (its drift is
        0). Default: the first frame with at least 80 % as many octahedra as the best
        frame (a frame whose network failed makes a poor reference); if most frames then
        fail to link to it, the largest network among those.
    frames : list of int, optional
        Frames to include (default all).
    analyze : bool
        Analyse frames whose ``network`` stage is not done (else they count as empty).
    image_group : str, optional
        Image group to register (default: the group the config analyses, else ``raw``).
    min_lattice_matches : int
        Tracked Pb sites shared with the reference needed to refine a frame's drift from
        the lattice; fewer keep the image registration.
    progress : callable, optional
        Passed to ``analyze_store``.

    Returns
    -------
    pandas.DataFrame
        The time table, :data:`TIME_COLUMNS`, one row per frame. Also written: tables
        ``tracks`` (:data:`~pvq_dask.kernels.track.TRACK_COLUMNS`) and ``series`` (the time
        table), one partition per frame.
    """
    from pvq_dask.parallel.pipeline import analyze_store
    from pvq_dask.store import ResultStore

    cfg = AnalysisConfig() if config is None else config
    if "network" not in cfg.stages:
        raise ValueError("a series needs the 'network' stage (octahedra) in config.stages")
    path = str(store_path)
    store = ResultStore.open(path, mode="r")
    frames = _check_frames(store, frames, reference_frame)
    if analyze:
        done = store.done("network")
        todo = [t for t in frames if not done[t]]
        if todo:
            analyze_store(path, cfg, scheduler=scheduler, frames=todo, progress=progress)
    group = image_group or _GROUP_OF_DENOISER[cfg.denoise]
    if not store.has_frames(group):
        group = "raw"
    octs = store.read_table("octahedra", frames)
    height = store.shape[0]
    reference = _pick_reference(store, frames, reference_frame)
    image_drift = _register(path, group, reference, frames, scheduler)
    drift, tracks, links = _track(octs, image_drift, height, reference,
                                  int(min_lattice_matches))
    unlinked = [t for t, v in links.items() if v is None]
    if reference_frame is None and len(unlinked) > 0.5 * len(links):
        # most networks disagree with the chosen reference: it was the odd one out, so take
        # the largest network among the majority
        rows = store.table_rows("octahedra")
        reference = max(unlinked, key=lambda t: rows.get(t, 0))
        image_drift = _register(path, group, reference, frames, scheduler)
        drift, tracks, links = _track(octs, image_drift, height, reference,
                                      int(min_lattice_matches))
    table = _time_table(frames, drift, image_drift, octs, tracks, links, cfg.shell_width_uc)

    writer = ResultStore.open(path, mode="r+")
    by_frame = dict(tuple(tracks.groupby("frame")))
    empty = pd.DataFrame({c: pd.Series(dtype=tracks[c].dtype) for c in TRACK_COLUMNS})
    for t in frames:
        writer.write_table("tracks", t, by_frame.get(t, empty))
        writer.write_table("series", t, table[table["frame"] == t])
    return table


def format_time_table(table):
    """The time table as printable lines (what ``pvq series`` shows); px and degrees.

    Examples
    --------
    >>> row = dict.fromkeys(TIME_COLUMNS, 0.0) | {"frame": 1, "drift_source": "lattice",
    ...     "drift_x_px": 1.5, "shell_theta3_deg": 8.75, "shell_theta3_sem_deg": 0.08,
    ...     "core_theta3_deg": float("nan"), "n_tracked": 58, "n_octahedra": 60}
    >>> print(format_time_table(pd.DataFrame([row])))
    frame  drift_x  drift_y  scan_x  scan_y  rot_deg    strain  tracked  core_theta3  shell_theta3
        1    +1.50    +0.00   +0.00   +0.00   +0.000  +0.0e+00    58/60            -    8.75+-0.08
    """
    def tilt(mean, sem):
        return "-" if not np.isfinite(mean) else f"{mean:.2f}+-{sem:.2f}"

    lines = [f"{'frame':>5}  {'drift_x':>7}  {'drift_y':>7}  {'scan_x':>6}  {'scan_y':>6}  "
             f"{'rot_deg':>7}  {'strain':>8}  {'tracked':>7}  {'core_theta3':>11}  "
             f"{'shell_theta3':>12}"]
    for r in table.itertuples(index=False):
        lines.append(
            f"{r.frame:>5}  {r.drift_x_px:>+7.2f}  {r.drift_y_px:>+7.2f}  "
            f"{r.scan_drift_x_px:>+6.2f}  {r.scan_drift_y_px:>+6.2f}  {r.rotation_deg:>+7.3f}  "
            f"{r.strain:>+8.1e}  {f'{r.n_tracked}/{r.n_octahedra}':>7}  "
            f"{tilt(r.core_theta3_deg, r.core_theta3_sem_deg):>11}  "
            f"{tilt(r.shell_theta3_deg, r.shell_theta3_sem_deg):>12}"
            + ("" if r.drift_source == "lattice" else "  (drift: image registration)"))
    return "\n".join(lines)
