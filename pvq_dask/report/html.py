"""A self-contained HTML report of one frame of a ``RESULT.pvq`` (figures as base64 PNG).

Sections (their HTML ids): ``summary`` (core/shell table with standard errors), ``image``
(octahedra skeleton overlay), ``tilt-maps`` and ``spacing-maps`` (paper Fig. 2b-c),
``histograms`` (core vs shell), ``profiles`` (paper Fig. 2d-e), ``gpa`` (strain maps and the
GPA vs lattice spacing cross-check), optionally ``interactive`` (a bokeh map), and
``provenance``.
"""

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from pvq_dask.kernels.gpa import gpa
from pvq_dask.kernels.maps import CELL_MAP_METRICS, metric_maps
from pvq_dask.kernels.profiles import octahedra_profile
from pvq_dask.kernels.stats import describe, summarize_octahedra
from pvq_dask.report import figures
from pvq_dask.store.maps import dataset_to_maps

__all__ = ["build_report", "figure_to_base64", "default_profile_segment"]

_IMAGE_PREFERENCE = ("denoised", "absf", "raw")
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;
text-align:right}th{background:#eee}td:first-child{text-align:left}
img{max-width:100%}pre{background:#f5f5f5;padding:0.6em;overflow:auto;font-size:80%}
.note{color:#666;font-size:90%}
"""


def figure_to_base64(fig, *, dpi=100):
    """PNG of a matplotlib figure as a base64 string."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig, dpi, alt):
    return (f'<img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{figure_to_base64(fig, dpi=dpi)}">')


def _frame_rows(df, frame):
    if df is None or len(df) == 0:
        return df
    if "frame" in df:
        df = df[np.asarray(df["frame"]) == frame]
    return df.reset_index(drop=True)


def _pick_image(images, frame):
    if images is None:
        return None, None
    for name in _IMAGE_PREFERENCE:
        if name in images:
            da = images[name]
            if "t" in da.dims:
                da = da.sel(t=frame) if "t" in da.coords else da.isel(t=frame)
            return name, np.asarray(da.values, dtype=np.float64)
    return None, None


def default_profile_segment(octahedra, *, pixel_size_nm):
    """A segment (nm) through the octahedra's centroid along the lattice axis u, spanning
    the particle: the paper's arrow across the dot.

    The lattice axis comes from a least-squares fit ``x = x0 + i a_u + j a_v``.
    """
    xy = np.c_[np.asarray(octahedra["x_px"], float), np.asarray(octahedra["y_px"], float)]
    ij = np.c_[np.ones(len(xy)), np.asarray(octahedra["i"], float),
               np.asarray(octahedra["j"], float)]
    ok = np.all(np.isfinite(xy), axis=1)
    if ok.sum() < 3:
        raise ValueError("a profile needs at least 3 octahedra")
    coef, *_ = np.linalg.lstsq(ij[ok], xy[ok], rcond=None)
    axis = coef[1] / np.linalg.norm(coef[1])
    c = xy[ok].mean(axis=0)
    t = (xy[ok] - c) @ axis
    start = (c + t.min() * axis) * pixel_size_nm
    end = (c + t.max() * axis) * pixel_size_nm
    return tuple(start.tolist()), tuple(end.tolist())


def _fmt(x, digits):
    return "&ndash;" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _summary_table(summary, cells):
    rows = []
    for name, per in summary["metrics"].items():
        dg = 3 if name.endswith("_deg") else 4
        c, s, d = per["core"], per["shell"], per["core_minus_shell"]
        wc = per["core"].get("weighted_mean")
        ws = per["shell"].get("weighted_mean")
        rows.append(
            f"<tr><td>{name}</td><td>{_fmt(c['mean'], dg)} &plusmn; {_fmt(c['sem'], dg)}</td>"
            f"<td>{c['n']}</td><td>{_fmt(s['mean'], dg)} &plusmn; {_fmt(s['sem'], dg)}</td>"
            f"<td>{s['n']}</td><td>{_fmt(d['diff'], dg)} &plusmn; {_fmt(d['sem'], dg)}</td>"
            f"<td>{_fmt(wc, dg)}</td><td>{_fmt(ws, dg)}</td></tr>")
    head = ("<tr><th>metric</th><th>core mean &plusmn; s.e.</th><th>n</th>"
            "<th>shell mean &plusmn; s.e.</th><th>n</th><th>core &minus; shell</th>"
            "<th>core weighted</th><th>shell weighted</th></tr>")
    out = f"<table>{head}{''.join(rows)}</table>"
    if cells is not None and len(cells):
        crow = []
        for name in CELL_MAP_METRICS:
            if name not in cells:
                continue
            d = describe(np.asarray(cells[name], float))
            crow.append(f"<tr><td>{name}</td><td>{_fmt(d['mean'], 4)} &plusmn; "
                        f"{_fmt(d['sem'], 4)}</td><td>{d['n']}</td>"
                        f"<td>{_fmt(d['std'], 4)}</td></tr>")
        out += ("<p>Cell spacings (all cells):</p><table><tr><th>metric</th>"
                "<th>mean &plusmn; s.e.</th><th>n</th><th>std</th></tr>"
                f"{''.join(crow)}</table>")
    return out


def _layer_table(summary, name="theta3_deg"):
    layers = summary.get("layers", {}).get(name)
    if not layers:
        return ""
    rows = "".join(f"<tr><td>{k}</td><td>{_fmt(d['mean'], 3)} &plusmn; {_fmt(d['sem'], 3)}"
                   f"</td><td>{d['n']}</td></tr>" for k, d in layers.items())
    return (f"<p>{name} per surface layer (0 = outermost unit cell; edge-excluded left "
            f"out):</p><table><tr><th>layer</th><th>mean &plusmn; s.e.</th><th>n</th></tr>"
            f"{rows}</table>")


def _gpa_section(image, cells, pixel_size_nm, dpi):
    """GPA maps and the spacing cross-check table (or the reason it could not run)."""
    if image is None:
        return "<p class='note'>No image in the result: GPA skipped.</p>"
    period = None
    if cells is not None and len(cells):
        p = np.concatenate([np.asarray(cells.get("P1_nm", []), float),
                            np.asarray(cells.get("P2_nm", []), float)])
        p = p[np.isfinite(p)]
        period = float(np.median(p)) if len(p) else None
    try:
        res = gpa(image, pixel_size_nm=pixel_size_nm, period_nm=period, displacement=False)
    except ValueError as exc:
        return f"<p class='note'>GPA not possible: {html.escape(str(exc))}</p>"
    rows = []
    for k in range(2):
        a = res.a_nm[k][res.mask]
        a = a[np.isfinite(a)]
        g = res.g[k]
        ang = np.degrees(np.arctan2(g[1], g[0]))
        # Lattice-derived counterpart: P1 runs along u (nearer x), P2 along v.
        lat = "P1_nm" if abs(np.cos(np.deg2rad(ang))) >= abs(np.sin(np.deg2rad(ang))) \
            else "P2_nm"
        ref = (describe(np.asarray(cells[lat], float))["median"]
               if cells is not None and lat in cells else np.nan)
        med = float(np.median(a)) if len(a) else np.nan
        rel = 100 * (med - ref) / ref if np.isfinite(ref) and ref else np.nan
        rows.append(f"<tr><td>g{k + 1} ({ang:.1f} deg, order {int(res.order[k])})</td>"
                    f"<td>{_fmt(med, 4)}</td><td>{lat} {_fmt(ref, 4)}</td>"
                    f"<td>{_fmt(rel, 2)}</td></tr>")
    table = ("<table><tr><th>reflection</th><th>GPA period (nm, median in lattice mask)</th>"
             "<th>lattice-derived (median)</th><th>difference (%)</th></tr>"
             f"{''.join(rows)}</table>")
    note = ("<p class='note'>Strain and rotation relative to the frame's median lattice; "
            f"resolution sigma = {res.sigma_px:.1f} px; order from the median Pb-Pb spacing."
            "</p>")
    return table + note + _img(figures.plot_gpa(res), dpi, "GPA maps")


def _interactive(maps, name):
    from bokeh.embed import components
    from bokeh.models import ColorBar, LinearColorMapper
    from bokeh.plotting import figure as bfigure
    from bokeh.resources import INLINE

    u, v = maps["u_nm"], maps["v_nm"]
    data = np.asarray(maps[name], float)
    fin = data[np.isfinite(data)]
    lo, hi = (np.percentile(fin, [2, 98]) if len(fin) else (0.0, 1.0))
    mapper = LinearColorMapper(palette="Viridis256", low=float(lo), high=float(hi),
                               nan_color=(0, 0, 0, 0))
    du = u[1] - u[0] if len(u) > 1 else 1.0
    dv = v[1] - v[0] if len(v) > 1 else 1.0
    p = bfigure(title=name, x_range=(u[0] - du / 2, u[-1] + du / 2),
                y_range=(v[-1] + dv / 2, v[0] - dv / 2), match_aspect=True,
                tooltips=[("x (nm)", "$x"), ("y (nm)", "$y"), (name, "@image")],
                width=560, height=520)
    p.image(image=[data], x=u[0] - du / 2, y=v[0] - dv / 2, dw=len(u) * du, dh=len(v) * dv,
            color_mapper=mapper)
    p.add_layout(ColorBar(color_mapper=mapper), "right")
    script, div = components(p)
    return INLINE.render() + script + div


def build_report(result, out_html, *, frame=0, title=None, shell_width_uc=3,
                 profile_segment_nm=None, profile_columns=("theta3_deg", "C3_nm"),
                 gpa_check=True, interactive=False, dpi=90):
    """Write a self-contained HTML report of one frame of a result.

    Parameters
    ----------
    result : pvq_dask.store.Result or an object with the same attributes
        ``images`` (xarray Dataset with ``raw``, and optionally ``absf``/``denoised``, dims
        (t, y, x)), ``atoms``, ``octahedra``, ``cells`` (DataFrames with a ``frame``
        column), ``maps`` (Dataset (t, v, u) or None: then computed here),
        ``pixel_size_nm``, ``provenance`` (dict).
    out_html : str or Path
    frame : int
    title : str, optional
    shell_width_uc : int
        Outer unit cells counted as shell in the summary.
    profile_segment_nm : ((x0, y0), (x1, y1)), optional
        Default :func:`default_profile_segment`.
    profile_columns : sequence of str
        Octahedra or cells columns to profile along the segment.
    gpa_check : bool
        Run GPA on the frame and compare its lattice periods with P1/P2.
    interactive : bool
        Add a bokeh map of theta3 (inline BokehJS, about 1 MB more).
    dpi : int

    Returns
    -------
    pathlib.Path
    """
    out_html = Path(out_html)
    ps = float(result.pixel_size_nm)
    octs = _frame_rows(getattr(result, "octahedra", None), frame)
    cells = _frame_rows(getattr(result, "cells", None), frame)
    atoms = _frame_rows(getattr(result, "atoms", None), frame)
    img_name, image = _pick_image(getattr(result, "images", None), frame)
    title = title or f"pvq_dask report: {getattr(result, 'path', 'result')}, frame {frame}"
    parts = [f"<h1>{html.escape(str(title))}</h1>"]
    n_oct = 0 if octs is None else len(octs)

    parts.append("<h2 id='summary'>Summary</h2>")
    if n_oct == 0:
        parts.append("<p>No octahedra were found in this frame.</p>")
    else:
        summary = summarize_octahedra(octs, shell_width_uc=shell_width_uc)
        parts.append(
            f"<p>{summary['n_octahedra']} octahedra: core {summary['n_core']}, shell "
            f"{summary['n_shell']} (outer {shell_width_uc} unit cells), edge-excluded "
            f"{summary['n_edge_excluded']}. Pixel size {ps:.5g} nm.</p>")
        parts.append(_summary_table(summary, cells))
        parts.append(_layer_table(summary))

    if image is not None:
        parts.append(f"<h2 id='image'>Image ({img_name}) and octahedral network</h2>")
        fig = figures.plot_overlay(image, octs if n_oct else None, pixel_size_nm=ps,
                                   atoms=atoms if atoms is not None and len(atoms) else None)
        parts.append(_img(fig, dpi, "overlay"))

    if n_oct:
        maps = _frame_maps(result, octs, cells, ps, image, frame)
        parts.append("<h2 id='tilt-maps'>Octahedral tilt maps</h2>")
        parts.append(_img(figures.plot_maps(maps, ["theta1_deg", "theta2_deg", "theta3_deg"]),
                          dpi, "tilt maps"))
        parts.append(_img(figures.plot_maps(maps, ["L1_nm", "L2_nm"]), dpi, "L maps"))
        parts.append("<h2 id='spacing-maps'>Cs-Cs and Pb-Pb spacing maps</h2>")
        parts.append(_img(figures.plot_maps(maps, ["C1_nm", "C2_nm", "C3_nm"]), dpi, "C maps"))
        parts.append(_img(figures.plot_maps(maps, ["P1_nm", "P2_nm"]), dpi, "P maps"))
        parts.append("<h2 id='histograms'>Core vs shell</h2>")
        parts.append(_img(figures.plot_region_histograms(octs, shell_width_uc=shell_width_uc),
                          dpi, "histograms"))
        parts.append("<h2 id='profiles'>Line profiles</h2>")
        parts.append(_profiles(octs, cells, ps, profile_segment_nm, profile_columns, dpi))
        if interactive:
            parts.append("<h2 id='interactive'>Interactive map</h2>")
            parts.append(_interactive(maps, "theta3_deg"))
    if gpa_check:
        parts.append("<h2 id='gpa'>GPA cross-check</h2>")
        parts.append(_gpa_section(image, cells, ps, dpi))

    prov = getattr(result, "provenance", None) or {}
    parts.append("<h2 id='provenance'>Provenance</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(prov, indent=1, default=str)[:20000])}</pre>")
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
           f"<title>{html.escape(str(title))}</title><style>{_STYLE}</style></head><body>"
           + "\n".join(parts) + "</body></html>")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(doc, encoding="utf-8")
    return out_html


def _frame_maps(result, octs, cells, ps, image, frame):
    ds = getattr(result, "maps", None)
    if ds is not None and "t" in ds.coords and frame in np.asarray(ds["t"].values):
        return dataset_to_maps(ds, t=frame)
    shape = image.shape if image is not None else None
    return metric_maps(octs, cells if cells is not None and len(cells) else None,
                       pixel_size_nm=ps, shape=shape)


def _profiles(octs, cells, ps, segment, columns, dpi):
    try:
        start, end = segment or default_profile_segment(octs, pixel_size_nm=ps)
    except ValueError as exc:
        return f"<p class='note'>{html.escape(str(exc))}</p>"
    profs = {}
    for col in columns:
        table = octs if col in octs else cells if cells is not None and col in cells else None
        if table is None:
            continue
        if table is cells:
            table = table.assign(region="core")  # cells carry no region
        try:
            profs[col] = octahedra_profile(table, start, end, column=col, pixel_size_nm=ps)
        except ValueError:
            continue
    if not profs:
        return "<p class='note'>No profile could be computed.</p>"
    note = (f"<p class='note'>Segment ({start[0]:.2f}, {start[1]:.2f}) &rarr; ({end[0]:.2f}, "
            f"{end[1]:.2f}) nm; {len(next(iter(profs.values()))['offset_nm'])} parallel lines "
            "one lattice spacing apart, integrated.</p>")
    out = note
    for col, prof in profs.items():
        out += _img(figures.plot_profile({col: prof}), dpi, f"profile {col}")
    return out
