"""The ``pvq`` command line end to end: synth, ingest, info, demo, and bad input."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from pvq_dask.cli import main
from pvq_dask.store import ResultStore, file_sha256, open_result, read_image, write_tiff

PS_NM = 0.0168
#: Small frames keep these tests fast (the generator's dot shrinks to fit).
SIZE_PX = 192
DEMO_SIZE_PX = 320       # smallest frame whose default dot still has a core and a shell


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(path):
    """{relative path: bytes} of every file under ``path``."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# -- synth ----------------------------------------------------------------------------------

def test_synth_writes_images_truth_and_params(tmp_path, capsys):
    code, out, _ = _run(capsys, "synth", tmp_path / "s", "--size", SIZE_PX, "--seed", 3)
    assert code == 0 and "image.tif" in out
    for name in ("image.tif", "clean.tif", "atoms.csv", "octahedra.csv", "cells.csv",
                 "params.json"):
        assert (tmp_path / "s" / name).is_file(), name
    img = read_image(tmp_path / "s" / "image.tif")  # pixel size from our TIFF metadata
    assert img.data.shape == (1, SIZE_PX, SIZE_PX) and img.pixel_size_nm == pytest.approx(PS_NM)
    atoms = pd.read_csv(tmp_path / "s" / "atoms.csv")
    assert {"x_px", "y_px", "species"} <= set(atoms.columns) and len(atoms) > 50
    params = json.loads((tmp_path / "s" / "params.json").read_text())
    assert params["case"] == "coreshell" and params["seed"] == 3
    # Same seed, same frame; the clean image is the noise-free mean.
    _run(capsys, "synth", tmp_path / "t", "--size", SIZE_PX, "--seed", 3)
    np.testing.assert_array_equal(read_image(tmp_path / "t" / "image.tif").data, img.data)
    clean = read_image(tmp_path / "s" / "clean.tif").data
    assert not np.array_equal(clean, img.data)


def test_synth_series_stack(tmp_path, capsys):
    code, _, _ = _run(capsys, "synth", tmp_path, "--case", "series", "--size", SIZE_PX,
                      "--frames", 2, "--dose", 150)
    assert code == 0
    series = read_image(tmp_path / "series.tif")
    assert series.n_frames == 2
    assert sorted(pd.read_csv(tmp_path / "octahedra.csv")["frame"].unique()) == [0, 1]
    assert json.loads((tmp_path / "params.json").read_text())["params"]["dose_e_per_A2"] == 150


# -- ingest ---------------------------------------------------------------------------------

def test_ingest_frame_and_stack_round_trip(tmp_path, capsys, rng):
    single = rng.normal(50, 5, size=(40, 56)).astype(np.float32)
    stack = rng.normal(50, 5, size=(3, 40, 56)).astype(np.float32)
    write_tiff(tmp_path / "a.tif", single, pixel_size_nm=PS_NM)
    write_tiff(tmp_path / "b.tif", stack, pixel_size_nm=PS_NM)
    out = tmp_path / "run.pvq"
    code, stdout, err = _run(capsys, "ingest", tmp_path / "a.tif", tmp_path / "b.tif", "-o", out)
    assert code == 0 and "4 frame(s)" in stdout and err == ""
    res = open_result(out)
    np.testing.assert_array_equal(res.images.raw.values, np.concatenate([single[None], stack]))
    assert res.pixel_size_nm == pytest.approx(PS_NM)
    assert res.status["ingest"].all()
    prov = res.provenance
    assert [i["sha256"] for i in prov["inputs"]] == [file_sha256(tmp_path / n)
                                                     for n in ("a.tif", "b.tif")]
    assert prov["reader"] == "tifffile" and prov["frame_sources"][1]["frames"] == [1, 4]
    assert prov["pixel_size_nm"] == pytest.approx(PS_NM) and "numpy" in prov["packages"]
    assert _leftovers(tmp_path) == []


def test_ingest_npy_needs_pixel_size(tmp_path, capsys):
    np.save(tmp_path / "f.npy", np.ones((16, 16)))
    code, _, err = _run(capsys, "ingest", tmp_path / "f.npy", "-o", tmp_path / "r.pvq")
    assert code == 2 and "--pixel-size-nm" in err and not (tmp_path / "r.pvq").exists()
    code, _, _ = _run(capsys, "ingest", tmp_path / "f.npy", "-o", tmp_path / "r.pvq",
                      "--pixel-size-nm", "0.02")
    assert code == 0 and open_result(tmp_path / "r.pvq").pixel_size_nm == 0.02


@pytest.mark.parametrize("name, reason", [("missing.tif", "no such file"),
                                          ("corrupt.tif", "not a readable TIFF"),
                                          ("line.npy", "1-D array"),
                                          ("nocal.npy", "no pixel-size calibration")])
def test_ingest_bad_input_one_line_no_store(tmp_path, capsys, name, reason):
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00garbage" * 50)
    np.save(tmp_path / "line.npy", np.arange(10.0))
    np.save(tmp_path / "nocal.npy", np.ones((16, 16)))
    out = tmp_path / "new.pvq"
    code, stdout, err = _run(capsys, "ingest", tmp_path / name, "-o", out)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith(f"pvq ingest: error: {tmp_path / name}: ")
    assert reason in err
    assert not out.exists() and _leftovers(tmp_path) == []
    # An existing store survives a failed --overwrite untouched.
    write_tiff(tmp_path / "good.tif", np.ones((16, 16)), pixel_size_nm=PS_NM)
    assert _run(capsys, "ingest", tmp_path / "good.tif", "-o", out)[0] == 0
    before = _snapshot(out)
    code, _, err = _run(capsys, "ingest", tmp_path / "good.tif", tmp_path / name, "-o", out,
                        "--overwrite")
    assert code == 2 and reason in err
    assert _snapshot(out) == before and _leftovers(tmp_path) == []


def test_ingest_existing_store_and_overwrite(tmp_path, capsys):
    write_tiff(tmp_path / "a.tif", np.ones((16, 16)), pixel_size_nm=PS_NM)
    write_tiff(tmp_path / "b.tif", np.full((2, 16, 16), 2.0), pixel_size_nm=PS_NM)
    out = tmp_path / "r.pvq"
    assert _run(capsys, "ingest", tmp_path / "a.tif", "-o", out)[0] == 0
    before = _snapshot(out)
    code, _, err = _run(capsys, "ingest", tmp_path / "b.tif", "-o", out)
    assert code == 2 and "already exists" in err and _snapshot(out) == before
    assert _run(capsys, "ingest", tmp_path / "b.tif", "-o", out, "--overwrite")[0] == 0
    assert ResultStore.open(out).n_frames == 2 and _leftovers(tmp_path) == []


def test_ingest_rejects_mixed_shapes(tmp_path, capsys):
    write_tiff(tmp_path / "a.tif", np.ones((16, 16)), pixel_size_nm=PS_NM)
    write_tiff(tmp_path / "b.tif", np.ones((16, 20)), pixel_size_nm=PS_NM)
    code, _, err = _run(capsys, "ingest", tmp_path / "a.tif", tmp_path / "b.tif", "-o",
                        tmp_path / "r.pvq")
    assert code == 2 and "share one shape" in err and not (tmp_path / "r.pvq").exists()


@pytest.mark.realdata
def test_ingest_velox_signal(real_data, tmp_path, capsys):
    path = real_data / "openncem" / "STEM HAADF-DF4-DF2-BF Diffraction Micro.emd"
    code, _, _ = _run(capsys, "ingest", path, "--signal", "BF", "-o", tmp_path / "r.pvq")
    assert code == 0
    prov = open_result(tmp_path / "r.pvq").provenance
    assert prov["signal"] == "BF" and prov["vendor_metadata"][0]["voltage_kV"] == 300.0
    code, _, err = _run(capsys, "ingest", path, "--signal", "iDPC", "-o", tmp_path / "s.pvq")
    assert code == 2 and "available: 'HAADF', 'DF2', 'BF', 'DF4'" in err


# -- info, demo, help -----------------------------------------------------------------------

def test_info_reports_stages_tables_maps(tmp_path, capsys):
    import xarray as xr

    s = ResultStore.create(tmp_path / "r.pvq", n_frames=3, shape=(8, 8), pixel_size_nm=PS_NM)
    for t in range(3):
        s.write_frame("raw", t, np.ones((8, 8)))
        s.set_done("ingest", t)
    s.set_done("atoms", 1)
    s.write_table("bonds", 1, pd.DataFrame({"length_nm": [0.3] * 4}))
    s.write_maps(xr.Dataset({"theta3_deg": (("t", "v", "u"), np.zeros((3, 2, 2)))}))
    code, out, _ = _run(capsys, "info", tmp_path / "r.pvq")
    assert code == 0
    assert "3 of 8 x 8 px" in out and "ingest 3/3" in out and "atoms 1/3" in out
    assert "bonds 4 rows in 1 frame(s)" in out and "theta3_deg" in out


def test_demo_then_info(tmp_path, capsys):
    code, out, _ = _run(capsys, "demo", "-o", tmp_path / "demo", "--size", DEMO_SIZE_PX)
    assert code == 0 and "ingest 1/1" in out
    result = tmp_path / "demo" / "demo.pvq"
    assert (tmp_path / "demo" / "synth" / "atoms.csv").is_file()
    code, info, _ = _run(capsys, "info", result)
    assert code == 0 and f"1 of {DEMO_SIZE_PX} x {DEMO_SIZE_PX} px" in info and "image.tif" in info
    assert "atoms 1/1" in info and "network 1/1" in info and "maps 1/1" in info
    assert "octahedra" in out and (tmp_path / "demo" / "report.html").is_file()
    assert _run(capsys, "demo", "-o", tmp_path / "demo", "--size", DEMO_SIZE_PX)[0] == 0  # re-run


# -- analyze --------------------------------------------------------------------------------

def test_analyze_s2s_input_option_reaches_the_denoiser(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from pvq_dask.kernels.config import AnalysisConfig
    from pvq_dask.kernels.denoise import S2SResult
    from pvq_dask.kernels.synth import SynthParams, synthesize_frame

    calls = []

    def fake(image, **kw):
        calls.append(np.asarray(image, float).copy())
        return S2SResult(mean=calls[-1], std=np.ones_like(calls[-1]), info={})

    monkeypatch.setattr("pvq_dask.kernels.denoise.denoise_s2sred", fake)
    image = synthesize_frame(SynthParams.preset("coreshell", shape=(SIZE_PX, SIZE_PX)),
                             rng=0).image.astype(np.float32)
    tif = tmp_path / "f.tif"
    write_tiff(tif, image, pixel_size_nm=PS_NM)
    assert AnalysisConfig().s2s_input in ("raw", "absf")
    for source in ("raw", "absf"):
        out = tmp_path / f"{source}.pvq"
        code, _, _ = _run(capsys, "analyze", tif, "-o", out, "--denoise", "s2sred",
                          "--s2s-input", source, "--stages", "atoms")
        assert code == 0
        store = ResultStore.open(out)
        assert store.attrs["analysis"]["config"]["s2s_input"] == source
        expect = store.read_frame(source, 0)
        np.testing.assert_allclose(calls[-1], expect, atol=1e-5 * float(np.ptp(image)))
    assert np.abs(calls[0] - calls[1]).max() > 1e-2 * float(np.ptp(image))
    code, _, err = _run(capsys, "analyze", tif, "-o", tmp_path / "x.pvq", "--s2s-input", "y")
    assert code != 0 and "s2s-input" in err


@pytest.mark.parametrize("command", ["synth", "ingest", "info", "demo"])
def test_help_texts(capsys, command):
    code, out, _ = _run(capsys, command, "--help")
    assert code == 0 and "usage: pvq " + command in out and "example:" in out


def test_usage_error_and_debug(tmp_path, capsys):
    code, _, err = _run(capsys, "ingest")
    assert code == 2 and "-o/--output" in err
    with pytest.raises(ValueError, match="no such file"):
        main(["--debug", "ingest", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "x")])


def test_installed_script(tmp_path):
    exe = shutil.which("pvq")
    if exe is None:
        pytest.skip("the 'pvq' console script is not installed (pip install -e .)")
    bad = subprocess.run([exe, "ingest", str(tmp_path / "missing.tif"), "-o",
                          str(tmp_path / "r.pvq")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"pvq ingest: error: {tmp_path / 'missing.tif'}: no such file"]
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "synth" in ok.stdout and "ingest" in ok.stdout
