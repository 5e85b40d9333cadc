"""Metric maps (kernels.maps) and their xarray form (store.maps)."""

import numpy as np
import pytest
import xarray as xr

from pvq_dask.kernels.maps import (
    CELL_MAP_METRICS,
    OCTAHEDRA_MAP_METRICS,
    err_name,
    lattice_spacing,
    map_grid,
    metric_maps,
    rasterize_sites,
)
from pvq_dask.kernels.synth import SynthParams, synthesize_frame
from pvq_dask.store.maps import (
    MAP_VARIABLES,
    dataset_to_maps,
    empty_maps_dataset,
    maps_to_dataset,
)

SPACING_NM = 0.62
LINEAR_EXACT_TOL = 1e-9            # local-linear maps of a linear field (value units)
GAUSSIAN_INTERIOR_TOL_DEG = 2e-3   # weighted-mean map of a 0.47 deg/nm gradient, interior
FLOAT32_TOL = 1e-6                 # relative, Dataset stores float32
MAP_CORE_TOL_DEG = 0.05            # map at the dot centre vs the truth core theta3


def _lattice(n=30, rotation_deg=17.0, origin=(3.0, 2.0)):
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    t = np.deg2rad(rotation_deg)
    x = origin[0] + SPACING_NM * (np.cos(t) * ii - np.sin(t) * jj)
    y = origin[1] + SPACING_NM * (np.sin(t) * ii + np.cos(t) * jj)
    return x.ravel(), y.ravel(), ii.ravel(), jj.ravel()


def _field(x, y):
    return 9.0 + 0.4 * x - 0.25 * y


@pytest.fixture(scope="module")
def grid():
    return map_grid((1500, 1500), pixel_size_nm=0.0168, step_nm=0.1)


def test_linear_field_is_reproduced_exactly_by_local_linear_maps(grid):
    u, v = grid
    x, y, _, _ = _lattice()
    val, _, _ = rasterize_sites(x, y, _field(x, y), u_nm=u, v_nm=v, sigma_nm=SPACING_NM / 2,
                                method="linear", max_distance_nm=SPACING_NM)
    uu, vv = np.meshgrid(u, v)
    fin = np.isfinite(val)
    assert fin.sum() > 0.8 * (29 * SPACING_NM / 0.1) ** 2          # the whole lattice area
    assert np.max(np.abs(val[fin] - _field(uu, vv)[fin])) < LINEAR_EXACT_TOL


def test_linear_field_is_reproduced_by_gaussian_maps_in_the_interior(grid):
    u, v = grid
    x, y, _, _ = _lattice()
    val, _, _ = rasterize_sites(x, y, _field(x, y), u_nm=u, v_nm=v, sigma_nm=SPACING_NM,
                                method="gaussian", truncate=4.0)
    uu, vv = np.meshgrid(u, v)
    # Lattice coordinates of the grid points: interior = more than 5 cells from the edge.
    t = np.deg2rad(17.0)
    a = ((uu - 3.0) * np.cos(t) + (vv - 2.0) * np.sin(t)) / SPACING_NM
    b = (-(uu - 3.0) * np.sin(t) + (vv - 2.0) * np.cos(t)) / SPACING_NM
    inner = (a > 5) & (a < 24) & (b > 5) & (b < 24)
    assert np.max(np.abs(val[inner] - _field(uu, vv)[inner])) < GAUSSIAN_INTERIOR_TOL_DEG


def test_nearest_map_takes_the_nearest_site_and_stops_at_max_distance():
    u = v = np.arange(0, 3.01, 0.1)
    val, err, count = rasterize_sites([1.0, 2.0], [1.0, 1.0], [5.0, 7.0], errors=[0.1, 0.2],
                                      u_nm=u, v_nm=v, sigma_nm=0.3, method="nearest",
                                      max_distance_nm=0.5)
    assert val[10, 12] == 5.0 and val[10, 18] == 7.0          # x = 1.2 and 1.8, y = 1.0
    assert err[10, 12] == 0.1 and err[10, 18] == 0.2
    assert np.isnan(val[20, 10])                               # (1.0, 2.0): 1 nm away
    assert count[10, 10] == 1 and count[10, 15] == 2           # support 3 sigma = 0.9 nm


def test_gaussian_map_uncertainty_and_inverse_variance_weighting():
    u = v = np.array([0.0, 1.0])
    # Two sites on the same grid point: plain mean 1.5, its error sqrt(1 + 4) / 2.
    val, err, _ = rasterize_sites([0.0, 0.0], [0.0, 0.0], [1.0, 2.0], errors=[1.0, 2.0],
                                  u_nm=u, v_nm=v, sigma_nm=0.2)
    assert val[0, 0] == pytest.approx(1.5)
    assert err[0, 0] == pytest.approx(np.sqrt(5.0) / 2)
    val, err, _ = rasterize_sites([0.0, 0.0], [0.0, 0.0], [1.0, 2.0], errors=[1.0, 2.0],
                                  u_nm=u, v_nm=v, sigma_nm=0.2, inverse_variance=True)
    assert val[0, 0] == pytest.approx((1.0 + 2.0 / 4) / (1 + 1 / 4))
    assert err[0, 0] == pytest.approx(1 / np.sqrt(1 + 1 / 4))


def test_non_finite_values_are_ignored_per_metric():
    u = v = np.arange(0, 2.01, 0.1)
    vals = np.array([[1.0, np.nan], [3.0, 4.0]])
    out, _, count = rasterize_sites([0.5, 1.5], [1.0, 1.0], vals, u_nm=u, v_nm=v,
                                    sigma_nm=0.3, method="nearest", max_distance_nm=0.6)
    assert out.shape == (2, 21, 21)
    assert out[0, 10, 9] == 1.0 and out[1, 10, 9] == 4.0       # metric 1 skips site 0
    assert np.isnan(out[1, 10, 3])                             # near site 0 only
    assert count[10, 10] == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="cubic"), "method"),
    (dict(sigma_nm=0.0), "sigma_nm"),
    (dict(values=[1.0, 2.0]), "differ in length"),
    (dict(errors=[1.0, 2.0]), "errors"),
    (dict(inverse_variance=True), "inverse_variance"),
])
def test_rasterize_rejects_bad_input(kwargs, match):
    args = dict(x_nm=[0.0], y_nm=[0.0], values=[1.0], u_nm=np.arange(3.0),
                v_nm=np.arange(3.0), sigma_nm=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        rasterize_sites(**args)


def test_lattice_spacing_and_grid():
    x, y, _, _ = _lattice(n=8)
    assert lattice_spacing(x, y) == pytest.approx(SPACING_NM)
    with pytest.raises(ValueError, match="at least 2"):
        lattice_spacing([1.0], [1.0])
    with pytest.raises(ValueError, match="step_nm"):
        map_grid((10, 10), pixel_size_nm=0.1, step_nm=0)


def _table(n=12, ps=0.02):
    x, y, i, j = _lattice(n=n, rotation_deg=0.0, origin=(0.5, 0.5))
    edge = (i == 0) | (j == 0) | (i == n - 1) | (j == n - 1)
    octs = {"x_px": x / ps, "y_px": y / ps, "i": i, "j": j,
            "region": np.where(edge, "edge_excluded", "core")}
    for name in OCTAHEDRA_MAP_METRICS:
        octs[name] = np.where(edge, 100.0, _field(x, y))
        octs[err_name(name)] = np.full(len(x), 0.1)
    cells = {"x_px": (x + SPACING_NM / 2) / ps, "y_px": (y + SPACING_NM / 2) / ps,
             "i": i, "j": j}
    # Cells whose corner Pb (i, j), (i+1, j), (i, j+1), (i+1, j+1) includes an edge site.
    touch = (i == 0) | (j == 0) | (i >= n - 2) | (j >= n - 2)
    for name in CELL_MAP_METRICS:
        cells[name] = np.where(touch, 100.0, 0.6)
    return octs, cells


def test_metric_maps_leave_out_edge_excluded_octahedra_and_their_cells():
    octs, cells = _table()
    m = metric_maps(octs, cells, pixel_size_nm=0.02, step_nm=0.1)
    for name in OCTAHEDRA_MAP_METRICS + CELL_MAP_METRICS:
        assert np.nanmax(m[name]) < 50, name
        assert m[name].shape == m["count"].shape == (len(m["v_nm"]), len(m["u_nm"]))
    # Weighted means of sites with 0.1 deg errors: never worse, inside ~1/sqrt(n_eff = 3).
    assert np.nanmax(m["theta3_err_deg"]) <= 0.1 + 1e-12
    assert np.nanmedian(m["theta3_err_deg"]) < 0.07
    assert m["attrs"]["method"] == "gaussian"
    everything = metric_maps(octs, cells, pixel_size_nm=0.02, step_nm=0.1,
                             include_edge_excluded=True)
    assert np.nanmax(everything["theta3_deg"]) > 50
    assert everything["count"].sum() > m["count"].sum()


@pytest.fixture(scope="module")
def synth():
    return synthesize_frame(SynthParams.preset("coreshell", shape=(512, 512), dot_size_nm=7.0),
                            rng=np.random.default_rng(2))


def test_metric_maps_of_a_synthetic_dot_show_core_and_shell(synth):
    f = synth
    m = metric_maps(f.octahedra, f.cells, pixel_size_nm=f.pixel_size_nm, shape=f.image.shape)
    u, v = map_grid(f.image.shape, pixel_size_nm=f.pixel_size_nm, step_nm=0.1)
    assert np.array_equal(m["u_nm"], u) and np.array_equal(m["v_nm"], v)
    o = f.octahedra
    iu = np.clip(np.rint(o.x_px.to_numpy() * f.pixel_size_nm / 0.1).astype(int), 0, len(u) - 1)
    iv = np.clip(np.rint(o.y_px.to_numpy() * f.pixel_size_nm / 0.1).astype(int), 0, len(v) - 1)
    at_sites = m["theta3_deg"][iv, iu]
    deep = o.surface_distance_uc.to_numpy() >= 4
    outer = o.surface_distance_uc.to_numpy() == 0
    assert np.nanmean(at_sites[deep]) == pytest.approx(o.theta3_deg[deep].mean(),
                                                       abs=MAP_CORE_TOL_DEG)
    assert np.nanmean(at_sites[outer]) < o.theta3_deg[deep].mean() - 1.0
    assert np.isnan(m["theta3_deg"][0, 0])                    # outside the dot


def test_dataset_round_trip_through_zarr(synth, tmp_path):
    f = synth
    m = metric_maps(f.octahedra, f.cells, pixel_size_nm=f.pixel_size_nm, shape=f.image.shape)
    ds = maps_to_dataset([m, m], t=[0, 1], attrs={"source": "test"})
    assert dict(ds.sizes) == {"t": 2, "v": len(m["v_nm"]), "u": len(m["u_nm"])}
    for name in MAP_VARIABLES:
        assert ds[name].dims == ("t", "v", "u")
        assert ds[name].attrs["units"] in ("degree", "nm")
        assert ds[err_name(name)].attrs["long_name"].startswith("standard uncertainty")
    assert ds["u"].attrs["units"] == "nm" and ds["count"].dtype == np.int32
    assert ds.attrs["sigma_nm"] == m["attrs"]["sigma_nm"]
    ds.to_zarr(tmp_path / "maps.zarr", zarr_format=3, consolidated=False)
    back = dataset_to_maps(xr.open_zarr(tmp_path / "maps.zarr", consolidated=False), t=1)
    for name in ("theta3_deg", "C3_nm", "P2_err_nm"):
        np.testing.assert_allclose(back[name], m[name], rtol=FLOAT32_TOL, equal_nan=True)
    np.testing.assert_array_equal(back["count"], m["count"])


def test_empty_template_and_grid_checks():
    ds = empty_maps_dataset(np.arange(5) * 0.1, np.arange(4) * 0.1, 2)
    assert bool(ds["theta1_deg"].isnull().all()) and int(ds["count"].sum()) == 0
    a = {"u_nm": np.arange(3.0), "v_nm": np.arange(3.0), "theta3_deg": np.zeros((3, 3))}
    b = {"u_nm": np.arange(4.0), "v_nm": np.arange(3.0), "theta3_deg": np.zeros((3, 4))}
    with pytest.raises(ValueError, match="different grid"):
        maps_to_dataset([a, b])
    with pytest.raises(ValueError, match="shape"):
        maps_to_dataset({**a, "theta3_deg": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="no frame"):
        dataset_to_maps(ds, t=7)
