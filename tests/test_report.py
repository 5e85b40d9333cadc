"""Figures and the HTML report, built from a small stand-in result (no pipeline needed)."""

import re
import types

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from pvq_dask.kernels.maps import metric_maps
from pvq_dask.kernels.profiles import octahedra_profile
from pvq_dask.kernels.synth import SynthParams, synthesize_frame
from pvq_dask.report import figures
from pvq_dask.report.html import build_report, default_profile_segment
from pvq_dask.store.maps import maps_to_dataset

X_RECONSTRUCTION_TOL_PX = 0.05   # halide positions rebuilt from the octahedra table
SEGMENT_ANGLE_TOL_DEG = 1.0      # default profile segment vs the lattice u axis
SECTIONS = ("summary", "image", "tilt-maps", "spacing-maps", "histograms", "profiles", "gpa",
            "provenance")


@pytest.fixture(scope="module")
def frame():
    p = SynthParams.preset("coreshell", shape=(384, 384), dot_size_nm=5.5,
                           lattice_rotation_deg=8.0)
    return synthesize_frame(p, rng=np.random.default_rng(4))


def _result(f, *, maps=None, octahedra=None):
    octs = f.octahedra.copy() if octahedra is None else octahedra
    if octahedra is None:
        octs.loc[octs.surface_distance_uc == 0, "region"] = "edge_excluded"
    return types.SimpleNamespace(
        images=xr.Dataset({"raw": (("t", "y", "x"), f.image[None])}, coords={"t": [0]}),
        atoms=f.atoms.assign(frame=0), octahedra=octs, cells=f.cells, maps=maps,
        pixel_size_nm=f.pixel_size_nm, provenance={"note": "<stand-in & test>"},
        path="stand-in")


def test_report_has_every_section_and_the_core_shell_numbers(frame, tmp_path):
    out = build_report(_result(frame), tmp_path / "r" / "report.html")
    text = out.read_text()
    for sec in SECTIONS:
        assert f"id='{sec}'" in text, sec
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(pngs) >= 9
    assert all(len(p) > 1000 for p in pngs)
    octs = frame.octahedra
    core = octs[(octs.surface_distance_uc >= 3)].theta3_deg
    assert f"{core.mean():.3f} &plusmn; {core.std(ddof=1) / np.sqrt(len(core)):.3f}" in text
    assert "GPA period" in text and "P1_nm" in text and "per surface layer" in text
    assert "&lt;stand-in &amp; test&gt;" in text                  # escaped provenance
    assert "http" not in text.split("<body>")[0]                   # self-contained head


def test_stored_maps_are_used_and_interactive_map_is_inline(frame, tmp_path):
    f = frame
    m = metric_maps(f.octahedra, f.cells, pixel_size_nm=f.pixel_size_nm, shape=f.image.shape)
    res = _result(f, maps=maps_to_dataset(m, t=[0]))
    out = build_report(res, tmp_path / "i.html", gpa_check=False, interactive=True)
    text = out.read_text()
    assert "id='interactive'" in text and "Bokeh" in text and "id='gpa'" not in text


def test_empty_frame_gives_a_clear_report(frame, tmp_path):
    rng = np.random.default_rng(0)
    empty = frame.octahedra.iloc[:0]
    res = _result(frame, octahedra=empty)
    res.images = xr.Dataset({"raw": (("t", "y", "x"), rng.poisson(6.0, (1, 256, 256)) * 1.0)})
    res.cells = frame.cells.iloc[:0]
    text = build_report(res, tmp_path / "e.html").read_text()
    assert "No octahedra were found" in text
    assert "GPA not possible" in text
    assert "id='tilt-maps'" not in text


def test_octahedra_polygons_rebuild_the_truth_halides(frame):
    poly = figures.octahedra_polygons(frame.octahedra, pixel_size_nm=frame.pixel_size_nm)
    xb = frame.network.x_bonds
    truth = np.where((xb >= 0)[..., None], frame.xy[np.maximum(xb, 0)], np.nan)
    ok = np.isfinite(truth)
    assert ok.mean() > 0.9
    assert np.max(np.abs(poly[ok] - truth[ok])) < X_RECONSTRUCTION_TOL_PX


def test_default_profile_segment_runs_along_the_lattice_u_axis(frame):
    start, end = default_profile_segment(frame.octahedra, pixel_size_nm=frame.pixel_size_nm)
    ang = np.degrees(np.arctan2(end[1] - start[1], end[0] - start[0]))
    assert ang == pytest.approx(8.0, abs=SEGMENT_ANGLE_TOL_DEG)
    assert np.hypot(end[0] - start[0], end[1] - start[1]) > 0.6 * 5.5


def test_figures_are_matplotlib_figures(frame):
    f = frame
    m = metric_maps(f.octahedra, f.cells, pixel_size_nm=f.pixel_size_nm, shape=f.image.shape)
    start, end = default_profile_segment(f.octahedra, pixel_size_nm=f.pixel_size_nm)
    prof = octahedra_profile(f.octahedra, start, end, pixel_size_nm=f.pixel_size_nm)
    figs = [figures.plot_maps(m, ["theta1_deg", "theta2_deg", "theta3_deg"]),
            figures.plot_region_histograms(f.octahedra),
            figures.plot_profile({"theta3_deg": prof}),
            figures.plot_overlay(f.image, f.octahedra, pixel_size_nm=f.pixel_size_nm)]
    assert all(isinstance(fig, Figure) for fig in figs)
    assert len(figs[0].axes) == 6                                 # 3 maps + 3 colour bars
