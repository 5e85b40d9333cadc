"""Per-octahedron tilt and bond metrics, and per-cell Cs-Cs / Pb-Pb spacings.

Definitions (design.md section 3, paper Fig. 1d):

- For bond slot k (+u, -u, +v, -v) the reference axis is the Pb->Pb vector to the Pb across
  that bond; where that Pb is missing, the reversed vector to the opposite Pb; where both
  are missing, the frame-wide mean lattice axis. So a dot rotated in the frame gives the same
  angles.
- ``phi_k`` is the angle from that axis to the bond Pb->X_k. Signed angles are positive from
  +x towards +y (image coordinates). ``rotation_sense`` (+1/-1) is the sign of their sum, and
  the public ``phi_k_deg = rotation_sense * signed_phi_k`` (equal to the magnitude for a rigid
  rotation, and unbiased for near-zero tilts, unlike ``abs``).
- ``theta1 = mean(phi1, phi2)`` (horizontal), ``theta2 = mean(phi3, phi4)`` (vertical),
  ``theta3 = mean(theta1, theta2)``; ``sigma_k = |Pb X_k|``; ``L1 = sigma1 + sigma2``,
  ``L2 = sigma3 + sigma4``.
- Every metric carries a standard uncertainty propagated to first order from the per-atom
  2x2 position covariances (atoms independent).
- With covariances, ``L1``/``L2`` (and ``sigma_k``, keeping ``sigma1 - sigma2``) are by default
  the empirical-Bayes combination of the direct lengths and the corner-sharing prediction from
  the Pb across each bond (:mod:`pvq_dask.kernels._bridge`); ``bond_prior="none"`` gives the
  direct lengths.
"""

import numpy as np

from pvq_dask.kernels._bridge import corner_sharing_lengths
from pvq_dask.kernels._metrics_grad import angle_grad, quadratic_form
from pvq_dask.kernels.config import BOND_PRIORS
from pvq_dask.kernels.network import BOND_OFFSETS, index_lookup
from pvq_dask.kernels.surface import surface_distance_uc

__all__ = ["octahedra_metrics", "cell_metrics"]

_RAD = 180.0 / np.pi


def _nanmean(values):
    """Row-wise mean over the finite entries of a 2-D array; NaN for empty rows."""
    ok = np.isfinite(values)
    n = ok.sum(axis=1)
    total = np.where(ok, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _reference_axes(xy, net):
    """Axis atom per slot (M, 4), its sign, and the fallback global axes (4, 2)."""
    nb = net.pb_neighbours()
    pb_xy = xy[net.pb]
    axis_atom = np.full((len(net.pb), 4), -1, dtype=np.int64)
    axis_sign = np.ones((len(net.pb), 4))
    glob = np.zeros((4, 2))
    for k in range(4):
        opp = k ^ 1
        has = nb[:, k] >= 0
        has_opp = (~has) & (nb[:, opp] >= 0)
        axis_atom[has, k] = net.pb[nb[has, k]]
        axis_atom[has_opp, k] = net.pb[nb[has_opp, opp]]
        axis_sign[has_opp, k] = -1.0
        vec = np.concatenate([xy[net.pb[nb[has, k]]] - pb_xy[has],
                              pb_xy[nb[:, opp] >= 0] - xy[net.pb[nb[nb[:, opp] >= 0, opp]]]])
        if len(vec):
            m = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).mean(axis=0)
            glob[k] = m / (np.linalg.norm(m) or 1.0)
    # Slots with no data at all fall back on the image axes (+x, -x, +y, -y).
    default = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    empty = ~np.any(glob, axis=1)
    glob[empty] = default[empty]
    return axis_atom, axis_sign, glob


def octahedra_metrics(xy, network, *, pixel_size_nm, cov=None, shell_width_uc=3,
                      bond_prior="corner_sharing", diagnostics=None):
    """Tilts, bond lengths and their uncertainties for every octahedron.

    Parameters
    ----------
    xy : ndarray, shape (N, 2)
        Column positions (x, y) in px.
    network : pvq_dask.kernels.network.OctahedralNetwork
    pixel_size_nm : float
    cov : ndarray, shape (N, 2, 2), optional
        Position covariance of each column in px^2; uncertainties are NaN without it.
    shell_width_uc : int
        Octahedra fewer than this many unit cells from the surface are ``shell``.
    bond_prior : {"corner_sharing", "none"}
        ``"corner_sharing"`` (used only with ``cov``): X-Pb-X lengths shrink towards the
        prediction from the Pb across each bond by as much as the frame's own scatter allows
        (:mod:`pvq_dask.kernels._bridge`). ``"none"``: lengths from the X positions alone.
    diagnostics : dict, optional
        Filled with ``bond_prior``: the fitted prior (``tau_nm``, ``pi``, ``n``, ...).

    Returns
    -------
    dict of ndarray
        The octahedra-table columns of :data:`pvq_dask.kernels.schema.OCTAHEDRA_COLUMNS`
        (without ``frame``).

    Examples
    --------
    A single octahedron rotated rigidly by 10 degrees:

    >>> from pvq_dask.kernels.network import OctahedralNetwork
    >>> t = np.deg2rad(10.0)
    >>> d = 10 * np.array([[np.cos(t), np.sin(t)], [-np.cos(t), -np.sin(t)],
    ...                    [-np.sin(t), np.cos(t)], [np.sin(t), -np.cos(t)]])
    >>> xy = np.vstack([[0.0, 0.0], d])
    >>> net = OctahedralNetwork(pb=np.array([0]), ij=np.array([[0, 0]]),
    ...     x_bonds=np.array([[1, 2, 3, 4]]), cs=np.zeros(0, int), cs_ij=np.zeros((0, 2), int))
    >>> m = octahedra_metrics(xy, net, pixel_size_nm=0.02)
    >>> round(float(m["theta3_deg"][0]), 6), round(float(m["L1_nm"][0]), 6)
    (10.0, 0.4)
    """
    if bond_prior not in BOND_PRIORS:
        raise ValueError(f"bond_prior must be one of {BOND_PRIORS}, got {bond_prior!r}")
    xy = np.asarray(xy, dtype=np.float64)
    net = network
    m = net.n_octahedra
    axis_atom, axis_sign, glob = _reference_axes(xy, net)
    p = xy[net.pb]
    has_x = net.x_bonds >= 0
    xk = np.where(has_x[..., None], xy[np.maximum(net.x_bonds, 0)], np.nan)
    b = xk - p[:, None, :]                                     # (M, 4, 2) bond vectors
    a = np.where((axis_atom >= 0)[..., None],
                 axis_sign[..., None] * (xy[np.maximum(axis_atom, 0)] - p[:, None, :]),
                 glob[None, :, :])
    cross = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    dot = (a * b).sum(axis=-1)
    phi_signed = np.arctan2(cross, dot)                         # (M, 4), NaN where no X
    total = np.nansum(phi_signed, axis=1)
    sense = np.where(total < 0, -1, 1).astype(np.int8)
    phi = sense[:, None] * phi_signed
    sig = np.linalg.norm(b, axis=-1)
    th1 = _nanmean(phi[:, :2])
    th2 = _nanmean(phi[:, 2:])
    th3 = _nanmean(np.stack([th1, th2], axis=1))
    # Slots: 0 = Pb, 1..4 = X_k, 5..8 = axis atom of slot k.
    atoms = np.concatenate([net.pb[:, None], net.x_bonds, axis_atom], axis=1)
    errs = _uncertainties(net, cov, atoms, b, a, axis_atom, axis_sign, phi, sense, sig,
                          pixel_size_nm)
    if cov is not None and bond_prior == "corner_sharing" and m:
        use = has_x & (axis_atom >= 0) & (axis_sign > 0)
        trusted = (np.ones(m, bool) if net.trusted is None
                   else np.asarray(net.trusted, bool))
        sig, L_err, prior = corner_sharing_lengths(
            xy[np.maximum(atoms, 0)], atoms, np.asarray(cov, np.float64), sig, use,
            fit_mask=trusted)
        for h in range(2):
            have = np.isfinite(L_err[h])
            errs[f"L{h + 1}_err_nm"][have] = L_err[h][have] * pixel_size_nm
        if diagnostics is not None:
            diagnostics["bond_prior"] = {
                "n": prior["n"], "pi": prior["pi"], "tau_nm": prior["tau"] * pixel_size_nm,
                "excess": prior["excess"], "noise_scale": prior.get("scale", np.nan)}
    L1 = sig[:, 0] + sig[:, 1]
    L2 = sig[:, 2] + sig[:, 3]

    out = {
        "oct_id": np.arange(m, dtype=np.int64),
        "pb_atom_id": net.pb.astype(np.int64),
        "x_px": p[:, 0] if m else np.zeros(0),
        "y_px": p[:, 1] if m else np.zeros(0),
        "theta1_deg": th1 * _RAD, "theta2_deg": th2 * _RAD, "theta3_deg": th3 * _RAD,
    }
    out.update(errs)
    for k in range(4):
        out[f"phi{k + 1}_deg"] = phi[:, k] * _RAD
    for k in range(4):
        out[f"sigma{k + 1}_nm"] = sig[:, k] * pixel_size_nm
    out["L1_nm"] = L1 * pixel_size_nm
    out["L2_nm"] = L2 * pixel_size_nm
    out["rotation_sense"] = sense
    dist = surface_distance_uc(net.ij)
    out["surface_distance_uc"] = dist
    region = np.where(dist < shell_width_uc, "shell", "core").astype(object)
    if net.trusted is not None:
        region[~np.asarray(net.trusted, bool)] = "edge_excluded"
    out["region"] = region
    out["i"] = net.ij[:, 0].astype(np.int64)
    out["j"] = net.ij[:, 1].astype(np.int64)
    return out


def _uncertainties(net, cov, atoms, b, a, axis_atom, axis_sign, phi, sense, sig,
                   pixel_size_nm):
    """First-order propagation of position covariances to theta1..3 and L1, L2."""
    m = net.n_octahedra
    names = ("theta1_err_deg", "theta2_err_deg", "theta3_err_deg", "L1_err_nm", "L2_err_nm")
    if cov is None or m == 0:
        return {n: np.full(m, np.nan) for n in names}
    cov = np.asarray(cov, dtype=np.float64)
    valid = ~np.isnan(phi)
    gb = angle_grad(b)                                          # d ang(b) / d b
    # a = sign * (A - P): d ang(a) / d(A - P) = g(A - P) = sign * g(a), g being odd.
    ga = np.where((axis_atom >= 0)[..., None], axis_sign[..., None] * angle_grad(a), 0.0)
    # d phi_k / d slot, already multiplied by the rotation sense.
    dphi = np.zeros((m, 4, 9, 2))
    for k in range(4):
        s = sense[:, None].astype(float)
        dphi[:, k, 1 + k] = s * gb[:, k]
        dphi[:, k, 5 + k] = -s * ga[:, k]
        dphi[:, k, 0] = s * (-gb[:, k] + ga[:, k])
    dphi[~valid] = 0.0
    n12 = valid[:, :2].sum(1, keepdims=True)
    n34 = valid[:, 2:].sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        g1 = dphi[:, :2].sum(1) / n12[..., None]
        g2 = dphi[:, 2:].sum(1) / n34[..., None]
    both = ((n12 > 0) & (n34 > 0))[..., None]
    g3 = np.where(both, 0.5 * (np.nan_to_num(g1) + np.nan_to_num(g2)),
                  np.where((n12 > 0)[..., None], g1, g2))
    unit = b / sig[..., None]
    dL = np.zeros((2, m, 9, 2))
    for h, (k1, k2) in enumerate(((0, 1), (2, 3))):
        dL[h, :, 1 + k1] = unit[:, k1]
        dL[h, :, 1 + k2] = unit[:, k2]
        dL[h, :, 0] = -(unit[:, k1] + unit[:, k2])
    out = {}
    for name, g in (("theta1_err_deg", g1), ("theta2_err_deg", g2), ("theta3_err_deg", g3)):
        out[name] = np.sqrt(quadratic_form(g, atoms, cov)) * _RAD
    for h, name in enumerate(("L1_err_nm", "L2_err_nm")):
        var = quadratic_form(dL[h], atoms, cov)
        out[name] = np.sqrt(var) * pixel_size_nm
    return out


def cell_metrics(xy, network, *, pixel_size_nm, cov=None):
    """Pb-Pb (P1, P2), Cs-Cs (C1, C2, C3) spacings and orthorhombic a, b per cell.

    A cell is keyed by the lattice index (i, j) of its lower Pb corner; its Cs sits at
    (i + 1/2, j + 1/2). ``P1``/``C1`` run along u (i + 1), ``P2``/``C2`` along v (j + 1);
    ``a`` is the Pb-Pb diagonal (i, j) -> (i + 1, j + 1) and ``b`` the other diagonal of the
    same cell, (i + 1, j) -> (i, j + 1) (each ~ sqrt(2) a_pc in Pbnm [001]).

    Returns
    -------
    dict of ndarray
        Columns of :data:`pvq_dask.kernels.schema.CELL_COLUMNS` (without ``frame``).

    Examples
    --------
    >>> from pvq_dask.kernels.network import OctahedralNetwork
    >>> ij = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    >>> net = OctahedralNetwork(pb=np.arange(4), ij=ij, x_bonds=-np.ones((4, 4), int),
    ...     cs=np.zeros(0, int), cs_ij=np.zeros((0, 2), int))
    >>> c = cell_metrics(ij * 30.0, net, pixel_size_nm=0.02)
    >>> float(c["P1_nm"][0]), float(c["P2_nm"][0])
    (0.6, 0.6)
    """
    xy = np.asarray(xy, dtype=np.float64)
    net = network
    keys = np.unique(np.concatenate([net.ij, net.cs_ij]).reshape(-1, 2), axis=0)
    pb_at = index_lookup(net.ij)
    cs_at = index_lookup(net.cs_ij)
    cov = None if cov is None else np.asarray(cov, dtype=np.float64)

    def pair(lookup, atoms, off0, off1):
        r0, r1 = lookup(keys + off0), lookup(keys + off1)
        ok = (r0 >= 0) & (r1 >= 0)
        d = np.full(len(keys), np.nan)
        e = np.full(len(keys), np.nan)
        if ok.any():
            a0, a1 = atoms[r0[ok]], atoms[r1[ok]]
            v = xy[a1] - xy[a0]
            n = np.linalg.norm(v, axis=1)
            d[ok] = n * pixel_size_nm
            if cov is not None:
                u = v / n[:, None]
                c = cov[a0] + cov[a1]
                e[ok] = np.sqrt(np.einsum("ni,nij,nj->n", u, c, u)) * pixel_size_nm
        return d, e

    o = np.array([0, 0])
    P1, P1e = pair(pb_at, net.pb, o, BOND_OFFSETS[0])
    P2, P2e = pair(pb_at, net.pb, o, BOND_OFFSETS[2])
    C1, C1e = pair(cs_at, net.cs, o, BOND_OFFSETS[0])
    C2, C2e = pair(cs_at, net.cs, o, BOND_OFFSETS[2])
    A, _ = pair(pb_at, net.pb, o, np.array([1, 1]))
    B, _ = pair(pb_at, net.pb, np.array([1, 0]), np.array([0, 1]))
    C3 = _nanmean(np.stack([C1, C2], axis=1))
    # Cell position: its Cs where present, else its Pb corner.
    rc, rp = cs_at(keys), pb_at(keys)
    pos = np.full((len(keys), 2), np.nan)
    if len(keys):
        pos[rp >= 0] = xy[net.pb[rp[rp >= 0]]]
        pos[rc >= 0] = xy[net.cs[rc[rc >= 0]]]
    return {
        "i": keys[:, 0].astype(np.int64), "j": keys[:, 1].astype(np.int64),
        "x_px": pos[:, 0], "y_px": pos[:, 1],
        "C1_nm": C1, "C2_nm": C2, "C3_nm": C3, "P1_nm": P1, "P2_nm": P2,
        "C1_err_nm": C1e, "C2_err_nm": C2e, "P1_err_nm": P1e, "P2_err_nm": P2e,
        "a_nm": A, "b_nm": B,
    }
