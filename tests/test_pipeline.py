"""The Dask layer: plain numpy, Dask synchronous and Dask distributed give the same tables."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tifffile

from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.kernels.frame import analyze_frame
from pvq_dask.kernels.synth import SynthParams, synthesize_series
from pvq_dask.parallel.pipeline import analyze_store
from pvq_dask.store import ResultStore, ingest_files, open_result

PARAMS = SynthParams.preset("series", shape=(320, 320), dot_size_nm=3.6, n_frames=2)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    frames = synthesize_series(PARAMS, rng=0)
    stack = np.stack([f.image for f in frames]).astype(np.float32)
    path = d / "series.npy"
    np.save(path, stack)
    return frames, path


def _ingest(path, out):
    ingest_files([path], out, pixel_size_nm=PARAMS.pixel_size_nm)
    return out


def _tables(store_path):
    r = open_result(store_path)
    return r.atoms, r.octahedra


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A real scheduler + one worker on 127.0.0.1, stopped by process id afterwards."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                              "--host", "127.0.0.1", "--port", str(port),
                              "--dashboard-address", ":0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                               f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--nworkers", "1",
                               "--host", "127.0.0.1", "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    from distributed import Client

    client = None
    try:
        deadline = time.monotonic() + 60
        while client is None:
            try:
                client = Client(f"tcp://127.0.0.1:{port}", timeout=5)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.wait_for_workers(1, timeout=60)
        yield client
    finally:
        if client is not None:
            client.close()
        for proc in (worker, sched):
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)


def test_numpy_sync_and_distributed_agree(series, tmp_path, cluster):
    frames, path = series
    cfg = AnalysisConfig()
    # plain numpy, frame by frame
    direct = [analyze_frame(f.image.astype(np.float32), pixel_size_nm=PARAMS.pixel_size_nm,
                            config=cfg, frame=t) for t, f in enumerate(frames)]
    sync = _ingest(path, tmp_path / "sync.pvq")
    s_sync = analyze_store(sync, cfg, scheduler="synchronous")
    dist = _ingest(path, tmp_path / "dist.pvq")
    s_dist = analyze_store(dist, cfg, scheduler=cluster)
    a_sync, o_sync = _tables(sync)
    a_dist, o_dist = _tables(dist)
    a_np = pd.concat([d.atoms for d in direct], ignore_index=True)
    o_np = pd.concat([d.octahedra for d in direct], ignore_index=True)
    assert len(o_np) > 10
    for a, b in ((a_np, a_sync), (a_sync, a_dist)):
        np.testing.assert_allclose(a[["x_px", "y_px"]].to_numpy(), b[["x_px", "y_px"]].to_numpy(),
                                   atol=1e-9)
    for a, b in ((o_np, o_sync), (o_sync, o_dist)):
        np.testing.assert_allclose(a["theta3_deg"].to_numpy(), b["theta3_deg"].to_numpy(),
                                   atol=1e-9)
    assert [s["n_octahedra"] for s in s_sync] == [s["n_octahedra"] for s in s_dist]
    store = ResultStore.open(dist)
    assert store.done("network").all() and store.done("maps").all()
    res = open_result(dist)
    assert res.maps is not None and "theta3_deg" in res.maps
    assert np.isfinite(res.maps["theta3_deg"].values).any()
    assert res.provenance is not None


def test_absf_stage_writes_its_image(series, tmp_path):
    _, path = series
    out = _ingest(path, tmp_path / "absf.pvq")
    analyze_store(out, AnalysisConfig(denoise="absf", stages=("atoms",)), frames=[1])
    store = ResultStore.open(out)
    assert store.done("absf").tolist() == [False, True]
    assert np.isfinite(store.read_frame("absf", 1)).all()
    assert store.done("atoms").tolist() == [False, True]


@pytest.mark.parametrize("source", ["absf", "raw"])
def test_s2sred_denoises_the_configured_input(series, tmp_path, recorded_s2s, source):
    _, path = series
    out = _ingest(path, tmp_path / f"{source}.pvq")
    cfg = AnalysisConfig(denoise="s2sred", s2s_input=source, stages=("atoms",))
    analyze_store(out, cfg, frames=[0])
    store = ResultStore.open(out)
    raw, filtered = store.read_frame("raw", 0), store.read_frame("absf", 0)
    ((got, reference),) = recorded_s2s
    expect, other = (filtered, raw) if source == "absf" else (raw, filtered)
    tol = 1e-5 * float(np.ptp(raw))
    np.testing.assert_allclose(got, expect, atol=tol)     # absf is stored as float32
    assert np.abs(got - other).max() > 100 * tol
    if source == "absf":   # its MC std is calibrated against the raw frame
        np.testing.assert_array_equal(reference, raw)
    else:
        assert reference is None
    np.testing.assert_allclose(store.read_frame("denoised", 0), expect, atol=tol)
    with pytest.raises(ValueError, match="s2s_input"):
        AnalysisConfig(s2s_input="clean")


def test_bad_frame_numbers_are_rejected(series, tmp_path):
    _, path = series
    out = _ingest(path, tmp_path / "bad.pvq")
    with pytest.raises(ValueError, match="out of range"):
        analyze_store(out, AnalysisConfig(), frames=[5])


def test_tiff_input_through_the_cli(series, tmp_path):
    from pvq_dask.cli import main

    frames, _ = series
    tif = tmp_path / "one.tif"
    tifffile.imwrite(tif, frames[0].image.astype(np.float32))
    out = tmp_path / "cli.pvq"
    code = main(["analyze", str(tif), "-o", str(out), "--pixel-size-nm", "0.0168"])
    assert code == 0
    assert len(open_result(out).octahedra) > 10
    # no crystal: an amorphous frame gives a clear message and no octahedra
    noise = tmp_path / "noise.tif"
    tifffile.imwrite(noise, np.random.default_rng(0).poisson(5.0, (256, 256)).astype(np.float32))
    code = main(["analyze", str(noise), "-o", str(tmp_path / "noise.pvq"),
                 "--pixel-size-nm", "0.0168"])
    assert code == 0
    assert len(open_result(tmp_path / "noise.pvq").octahedra) == 0


def test_s2sred_stage_writes_mean_and_std(series, tmp_path):
    pytest.importorskip("torch")
    _, path = series
    out = _ingest(path, tmp_path / "s2s.pvq")
    cfg = AnalysisConfig(denoise="s2sred", denoise_profile="test", stages=("atoms",))
    analyze_store(out, cfg, frames=[0])
    store = ResultStore.open(out)
    assert store.done("denoise").tolist() == [True, False]
    mean, std = store.read_frame("denoised", 0), store.read_frame("denoised", 0, name="std")
    assert np.isfinite(mean).all() and (std > 0).all()
    assert (tmp_path / "s2s.pvq" / "checkpoints").is_dir()     # a retried task resumes
    assert len(open_result(out).atoms) > 50
