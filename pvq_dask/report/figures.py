"""Matplotlib figures of one frame's results (paper Figs. 2-3 and S9, S20).

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no
global state, safe in worker threads); save it with ``fig.savefig(...)``. Positions are
shown in nm with ``x`` to the right and ``y`` down, as in the image.
"""

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from pvq_dask.kernels.network import BOND_OFFSETS, index_lookup
from pvq_dask.kernels.stats import region_histograms

__all__ = ["metric_label", "octahedra_polygons", "plot_overlay", "plot_maps",
           "plot_region_histograms", "plot_profile", "plot_gpa"]

_LABELS = {
    "theta1_deg": r"$\theta_1$ (deg)", "theta2_deg": r"$\theta_2$ (deg)",
    "theta3_deg": r"$\theta_3$ (deg)", "L1_nm": r"$L_1$ (nm)", "L2_nm": r"$L_2$ (nm)",
    "C1_nm": r"$C_1$ (nm)", "C2_nm": r"$C_2$ (nm)", "C3_nm": r"$C_3$ (nm)",
    "P1_nm": r"$P_1$ (nm)", "P2_nm": r"$P_2$ (nm)",
}
_REGION_COLORS = {"core": "tab:red", "shell": "tab:blue"}


def metric_label(name):
    """Axis label of a metric column."""
    return _LABELS.get(name, name)


def octahedra_polygons(octahedra, *, pixel_size_nm):
    """Halide positions (px) of every octahedron, rebuilt from its table row.

    Inverts the metric definitions of :mod:`pvq_dask.kernels.metrics`: bond k's reference
    axis is the Pb-Pb vector across it (else the reversed opposite one, else the mean axis
    of the frame), and ``X_k = Pb + sigma_k R(rotation_sense * phi_k) axis_k / |axis_k|``.

    Returns
    -------
    ndarray (M, 4, 2)
        ``(x, y)`` of X in slots +u, -u, +v, -v; NaN where the bond is missing.

    Examples
    --------
    >>> octs = {"x_px": np.array([0.0, 30.0]), "y_px": np.zeros(2), "i": np.array([0, 1]),
    ...         "j": np.zeros(2, int), "rotation_sense": np.array([1, -1]),
    ...         "phi1_deg": np.zeros(2), "phi2_deg": np.zeros(2), "phi3_deg": np.zeros(2),
    ...         "phi4_deg": np.zeros(2), "sigma1_nm": np.full(2, 0.3),
    ...         "sigma2_nm": np.full(2, 0.3), "sigma3_nm": np.full(2, 0.3),
    ...         "sigma4_nm": np.full(2, 0.3)}
    >>> octahedra_polygons(octs, pixel_size_nm=0.02)[0].round(6).tolist()
    [[15.0, 0.0], [-15.0, 0.0], [0.0, 15.0], [0.0, -15.0]]
    """
    m = len(np.asarray(octahedra["x_px"]))
    if m == 0:
        return np.zeros((0, 4, 2))
    p = np.c_[np.asarray(octahedra["x_px"], float), np.asarray(octahedra["y_px"], float)]
    ij = np.c_[np.asarray(octahedra["i"], np.int64), np.asarray(octahedra["j"], np.int64)]
    look = index_lookup(ij)
    nb = np.stack([look(ij + off) for off in BOND_OFFSETS], axis=1)
    axes = np.full((m, 4, 2), np.nan)
    for k in range(4):
        opp = k ^ 1
        has = nb[:, k] >= 0
        axes[has, k] = p[nb[has, k]] - p[has]
        alt = ~has & (nb[:, opp] >= 0)
        axes[alt, k] = p[alt] - p[nb[alt, opp]]
    default = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    for k in range(4):
        a = axes[:, k]
        ok = np.all(np.isfinite(a), axis=1)
        mean = (a[ok] / np.linalg.norm(a[ok], axis=1, keepdims=True)).mean(0) if ok.any() \
            else default[k]
        axes[~ok, k] = mean
    unit = axes / np.linalg.norm(axes, axis=-1, keepdims=True)
    sense = np.asarray(octahedra["rotation_sense"], float)
    out = np.full((m, 4, 2), np.nan)
    for k in range(4):
        ang = np.deg2rad(np.asarray(octahedra[f"phi{k + 1}_deg"], float)) * sense
        length = np.asarray(octahedra[f"sigma{k + 1}_nm"], float) / pixel_size_nm
        c, s = np.cos(ang), np.sin(ang)
        ux, uy = unit[:, k, 0], unit[:, k, 1]
        out[:, k, 0] = p[:, 0] + length * (c * ux - s * uy)
        out[:, k, 1] = p[:, 1] + length * (s * ux + c * uy)
    return out


def _robust_limits(values, lo=2.0, hi=98.0):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return (a - 0.5, b + 0.5) if a == b else (a, b)


def plot_overlay(image, octahedra, *, pixel_size_nm, color_by="theta3_deg", atoms=None,
                 title=None, figsize=(6.0, 5.2)):
    """Image with the octahedra skeleton (X1-X3-X2-X4 diamonds) coloured by a metric.

    Edge-excluded octahedra are drawn grey; ``octahedra=None`` shows the image alone.
    ``atoms`` (optional) adds the columns as dots coloured by species.
    """
    img = np.asarray(image, float)
    h, w = img.shape
    ext = (-0.5 * pixel_size_nm, (w - 0.5) * pixel_size_nm,
           (h - 0.5) * pixel_size_nm, -0.5 * pixel_size_nm)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    lo, hi = np.percentile(img, [0.5, 99.5])
    ax.imshow(img, cmap="gray", extent=ext, vmin=lo, vmax=hi, interpolation="nearest")
    if atoms is not None and len(atoms):
        colors = {"Pb": "tab:orange", "X": "tab:purple", "Cs": "tab:green"}
        sp = np.asarray(atoms["species"]).astype(str)
        for name, col in colors.items():
            sel = sp == name
            ax.scatter(np.asarray(atoms["x_px"])[sel] * pixel_size_nm,
                       np.asarray(atoms["y_px"])[sel] * pixel_size_nm, s=2, c=col,
                       label=name, linewidths=0)
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
    poly = (np.zeros((0, 4, 2)) if octahedra is None
            else octahedra_polygons(octahedra, pixel_size_nm=pixel_size_nm))
    if len(poly):
        diamonds = poly[:, [0, 2, 1, 3]] * pixel_size_nm
        ok = np.all(np.isfinite(diamonds.reshape(len(poly), -1)), axis=1)
        region = (np.asarray(octahedra["region"]).astype(str) if "region" in octahedra
                  else np.full(len(poly), "core"))
        vals = np.asarray(octahedra[color_by], float)
        excl = region == "edge_excluded"
        good = ok & ~excl & np.isfinite(vals)
        vmin, vmax = _robust_limits(vals[good])
        pc = PolyCollection(list(diamonds[good]), array=vals[good], cmap="viridis",
                            clim=(vmin, vmax), alpha=0.55, edgecolors="white",
                            linewidths=0.3)
        ax.add_collection(pc)
        if (ok & excl).any():
            ax.add_collection(PolyCollection(list(diamonds[ok & excl]), facecolors="none",
                                             edgecolors="0.6", linewidths=0.4))
        fig.colorbar(pc, ax=ax, shrink=0.8, label=metric_label(color_by))
    ax.set_xlabel("x (nm)")
    ax.set_ylabel("y (nm)")
    ax.set_title(title or "Octahedral network")
    return fig


def plot_maps(maps, names, *, titles=None, panel_size=3.2, cmap="viridis"):
    """One panel per metric map (a map dict of :func:`pvq_dask.kernels.maps.metric_maps`)."""
    names = list(names)
    fig = Figure(figsize=(panel_size * len(names) + 0.4, panel_size), layout="constrained")
    u, v = np.asarray(maps["u_nm"], float), np.asarray(maps["v_nm"], float)
    du = u[1] - u[0] if len(u) > 1 else 1.0
    dv = v[1] - v[0] if len(v) > 1 else 1.0
    ext = (u[0] - du / 2, u[-1] + du / 2, v[-1] + dv / 2, v[0] - dv / 2)
    for k, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        data = np.asarray(maps[name], float)
        vmin, vmax = _robust_limits(data)
        im = ax.imshow(np.ma.masked_invalid(data), extent=ext, cmap=cmap, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        fin = np.isfinite(data)
        if fin.any():
            rows, cols = np.nonzero(fin)
            ax.set_xlim(u[cols.min()] - du, u[cols.max()] + du)
            ax.set_ylim(v[rows.max()] + dv, v[rows.min()] - dv)
        ax.set_title(titles[k] if titles else metric_label(name), fontsize=10)
        ax.set_xlabel("x (nm)")
        if k == 0:
            ax.set_ylabel("y (nm)")
        fig.colorbar(im, ax=ax, shrink=0.75)
    return fig


def plot_region_histograms(octahedra, *, columns=("theta1_deg", "theta2_deg", "theta3_deg"),
                           bins=30, shell_width_uc=3, panel_size=3.2):
    """Core vs shell histograms of each column (edge-excluded octahedra left out)."""
    region = np.asarray(octahedra["region"]).astype(str)
    if "surface_distance_uc" in octahedra:
        d = np.asarray(octahedra["surface_distance_uc"], float)
        region = np.where(region == "edge_excluded", region,
                          np.where(d < shell_width_uc, "shell", "core"))
    fig = Figure(figsize=(panel_size * len(columns), panel_size * 0.85), layout="constrained")
    for k, col in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), k + 1)
        h = region_histograms(np.asarray(octahedra[col], float), region, bins=bins)
        centres = 0.5 * (h["edges"][1:] + h["edges"][:-1])
        width = np.diff(h["edges"])
        for reg in ("shell", "core"):
            n = h[reg]
            frac = n / max(n.sum(), 1)
            ax.bar(centres, frac, width=width, alpha=0.5, color=_REGION_COLORS[reg],
                   label=f"{reg} (n={int(n.sum())})")
        ax.set_xlabel(metric_label(col))
        if k == 0:
            ax.set_ylabel("fraction")
        ax.legend(fontsize=7)
    return fig


def plot_profile(profiles, *, figsize=(5.5, 3.4), title=None):
    """Line profiles (dict ``{column: profile}`` of :func:`pvq_dask.kernels.profiles.line_profile`
    results): mean +- standard error per bin, the individual lines faint."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    for k, (col, prof) in enumerate(profiles.items()):
        color = f"C{k}"
        d = prof["distance_nm"]
        for line in np.atleast_2d(prof["line_mean"]):
            ax.plot(d, line, color=color, alpha=0.25, lw=0.8)
        ax.errorbar(d, prof["mean"], yerr=prof["sem"], color=color, marker="o", ms=3,
                    capsize=2, label=metric_label(col))
    ax.set_xlabel("distance along the segment (nm)")
    ax.legend(fontsize=8)
    ax.set_title(title or "Line profile", fontsize=10)
    return fig


def plot_gpa(result, *, panel_size=3.0):
    """GPA strain, rotation and lattice-period maps (outside the lattice mask blank)."""
    ps = result.pixel_size_nm
    h, w = result.mask.shape
    ext = (-0.5 * ps, (w - 0.5) * ps, (h - 0.5) * ps, -0.5 * ps)
    panels = [("exx", 100 * result.exx, r"$\epsilon_{xx}$ (%)"),
              ("eyy", 100 * result.eyy, r"$\epsilon_{yy}$ (%)"),
              ("exy", 100 * result.exy, r"$\epsilon_{xy}$ (%)"),
              ("rotation", result.rotation_deg, "rotation (deg)"),
              ("a1", result.a_nm[0], r"$a_1$ (nm), along $g_1$"),
              ("a2", result.a_nm[1], r"$a_2$ (nm), along $g_2$")]
    fig = Figure(figsize=(panel_size * 3, panel_size * 2), layout="constrained")
    for k, (_, data, title) in enumerate(panels):
        ax = fig.add_subplot(2, 3, k + 1)
        masked = np.where(result.mask, data, np.nan)
        vmin, vmax = _robust_limits(masked)
        if k < 4:                                  # signed quantities: symmetric about 0
            vmax = max(abs(vmin), abs(vmax))
            vmin = -vmax
        im = ax.imshow(np.ma.masked_invalid(masked), extent=ext, cmap="RdBu_r" if k < 4
                       else "viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.75)
    return fig
