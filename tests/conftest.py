"""Shared fixtures (keep this small: add a fixture only when several test files need it)."""

from pathlib import Path

import numpy as np
import pytest

#: Real microscope files (see its README.md); tests that need them skip when it is absent.
REAL_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture
def real_data():
    """Path of the real-data folder, or skip the test when it is not there."""
    if not REAL_DATA_DIR.is_dir():
        pytest.skip(f"real data folder {REAL_DATA_DIR} absent")
    return REAL_DATA_DIR


@pytest.fixture
def rng():
    """A seeded generator: same numbers in every run."""
    return np.random.default_rng(20261124)


@pytest.fixture
def frame_tiff(tmp_path, rng):
    """``(path, data, pixel_size_nm)`` of a small float32 TIFF written with pvq metadata."""
    from pvq_dask.store import write_tiff

    data = rng.poisson(6.0, size=(96, 128)).astype(np.float32)
    path = tmp_path / "frame.tif"
    write_tiff(path, data, pixel_size_nm=0.0168)
    return path, data, 0.0168


@pytest.fixture
def recorded_s2s(monkeypatch):
    """Replace the S2S denoiser by one that records its input and returns it unchanged."""
    pytest.importorskip("torch")
    from pvq_dask.kernels.denoise import S2SResult

    calls = []

    def fake(image, **kw):
        image = np.asarray(image, float)
        calls.append((image.copy(), kw.get("reference")))
        return S2SResult(mean=image, std=np.ones_like(image), info={})

    monkeypatch.setattr("pvq_dask.kernels.denoise.denoise_s2sred", fake)
    return calls
