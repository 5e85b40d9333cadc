"""S2SRED on CUDA (bf16 autocast, channels_last, device generators); skips without CUDA."""

import numpy as np
import pytest
import torch

from pvq_dask.kernels.denoise import denoise_s2sred, get_profile
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

PSNR_GAIN_MIN_DB = 5.0  # as on CPU, test profile vs the raw frame at 50 e/A^2
CPU_GPU_PSNR_GAP_MAX_DB = 1.5  # bf16 and other kernels: same quality, not the same bits


def _frame():
    p = SynthParams.preset("coreshell", shape=(128, 128), dose_e_per_A2=50.0)
    f = synthesize_frame(p, rng=0)
    return f.image, f.clean


def _psnr(a, clean):
    return 10 * np.log10(np.ptp(clean) ** 2 / np.mean((a - clean) ** 2))


def test_cuda_test_profile_with_bf16_and_channels_last():
    image, clean = _frame()
    prof = get_profile("test", bf16=True, channels_last=True)
    gpu = denoise_s2sred(image, profile=prof, device="cuda", rng=0)
    cpu = denoise_s2sred(image, profile="test", device="cpu", rng=0)
    assert gpu.info["device"].startswith("cuda")
    assert np.all(np.isfinite(gpu.mean)) and np.all(gpu.std >= 0)
    assert _psnr(gpu.mean, clean) >= _psnr(image, clean) + PSNR_GAIN_MIN_DB
    assert abs(_psnr(gpu.mean, clean) - _psnr(cpu.mean, clean)) <= CPU_GPU_PSNR_GAP_MAX_DB


def test_cuda_checkpoint_resume_runs(tmp_path):
    image, _ = _frame()
    path = tmp_path / "gpu.ckpt"

    class Stop(Exception):
        pass

    def stop(step, info):
        if step == 15:
            raise Stop

    with pytest.raises(Stop):
        denoise_s2sred(image, profile="test", device="cuda", rng=1, n_steps=30, n_mc=2,
                       checkpoint_path=path, checkpoint_every=10, callback=stop)
    res = denoise_s2sred(image, profile="test", device="cuda", rng=1, n_steps=30, n_mc=2,
                         checkpoint_path=path, checkpoint_every=10)
    assert res.info["resumed_from"] == 10 and res.info["steps_run"] == 30


def test_cuda_fast_profile_short_run():
    image, clean = _frame()
    res = denoise_s2sred(image, profile="fast", device="cuda", rng=0, n_steps=200, n_mc=8)
    assert _psnr(res.mean, clean) >= _psnr(image, clean) + PSNR_GAIN_MIN_DB
