"""``pvq bench fit``: column detection + fit + classification speed and accuracy.

On a seeded synthetic frame (the generator's paper-dose CsPbI3 dot): our atoms/s, detection
recall and precision inside the particle, position RMSE per species in pm and as a multiple
of the Cramer-Rao bound (Poisson + read noise, constant background, all pixels of the column),
uncertainty calibration, species accuracy; with ``vs_atomap`` Atomap's own Gaussian
refinement on a subset of the same starting positions in the same run; and the wall time of
detect + fit + classify on a 2048^2 frame filled with ~12k columns.

What is timed: detection (``detect_s``) includes estimating the frame's noise model, which is
then passed to both :func:`~pvq_dask.kernels.peaks.find_columns` and
:func:`~pvq_dask.kernels.fit.fit_columns` (as :func:`~pvq_dask.kernels.frame.analyze_frame`
does); ``fit_s`` is the fit alone, the median of ``repeats`` identical calls (same frame,
same starts, same seed; the first call's result is the one scored). Our atoms/s is the
number of columns over ``fit_s``; Atomap's is its 300 columns over its one refinement call.
``summary`` holds the headline numbers: atoms/s on the 1024^2 and 2048^2 frames and their
ratios to Atomap's atoms/s measured in the same run.
"""

import json
import time

import numpy as np
from scipy.spatial import cKDTree

from pvq_dask.bench.frame import machine_info
from pvq_dask.kernels._frame_passes import render_columns
from pvq_dask.kernels.classify import classify_columns
from pvq_dask.kernels.crlb import crlb_position, estimate_noise_model
from pvq_dask.kernels.fit import fit_columns
from pvq_dask.kernels.peaks import find_columns, refine_com
from pvq_dask.kernels.schema import SPECIES
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

__all__ = ["bench_fit", "column_crlb", "score_fit"]

MATCH_PX = 3.0
_SPECIES = ("Pb", "X", "Cs")


def column_crlb(frame):
    """Per-truth-column CRLB (px) from its amplitude, width and true local background."""
    a = frame.atoms
    p = np.zeros((len(a), 8))
    p[:, 0], p[:, 1] = a.x_px, a.y_px
    p[:, 2] = p[:, 3] = a.sigma_px
    p[:, 4] = a.amplitude
    cols = render_columns(frame.clean.shape, p, np.ones(len(a), np.bool_), 5.0)
    h, w = frame.clean.shape
    ij = np.clip(np.rint(a[["x_px", "y_px"]].to_numpy()).astype(int), 0, [w - 1, h - 1])
    bg = (frame.clean - cols)[ij[:, 1], ij[:, 0]]
    return crlb_position(a.amplitude.to_numpy(), a.sigma_px.to_numpy(), np.maximum(bg, 0.0),
                         read_noise=frame.read_noise_counts)


def score_fit(frame, fit, species=None, *, crlb=None, subset=None):
    """Detection, position, calibration and species scores of a fit against the truth.

    ``subset`` restricts the truth to those rows (e.g. the columns given to Atomap).
    """
    a = frame.atoms
    truth = a[["x_px", "y_px"]].to_numpy()
    inside = a.inside.to_numpy().copy()
    if subset is not None:
        keep = np.zeros(len(a), bool)
        keep[subset] = True
        inside &= keep
    crlb = column_crlb(frame) if crlb is None else crlb
    xy = np.c_[fit["x_px"], fit["y_px"]]
    out = {}
    if len(xy) == 0:
        return {"recall": 0.0, "precision": 0.0}
    d, j = cKDTree(xy).query(truth)
    found = d < MATCH_PX
    d2, k = cKDTree(truth).query(xy)
    det_in = inside[k]
    out["recall"] = float(found[inside].mean()) if inside.any() else float("nan")
    if subset is None:
        out["precision"] = float((d2[det_in] < MATCH_PX).mean()) if det_in.any() else 0.0
        out["false_positives"] = int((d2 >= MATCH_PX).sum())
    ok = found & inside & np.asarray(fit["fit_ok"])[j]
    err = xy[j] - truth
    out["within_1px"] = float((found & inside & (d < 1.0)).sum() / max(inside.sum(), 1))
    for s in _SPECIES:
        m = ok & (a.species.to_numpy() == s)
        if not m.any():
            continue
        rmse = float(np.sqrt(np.mean(err[m] ** 2)))            # per axis
        out[f"rmse_pm_{s}"] = rmse * frame.pixel_size_nm * 1000
        out[f"rmse_over_crlb_{s}"] = rmse / float(np.sqrt(np.mean(crlb[m] ** 2)))
        out[f"crlb_pm_{s}"] = float(np.sqrt(np.mean(crlb[m] ** 2))) * frame.pixel_size_nm * 1e3
        out[f"bias_px_{s}"] = err[m].mean(axis=0).tolist()
        if np.isfinite(fit["x_err_px"][j[m]]).all():
            z = err[m] / np.c_[fit["x_err_px"][j[m]], fit["y_err_px"][j[m]]]
            out[f"z_std_{s}"] = z.std(axis=0).tolist()
    if species is not None:
        lab = np.asarray(SPECIES, dtype=object)[species][j]
        m = found & inside
        out["species_accuracy"] = float((lab[m] == a.species.to_numpy()[m]).mean())
    return out


def _pipeline(image, rng=0, repeats=1):
    t = {}
    t0 = time.perf_counter()
    noise = estimate_noise_model(image)
    xy = refine_com(image, find_columns(image, noise=noise))
    t["detect_s"] = time.perf_counter() - t0
    fit, runs = None, []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        out = fit_columns(image, xy, rng=rng, noise=noise)
        runs.append(time.perf_counter() - t0)
        fit = out if fit is None else fit
    t["fit_s"] = float(np.median(runs))
    t["fit_runs_s"] = runs
    t0 = time.perf_counter()
    sp, conf = classify_columns(np.c_[fit["x_px"], fit["y_px"]], fit["amplitude"])
    t["classify_s"] = time.perf_counter() - t0
    t["total_s"] = t["detect_s"] + t["fit_s"] + t["classify_s"]
    return xy, fit, sp, t, noise


def bench_fit(*, size=1024, seed=0, vs_atomap=False, atomap_max_atoms=300, out_json=None,
              dose_e_per_A2=220.0, big_size=2048, repeats=3):
    """Benchmark detection + fitting + classification on seeded synthetic frames.

    Parameters
    ----------
    size : int
        Frame size of the accuracy run (the default dot, 11 nm, in a size^2 frame).
    seed : int
    vs_atomap : bool
        Also run Atomap's refinement (optional dependency) on the ``atomap_max_atoms``
        detected columns nearest the particle centre, same starts, same run.
    out_json : str or path, optional
        Write the result there as JSON.
    dose_e_per_A2 : float
    big_size : int or None
        Also time detect + fit + classify on a big_size^2 frame filled with columns.
    repeats : int
        Fit calls per frame; ``fit_s`` is their median (module docstring).

    Returns
    -------
    dict
    """
    p = SynthParams.preset("coreshell", shape=(size, size), dose_e_per_A2=dose_e_per_A2)
    frame = synthesize_frame(p, rng=seed)
    fit_columns(frame.image[:128, :128], [[64.0, 64.0]])        # compile (numba cache)
    xy, fit, sp, t, noise = _pipeline(frame.image, rng=seed, repeats=repeats)
    crlb = column_crlb(frame)
    out = {"benchmark": "fit", "summary": {}, "size": size, "seed": seed,
           "dose_e_per_A2": dose_e_per_A2,
           "machine": machine_info(), "n_truth_columns": int(len(frame.atoms)),
           "n_columns": int(len(xy)), "timings_s": t,
           "atoms_per_s": len(xy) / t["fit_s"] if t["fit_s"] > 0 else float("nan"),
           "accuracy": score_fit(frame, fit, sp, crlb=crlb)}
    if vs_atomap:
        from pvq_dask.kernels._atomap_backend import atomap_available

        if not atomap_available():
            out["atomap"] = {"error": "atomap is not installed (pip install atomap)"}
        else:
            centre = np.array(frame.image.shape[::-1]) / 2.0
            pick = np.argsort(np.hypot(*(xy - centre).T))[:atomap_max_atoms]
            t0 = time.perf_counter()
            ours = fit_columns(frame.image, xy[pick], rng=seed, noise=noise)
            ours_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            theirs = fit_columns(frame.image, xy[pick], backend="atomap")
            theirs_s = time.perf_counter() - t0
            truth = frame.atoms[["x_px", "y_px"]].to_numpy()
            rows = np.unique(cKDTree(truth).query(xy[pick])[1])
            out["atomap"] = {
                "n_atoms": int(len(pick)),
                "atoms_per_s": len(pick) / theirs_s,
                "ours_same_subset_atoms_per_s": len(pick) / ours_s,
                "ratio_full_frame": out["atoms_per_s"] / (len(pick) / theirs_s),
                "accuracy": score_fit(frame, theirs, crlb=crlb, subset=rows),
                "ours_same_subset_accuracy": score_fit(frame, ours, crlb=crlb, subset=rows),
            }
    if big_size:
        big = SynthParams.preset("coreshell", shape=(big_size, big_size),
                                 dot_size_nm=0.95 * big_size * p.pixel_size_nm,
                                 dose_e_per_A2=dose_e_per_A2)
        bframe = synthesize_frame(big, rng=seed)
        bxy, bfit, bsp, bt, _ = _pipeline(bframe.image, rng=seed, repeats=repeats)
        out["big_frame"] = {"size": big_size, "n_truth_columns": int(len(bframe.atoms)),
                            "n_columns": int(len(bxy)), "timings_s": bt,
                            "atoms_per_s": len(bxy) / bt["fit_s"],
                            "accuracy": score_fit(bframe, bfit, bsp)}
    out["summary"] = _summary(out)
    if out_json is not None:
        with open(out_json, "w") as fh:
            json.dump(out, fh, indent=2, default=float)
    return out


def _summary(out):
    """Headline numbers: our atoms/s per frame size and the ratios to Atomap (same run)."""
    summary = {f"atoms_per_s_{out['size']}": out["atoms_per_s"]}
    big = out.get("big_frame")
    if big:
        summary[f"atoms_per_s_{big['size']}"] = big["atoms_per_s"]
    theirs = out.get("atomap", {}).get("atoms_per_s")
    if theirs:
        summary["atomap_atoms_per_s"] = theirs
        summary[f"ratio_to_atomap_{out['size']}"] = out["atoms_per_s"] / theirs
        if big:
            summary[f"ratio_to_atomap_{big['size']}"] = big["atoms_per_s"] / theirs
    return summary
