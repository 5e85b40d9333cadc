"""Score analysis results against synthetic truth (used by tests and ``pvq bench``)."""

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["match_points", "score_atoms", "score_octahedra"]

MATCH_RADIUS_PX = 3.0


def match_points(found_xy, truth_xy, *, max_dist_px=MATCH_RADIUS_PX):
    """One-to-one nearest matches within ``max_dist_px``.

    Returns
    -------
    fi, ti : ndarray of int
        Indices of matched found and truth points (pairs).

    Examples
    --------
    >>> fi, ti = match_points(np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[10.5, 0.0]]))
    >>> fi.tolist(), ti.tolist()
    ([1], [0])
    """
    found_xy = np.asarray(found_xy, float).reshape(-1, 2)
    truth_xy = np.asarray(truth_xy, float).reshape(-1, 2)
    if len(found_xy) == 0 or len(truth_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    ok = np.isfinite(found_xy).all(axis=1)
    idx_ok = np.flatnonzero(ok)
    d, ti = cKDTree(truth_xy).query(found_xy[ok], distance_upper_bound=max_dist_px)
    hit = np.isfinite(d)
    fi, ti, d = idx_ok[hit], ti[hit], d[hit]
    order = np.argsort(d)
    seen_t, keep = set(), []
    for r in order:
        if ti[r] not in seen_t:
            seen_t.add(ti[r])
            keep.append(r)
    keep = np.array(sorted(keep), dtype=int)
    return fi[keep], ti[keep]


def score_atoms(atoms, truth, *, pixel_size_nm, only_inside=True):
    """Detection, position and species scores of an atoms table against truth atoms.

    Returns a dict with ``recall``, ``precision`` (false positives counted over all found
    columns), ``false_positive_frac`` (of the number of truth columns), ``species_accuracy``
    (over matched columns), per-species ``rmse_pm`` and ``bias_px``, the fraction of fits
    within 1 px, and per-axis z-score standard deviations ``z_std_x``, ``z_std_y``.
    """
    t = truth[truth["inside"]] if only_inside and "inside" in truth else truth
    fxy = atoms[["x_px", "y_px"]].to_numpy(float)
    txy = t[["x_px", "y_px"]].to_numpy(float)
    fi, ti = match_points(fxy, txy)
    out = {"n_found": int(len(atoms)), "n_truth": int(len(t)), "n_matched": int(len(fi))}
    out["recall"] = len(ti) / max(len(t), 1)
    # A found column counts as false when it matches no truth column at all (edge columns
    # cut by the frame border are not false).
    fi_all, _ = match_points(fxy, truth[["x_px", "y_px"]].to_numpy(float))
    false = len(atoms) - len(fi_all)
    out["precision"] = 1.0 - false / max(len(atoms), 1)
    out["false_positive_frac"] = false / max(len(t), 1)
    d = fxy[fi] - txy[ti]
    err = np.linalg.norm(d, axis=1)
    out["within_1px_frac"] = float(np.mean(err <= 1.0)) if len(err) else 0.0
    tsp = t["species"].to_numpy()[ti]
    if "species" in atoms:
        fsp = atoms["species"].to_numpy()[fi]
        out["species_accuracy"] = float(np.mean(fsp == tsp)) if len(fi) else 0.0
    for sp in ("Pb", "X", "Cs"):
        m = tsp == sp
        if m.any():
            out[f"rmse_pm_{sp}"] = float(np.sqrt(np.mean(err[m] ** 2)) * pixel_size_nm * 1000)
            out[f"bias_px_{sp}"] = d[m].mean(axis=0).tolist()
    if "pos_err_px" in atoms and len(fi):
        pe = atoms["pos_err_px"].to_numpy(float)[fi]
        good = np.isfinite(pe) & (pe > 0)
        if "fit_ok" in atoms:
            good &= atoms["fit_ok"].to_numpy(bool)[fi]
        out["z_std_x"] = float(np.std(d[good, 0] / pe[good]))
        out["z_std_y"] = float(np.std(d[good, 1] / pe[good]))
    out["_pairs"] = (fi, ti)
    return out


def score_octahedra(octs, atoms, truth_octs, truth_atoms):
    """Octahedra recall, per-octahedron metric errors, region means and z-scores.

    Found octahedra are matched to truth through their Pb column (matched within
    ``MATCH_RADIUS_PX``). ``edge_excluded`` octahedra count as missed.
    """
    usable = octs[octs["region"] != "edge_excluded"]
    fpb = atoms.set_index("atom_id").loc[usable["pb_atom_id"], ["x_px", "y_px"]].to_numpy(float)
    tpb = truth_atoms.set_index("atom_id").loc[truth_octs["pb_atom_id"], ["x_px", "y_px"]]
    fi, ti = match_points(fpb, tpb.to_numpy(float))
    f, t = usable.iloc[fi], truth_octs.iloc[ti]
    out = {"n_found": int(len(octs)), "n_trusted": int(len(usable)),
           "n_truth": int(len(truth_octs)), "recall": len(ti) / max(len(truth_octs), 1)}
    for col in ("theta1_deg", "theta2_deg", "theta3_deg", "L1_nm", "L2_nm"):
        e = f[col].to_numpy(float) - t[col].to_numpy(float)
        e = e[np.isfinite(e)]
        scale = 1000.0 if col.endswith("_nm") else 1.0
        key = col.replace("_nm", "_pm") if scale != 1.0 else col
        out[f"mae_{key}"] = float(np.mean(np.abs(e)) * scale) if len(e) else np.nan
        err_col = col.replace("_deg", "_err_deg").replace("_nm", "_err_nm")
        if err_col in f:
            z = (f[col].to_numpy(float) - t[col].to_numpy(float)) / f[err_col].to_numpy(float)
            z = z[np.isfinite(z)]
            out[f"z_std_{col}"] = float(np.std(z)) if len(z) else np.nan
    # Region means as a user sees them (found regions) against the truth regions.
    for region in ("core", "shell"):
        found = usable.loc[usable["region"] == region, "theta3_deg"]
        truth = truth_octs.loc[truth_octs["region"] == region, "theta3_deg"]
        out[f"{region}_theta3_found"] = float(found.mean()) if len(found) else np.nan
        out[f"{region}_theta3_truth"] = float(truth.mean()) if len(truth) else np.nan
    out["_pairs"] = (fi, ti)
    return out
