"""Downstream scores of one denoised frame, for ``pvq bench denoise``.

The denoised frame is analysed as ``pvq analyze`` would analyse it (detection restricted to
the raw frame's particle support, fit weighted by the denoiser's MC std when there is one,
classification, SOFS, metrics) and scored against the synthetic truth. Scores are kept as
counts and error arrays (:func:`frame_scores`) so that several seeds pool exactly
(:func:`pool`); :func:`summarise` turns them into the reported numbers.
"""

import time
from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from pvq_dask.bench.score import match_points, score_atoms, score_octahedra
from pvq_dask.kernels.fit import fit_columns
from pvq_dask.kernels.frame import analyze_frame
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

__all__ = ["MARGIN_UC", "frame_geometry", "frame_scores", "pool", "summarise",
           "whole_dot_frame"]

#: Truth octahedra with ``surface_distance_uc <= MARGIN_UC`` are "at the margins"; a truth
#: column is a margin column when its nearest truth octahedron is.
MARGIN_UC = 1

_THETAS = ("theta1_deg", "theta2_deg", "theta3_deg")


def whole_dot_frame(*, size, dot_size_nm, dose_e_per_A2, seed, case="coreshell"):
    """A seeded synthetic frame with the whole dot centred in it.

    The generator's dot is off-centre (the protrusion); the frame is rendered twice, the
    second time shifted so the bounding box of the truth columns sits in the middle. The
    structure and noise draws do not depend on the offset.

    Examples
    --------
    >>> f = whole_dot_frame(size=256, dot_size_nm=3.0, dose_e_per_A2=50.0, seed=0)
    >>> frame_geometry(f)["carbon_margin_px"] > 0
    True
    """
    p = SynthParams.preset(case, shape=(size, size), dot_size_nm=dot_size_nm,
                           dose_e_per_A2=dose_e_per_A2)
    xy = synthesize_frame(p, rng=seed).xy
    shift_px = 0.5 * (xy.min(axis=0) + xy.max(axis=0)) - 0.5 * (size - 1)
    offset_nm = np.asarray(p.center_offset_nm, float) - shift_px * p.pixel_size_nm
    return synthesize_frame(replace(p, center_offset_nm=tuple(offset_nm.tolist())), rng=seed)


def frame_geometry(frame):
    """Truth counts of a benchmark frame and its carbon margin (px; < 0: dot cut)."""
    xy = frame.xy
    h, w = frame.image.shape
    octs = frame.octahedra
    return {
        "n_truth_columns": int(frame.atoms["inside"].sum()),
        "n_truth_octahedra": int(len(octs)),
        "n_margin_octahedra": int((octs["surface_distance_uc"] <= MARGIN_UC).sum()),
        "n_core_octahedra": int((octs["region"] == "core").sum()),
        "carbon_margin_px": float(min(xy.min(), w - 1 - xy[:, 0].max(),
                                      h - 1 - xy[:, 1].max())),
    }


def _margin_columns(truth_atoms, truth_octs):
    """Which truth columns have a margin octahedron as their nearest octahedron."""
    if len(truth_octs) == 0:
        return np.zeros(len(truth_atoms), bool)
    tree = cKDTree(truth_octs[["x_px", "y_px"]].to_numpy(float))
    _, k = tree.query(truth_atoms[["x_px", "y_px"]].to_numpy(float))
    return truth_octs["surface_distance_uc"].to_numpy(float)[k] <= MARGIN_UC


def true_start_halide_err_pm(den, frame):
    """Position errors (pm) of halide columns fitted on ``den`` from their true positions
    (detection plays no part)."""
    atoms = frame.atoms[frame.atoms["inside"]]
    xy = atoms[["x_px", "y_px"]].to_numpy(float)
    res = fit_columns(den, xy, sigma_px=float(np.median(atoms["sigma_px"])), rng=0)
    is_x = atoms["species"].to_numpy() == "X"
    fitted = np.c_[res["x_px"], res["y_px"]][is_x]
    ok = np.asarray(res["fit_ok"])[is_x] & np.isfinite(fitted).all(axis=1)
    return np.linalg.norm(fitted[ok] - xy[is_x][ok], axis=1) * frame.pixel_size_nm * 1000.0


def _pb_xy(octs, atoms):
    return atoms.set_index("atom_id").loc[octs["pb_atom_id"], ["x_px", "y_px"]].to_numpy(float)


def frame_scores(den, frame, *, std=None, raw=None, config=None):
    """Analyse ``den`` with the real pipeline and score it against ``frame``'s truth.

    Parameters
    ----------
    den : ndarray (H, W)
        Raw, filtered or denoised frame.
    frame : SynthFrame
        The truth.
    std : ndarray (H, W), optional
        The denoiser's MC std (passed to the fit as ``image_std``).
    raw : ndarray (H, W), optional
        The raw frame when ``den`` is filtered (detection inside its particle support).
    config : AnalysisConfig, optional

    Returns
    -------
    dict
        ``{"n": {counts}, "a": {name: 1-D error array}}``; see :func:`summarise`.
    """
    ps = frame.pixel_size_nm
    t0 = time.perf_counter()
    res = analyze_frame(den, pixel_size_nm=ps, config=config, raw=raw, image_std=std)
    analyze_s = time.perf_counter() - t0
    truth = frame.atoms
    inside = truth[truth["inside"]].reset_index(drop=True)
    fxy = res.atoms[["x_px", "y_px"]].to_numpy(float)
    fi, ti = score_atoms(res.atoms, truth, pixel_size_nm=ps)["_pairs"]
    d_px = fxy[fi] - inside[["x_px", "y_px"]].to_numpy(float)[ti]
    is_x = inside["species"].to_numpy()[ti] == "X"
    margin_col = _margin_columns(inside, frame.octahedra)
    fi_any, _ = match_points(fxy, truth[["x_px", "y_px"]].to_numpy(float))
    pe = res.atoms["pos_err_px"].to_numpy(float)[fi]
    good = np.isfinite(pe) & (pe > 0) & res.atoms["fit_ok"].to_numpy(bool)[fi]
    z_pos = (d_px[good] / pe[good, None]).ravel()

    octs, tocts = res.octahedra, frame.octahedra
    so = score_octahedra(octs, res.atoms, tocts, truth)
    ofi, oti = so["_pairs"]
    usable = octs[octs["region"] != "edge_excluded"]
    f, t = usable.iloc[ofi], tocts.iloc[oti]
    t_margin = tocts["surface_distance_uc"].to_numpy(float) <= MARGIN_UC
    _, oti_any = match_points(_pb_xy(octs, res.atoms), _pb_xy(tocts, truth))
    err = {c: f[c].to_numpy(float) - t[c].to_numpy(float) for c in _THETAS}
    m = t_margin[oti]
    a = {"halide_err_pm": np.linalg.norm(d_px[is_x], axis=1) * ps * 1000.0,
         "halide_true_start_err_pm": true_start_halide_err_pm(den, frame),
         "position_z": z_pos,
         "theta3_err_margin_deg": err["theta3_deg"][m],
         "theta3_z": err["theta3_deg"] / f["theta3_err_deg"].to_numpy(float),
         "analyze_s": np.array([analyze_s])}
    a.update({f"{c}_err": e for c, e in err.items()})
    for region in ("core", "shell"):
        a[f"{region}_theta3_found"] = usable.loc[usable["region"] == region,
                                                 "theta3_deg"].to_numpy(float)
        a[f"{region}_theta3_truth"] = tocts.loc[tocts["region"] == region,
                                                "theta3_deg"].to_numpy(float)
    n = {"truth_columns": len(inside), "matched_columns": len(ti),
         "truth_margin_columns": int(margin_col.sum()),
         "matched_margin_columns": int(margin_col[ti].sum()),
         "found_columns": len(fxy), "fit_ok_columns": int(res.atoms["fit_ok"].sum()),
         "false_columns": len(fxy) - len(fi_any),
         "truth_octahedra": len(tocts), "found_octahedra": len(octs),
         "trusted_octahedra": len(usable), "matched_octahedra": len(oti),
         "truth_margin_octahedra": int(t_margin.sum()),
         "matched_margin_octahedra": int(t_margin[oti].sum()),
         "any_matched_margin_octahedra": int(t_margin[oti_any].sum())}
    return {"n": {k: int(v) for k, v in n.items()}, "a": a}


def pool(scores):
    """Pool several :func:`frame_scores` results (counts summed, arrays concatenated)."""
    scores = list(scores)
    keys_a = set().union(*(s["a"] for s in scores))
    return {"n": {k: sum(s["n"][k] for s in scores) for k in scores[0]["n"]},
            "a": {k: np.concatenate([np.ravel(s["a"][k]) for s in scores if k in s["a"]])
                  for k in keys_a}}


def _mean(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if len(x) else float("nan")


def _rms(x):
    x = np.asarray(x, float)
    return float(np.sqrt(_mean(x**2)))


def _std(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.std(x)) if len(x) > 1 else float("nan")


def summarise(scores):
    """The reported numbers of one frame's (or pooled) :func:`frame_scores`.

    Keys: ``psnr_db``, ``ssim``, ``time_s`` (means over frames, when the caller added them
    to ``a``), ``std_rms_over_rmse`` (S2S methods), ``analyze_s``; ``halide_rmse_pm``
    (detected and fitted halides matched to truth), ``halide_rmse_true_starts_pm``;
    ``column_recall``, ``column_recall_margin``, ``false_columns`` (found columns matching
    no truth column), ``fit_ok_frac`` (found columns whose fit passed the residual and
    width checks: only those build trusted octahedra), ``position_z_std``;
    ``oct_recall`` and ``oct_recall_margin`` (trusted octahedra, as
    :func:`~pvq_dask.bench.score.score_octahedra`), ``oct_any_recall_margin``
    (``edge_excluded`` ones counted as found); ``theta{1,2,3}_mae_deg``,
    ``theta3_mae_margin_deg``, ``theta3_z_std``; ``core_theta3_deg``,
    ``shell_theta3_deg`` (found regions) and their ``*_truth_deg``, and the core - shell
    contrast found and true.
    """
    n, a = scores["n"], scores["a"]

    def ratio(k, d):
        return n[k] / n[d] if n[d] else float("nan")

    out = {k: _mean(a[k]) for k in ("psnr_db", "ssim", "time_s") if k in a}
    if "std_sq" in a:
        out["std_rms_over_rmse"] = float(np.sqrt(_mean(a["std_sq"]) / _mean(a["err_sq"])))
    out.update({
        "analyze_s": _mean(a["analyze_s"]),
        "halide_rmse_pm": _rms(a["halide_err_pm"]),
        "halide_rmse_true_starts_pm": _rms(a["halide_true_start_err_pm"]),
        "column_recall": ratio("matched_columns", "truth_columns"),
        "column_recall_margin": ratio("matched_margin_columns", "truth_margin_columns"),
        "false_columns": n["false_columns"],
        "false_column_frac": ratio("false_columns", "truth_columns"),
        "fit_ok_frac": ratio("fit_ok_columns", "found_columns"),
        "position_z_std": _std(a["position_z"]),
        "oct_recall": ratio("matched_octahedra", "truth_octahedra"),
        "oct_recall_margin": ratio("matched_margin_octahedra", "truth_margin_octahedra"),
        "oct_any_recall_margin": ratio("any_matched_margin_octahedra",
                                       "truth_margin_octahedra"),
    })
    for c in _THETAS:
        out[c.replace("_deg", "_mae_deg")] = _mean(np.abs(a[f"{c}_err"]))
    out["theta3_mae_margin_deg"] = _mean(np.abs(a["theta3_err_margin_deg"]))
    out["theta3_z_std"] = _std(a["theta3_z"])
    for region in ("core", "shell"):
        out[f"{region}_theta3_deg"] = _mean(a[f"{region}_theta3_found"])
        out[f"{region}_theta3_truth_deg"] = _mean(a[f"{region}_theta3_truth"])
    out["core_shell_contrast_deg"] = out["core_theta3_deg"] - out["shell_theta3_deg"]
    out["core_shell_contrast_truth_deg"] = (out["core_theta3_truth_deg"]
                                            - out["shell_theta3_truth_deg"])
    out["counts"] = dict(n)
    return out
