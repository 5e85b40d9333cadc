"""Result store: layout, round trips, status flags, atomic tables, maps, concurrency."""

import multiprocessing as mp
import pickle

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from pvq_dask.kernels.schema import ATOM_COLUMNS
from pvq_dask.store import InputError, ResultStore, open_result
from pvq_dask.store.zarr_store import STAGES

PS_NM = 0.0168
#: Concurrency test: worker processes and frames each of them writes.
N_WORKERS, FRAMES_PER_WORKER = 3, 2


def _atoms(t, n, seed=0):
    rng = np.random.default_rng(seed + t)
    df = pd.DataFrame({c: rng.normal(size=n) for c in ATOM_COLUMNS})
    df["frame"] = t
    df["atom_id"] = np.arange(n)
    df["species"] = rng.choice(["Pb", "X", "Cs"], n)
    df["fit_ok"] = True
    return df


def _frames(n, shape, seed=0):
    return np.random.default_rng(seed).normal(100, 10, size=(n, *shape)).astype(np.float32)


def test_round_trip_through_open_result(tmp_path):
    data = _frames(3, (70, 90))
    s = ResultStore.create(tmp_path / "r.pvq", n_frames=3, shape=(70, 90), pixel_size_nm=PS_NM,
                           provenance={"config": {"a": 1}})
    for t in range(3):
        s.write_frame("raw", t, data[t])
        s.set_done("ingest", t)
    r = open_result(tmp_path / "r.pvq")
    assert r.pixel_size_nm == PS_NM and r.n_frames == 3 and r.shape == (70, 90)
    np.testing.assert_array_equal(r.images.raw.values, data)
    assert r.images.raw.dims == ("t", "y", "x")
    np.testing.assert_allclose(r.images.x_nm.values, np.arange(90) * PS_NM)
    assert list(r.images.data_vars) == ["raw"]  # absf/denoised never written
    assert r.status["ingest"].all() and not r.status["atoms"].any()
    assert r.provenance == {"config": {"a": 1}}
    assert list(r.atoms.columns) == list(ATOM_COLUMNS) and len(r.atoms) == 0
    assert r.maps is None


def test_denoised_std_and_names(tmp_path):
    s = ResultStore.create(tmp_path / "r.pvq", n_frames=2, shape=(8, 8), pixel_size_nm=PS_NM)
    s.write_frame("denoised", 1, np.ones((8, 8)))
    s.write_frame("denoised", 1, np.full((8, 8), 0.5), name="std")
    np.testing.assert_array_equal(s.read_frame("denoised", 1, name="std"), 0.5)
    assert np.isnan(s.read_frame("denoised", 0)).all()  # never written
    images = open_result(tmp_path / "r.pvq").images
    assert {"denoised", "denoised_std"} <= set(images.data_vars)
    with pytest.raises(ValueError, match="no array 'std'"):
        s.write_frame("raw", 0, np.ones((8, 8)), name="std")
    with pytest.raises(ValueError, match="unknown image group"):
        s.write_frame("cooked", 0, np.ones((8, 8)))


@pytest.mark.parametrize("shape, chunks, shards", [((600, 700), (1, 512, 512), (1, 1024, 1024)),
                                                   ((100, 80), (1, 100, 80), (1, 100, 80))])
def test_layout_chunks_shards_ome(tmp_path, shape, chunks, shards):
    ResultStore.create(tmp_path / "r.pvq", n_frames=2, shape=shape, pixel_size_nm=PS_NM)
    root = zarr.open_group(tmp_path / "r.pvq" / "store.zarr", mode="r")
    arr = root["raw/0"]
    assert arr.metadata.zarr_format == 3 and arr.chunks == chunks and arr.shards == shards
    assert arr.metadata.dimension_names == ("t", "y", "x")
    assert "ZstdCodec" in str(arr.metadata.codecs)
    ome = dict(root["raw"].attrs)["ome"]
    assert ome["version"] == "0.5"
    ds = ome["multiscales"][0]["datasets"][0]
    assert ds["path"] == "0" and ds["coordinateTransformations"][0]["scale"] == [1.0, PS_NM, PS_NM]
    for stage in STAGES:
        flags = root[f"status/done_{stage}"]
        assert flags.shape == (2,) and flags.chunks == (1,) and flags.dtype == bool
    # xarray users can open a group directly.
    opened = xr.open_zarr(tmp_path / "r.pvq" / "store.zarr", group="raw", consolidated=False)
    assert opened["0"].dims == ("t", "y", "x") and "x_nm" in opened.coords


def test_create_refuses_to_clobber(tmp_path):
    path = tmp_path / "r.pvq"
    ResultStore.create(path, n_frames=1, shape=(8, 8), pixel_size_nm=PS_NM)
    with pytest.raises(ValueError, match="already exists"):
        ResultStore.create(path, n_frames=1, shape=(8, 8), pixel_size_nm=PS_NM)
    ResultStore.create(path, n_frames=2, shape=(8, 8), pixel_size_nm=PS_NM, overwrite=True)
    assert ResultStore.open(path).n_frames == 2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a pvq result"):
        ResultStore.create(other, n_frames=1, shape=(8, 8), pixel_size_nm=PS_NM, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_bad_use_errors(tmp_path):
    s = ResultStore.create(tmp_path / "r.pvq", n_frames=2, shape=(8, 8), pixel_size_nm=PS_NM)
    with pytest.raises(ValueError, match="out of range"):
        s.write_frame("raw", 2, np.ones((8, 8)))
    with pytest.raises(ValueError, match="frame shape"):
        s.write_frame("raw", 0, np.ones((8, 9)))
    with pytest.raises(ValueError, match="unknown stage"):
        s.set_done("fitting", 0)
    ro = ResultStore.open(tmp_path / "r.pvq")
    with pytest.raises(ValueError, match="read-only"):
        ro.write_frame("raw", 0, np.ones((8, 8)))
    with pytest.raises(InputError, match="no such result"):
        open_result(tmp_path / "missing.pvq")
    with pytest.raises(InputError, match="not a pvq result"):
        ResultStore.open(tmp_path)


def test_pickles_as_path(tmp_path):
    s = ResultStore.create(tmp_path / "r.pvq", n_frames=1, shape=(8, 8), pixel_size_nm=PS_NM)
    s2 = pickle.loads(pickle.dumps(s))
    s2.write_frame("raw", 0, np.full((8, 8), 3.0))
    assert s.read_frame("raw", 0)[0, 0] == 3.0 and s2.mode == "r+"


def test_tables_partitioned_atomic_overwrite(tmp_path, monkeypatch):
    s = ResultStore.create(tmp_path / "r.pvq", n_frames=3, shape=(8, 8), pixel_size_nm=PS_NM)
    s.write_table("atoms", 2, _atoms(2, 5))
    s.write_table("atoms", 0, _atoms(0, 4).drop(columns="frame"))  # frame column added
    part = tmp_path / "r.pvq" / "tables" / "atoms" / "frame=2" / "part.parquet"
    assert part.is_file()
    all_rows = s.read_table("atoms")
    assert all_rows["frame"].tolist() == [0] * 4 + [2] * 5
    assert s.read_table("atoms", frames=[2])["frame"].unique().tolist() == [2]
    # Overwrite: the frame's rows are replaced, not appended.
    s.write_table("atoms", 2, _atoms(2, 2, seed=9))
    assert (s.read_table("atoms")["frame"] == 2).sum() == 2
    assert s.table_rows("atoms") == {0: 4, 2: 2}

    # A writer that dies mid-write leaves the old partition and no temporary file.
    def boom(self, path, *args, **kwargs):
        open(path, "wb").write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        s.write_table("atoms", 2, _atoms(2, 7))
    monkeypatch.undo()
    assert sorted(p.name for p in part.parent.iterdir()) == ["part.parquet"]
    assert len(s.read_table("atoms", frames=[2])) == 2


def test_table_validation(tmp_path):
    s = ResultStore.create(tmp_path / "r.pvq", n_frames=2, shape=(8, 8), pixel_size_nm=PS_NM)
    with pytest.raises(ValueError, match="missing schema columns"):
        s.write_table("atoms", 0, pd.DataFrame({"x_px": [1.0]}))
    with pytest.raises(ValueError, match="other than 1"):
        s.write_table("atoms", 1, _atoms(0, 3))
    with pytest.raises(ValueError, match="identifier"):
        s.write_table("../evil", 0, pd.DataFrame({"a": [1]}))
    s.write_table("bonds", 1, pd.DataFrame({"length_nm": [0.31, 0.32]}))  # free-form table
    assert s.read_table("bonds")["frame"].tolist() == [1, 1]
    assert s.table_names() == ["bonds"]


def test_maps_round_trip_and_frame_update(tmp_path):
    s = ResultStore.create(tmp_path / "r.pvq", n_frames=3, shape=(8, 8), pixel_size_nm=PS_NM)
    ds = xr.Dataset({"theta1_deg": (("t", "v", "u"), np.zeros((3, 4, 5)))},
                    coords={"t": np.arange(3), "v_nm": ("v", np.arange(4.0)),
                            "u_nm": ("u", np.arange(5.0))})
    ds.theta1_deg.attrs.update(units="deg", long_name="horizontal Pb-X tilt")
    s.write_maps(ds)
    frame = ds.isel(t=[1]).copy(deep=True)
    frame["theta1_deg"][:] = 7.0
    s.write_maps(frame, t=1)
    maps = open_result(tmp_path / "r.pvq").maps
    np.testing.assert_array_equal(maps.theta1_deg.values[:, 0, 0], [0.0, 7.0, 0.0])
    assert maps.theta1_deg.attrs["units"] == "deg"
    assert ResultStore.open(tmp_path / "r.pvq").attrs["pvq"]["n_frames"] == 3  # root intact


def _worker(path, frames):
    s = ResultStore.open(path, mode="r+")
    for t in frames:
        s.write_frame("raw", t, _frames(1, (64, 48), seed=t)[0])
        s.write_table("atoms", t, _atoms(t, 3 + t))
        s.set_done("ingest", t)
        s.set_done("atoms", t)


def test_concurrent_frame_writes_all_land(tmp_path):
    n = N_WORKERS * FRAMES_PER_WORKER
    path = tmp_path / "r.pvq"
    ResultStore.create(path, n_frames=n, shape=(64, 48), pixel_size_nm=PS_NM)
    jobs = [(str(path), list(range(w, n, N_WORKERS))) for w in range(N_WORKERS)]
    with mp.get_context("spawn").Pool(N_WORKERS) as pool:
        pool.starmap(_worker, jobs)
    s = ResultStore.open(path)
    for t in range(n):
        np.testing.assert_array_equal(s.read_frame("raw", t), _frames(1, (64, 48), seed=t)[0])
    assert s.done("ingest").all() and s.done("atoms").all()
    assert s.table_rows("atoms") == {t: 3 + t for t in range(n)}
