"""S2SRED: self-supervised single-frame denoising (Self2Self) with a RED prior.

The frame is normalised robustly to [0, 1] (0.1 / 99.9 percentiles), reflect-padded to a
multiple of 16 px, and a Self2Self network is trained on Bernoulli-masked copies of it
(keep 0.7, random flips/rotations, dropout on). RED enters through the ADMM coupling of
design.md section 5: the network's output is pulled towards ``x - u`` where ``x`` is
updated every ``prior_every`` steps from the prior ``f``:
``x <- (lambda f(x) + mu (xbar + u)) / (lambda + mu)``, ``u <- u + xbar - x``.

The pitfall (x starting at y with the coupling on every pixel lets the network copy the
visible noisy pixels) is real: on the generator's dot (128 px, 50 e/A^2, ``fast``
network, 200 steps of batch 2) it gave 29.08 dB and an MC std at half the true error,
against 30.31 dB (x0 = f(y)) and 30.75 dB (x0 = y) with the coupling restricted to the
pixels hidden from the network (profile fields ``x_init`` and ``coupling``). Defaults:
dropped-pixel coupling and x0 = f(y). (At the ``test`` scale, 128 px and 300 steps of the
tiny network, all four combinations landed within 0.1 dB.)

The network works on the normalised frame minus its mean. The result is the mean of
``n_mc`` stochastic passes and their per-pixel standard deviation (scaled by a
self-supervised calibration, see ``_calibrate``), in the units of the input.
"""

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from pvq_dask.kernels.denoise._checkpoint import fingerprint
from pvq_dask.kernels.denoise._train import apply_prior, mc_predict, train
from pvq_dask.kernels.denoise.net import MIN_SIZE_PX, SIZE_MULTIPLE_PX
from pvq_dask.kernels.denoise.priors import estimate_noise_var, estimate_sigma
from pvq_dask.kernels.denoise.profiles import get_profile

__all__ = ["S2SResult", "denoise_s2sred", "normalise", "NORMALISE_PERCENTILES"]

#: Robust range used to map the input to [0, 1].
NORMALISE_PERCENTILES = (0.1, 99.9)


@dataclass
class S2SResult:
    """Denoised frame, its Monte-Carlo standard deviation, and run information.

    Attributes
    ----------
    mean : ndarray (H, W), float64
        Mean of the MC passes, in the units of the input.
    std : ndarray (H, W), float64
        Per-pixel standard deviation of the MC passes (same units): the uncertainty map.
    info : dict
        Profile, seed, device, steps run, early stop, timings, normalisation, history.
    """

    mean: np.ndarray
    std: np.ndarray
    info: dict = field(default_factory=dict)


def normalise(image):
    """``(scaled, lo, hi)`` with ``scaled = (image - lo) / (hi - lo)`` (robust range).

    Examples
    --------
    >>> s, lo, hi = normalise(np.arange(1000.0).reshape(25, 40))
    >>> round(float(s.min()), 3), round(float(s.max()), 3)
    (-0.001, 1.001)
    """
    lo, hi = np.percentile(image, NORMALISE_PERCENTILES)
    if not hi > lo:
        lo, hi = float(np.min(image)), float(np.max(image))
    return (image - lo) / (hi - lo), float(lo), float(hi)


def _check(image):
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    image = image.astype(np.float64)
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or infinite values")
    if min(image.shape) < MIN_SIZE_PX:
        raise ValueError(
            f"image {image.shape[0]}x{image.shape[1]} px is smaller than the network's "
            f"minimum of {MIN_SIZE_PX} px per side (4 poolings and its receptive field)")
    if np.ptp(image) == 0:
        raise ValueError("image is constant: there is nothing to denoise")
    return image


def _seed(rng, checkpoint_path):
    if rng is None:
        return 0 if checkpoint_path else int(np.random.default_rng().integers(2**62))
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**62))
    return int(rng)


def _device(device):
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")
    return dev


@contextmanager
def _torch_settings(n_threads, deterministic):
    """Set torch threads (workers run with OMP_NUM_THREADS=1) and, optionally,
    deterministic algorithms; restore both afterwards."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(n_threads))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _calibrate(std, blind_mse, noise_var, n_mc):
    """Scale the MC std so its RMS matches a self-supervised estimate of the true RMSE.

    On the pixels a pass did not see, ``E[(o - y)^2] = bias^2 + var_pass + noise_var``,
    and the MC mean's error is ``bias^2 + var_pass / n_mc``; hence
    ``mse = blind_mse - noise_var - var_pass (1 - 1/n_mc)`` with ``var_pass`` the mean
    MC variance and ``noise_var`` from :func:`estimate_noise_var`. The MC std alone misses
    the bias and measured ~0.6x the true error; if the estimate is not positive the raw
    std is returned (``std_calibrated`` False).
    """
    var_pass = float(np.mean(std**2))
    mse = blind_mse - noise_var - var_pass * (1.0 - 1.0 / n_mc)
    info = {"std_raw_rms_norm": var_pass**0.5, "blind_mse_norm": blind_mse,
            "noise_var_norm": noise_var, "mse_estimate_norm": mse}
    if not (mse > 0 and var_pass > 0):
        return std, {**info, "std_scale": 1.0, "std_calibrated": False}
    scale = float(np.sqrt(mse / var_pass))
    return std * scale, {**info, "std_scale": scale, "std_calibrated": True}


def _default_threads():
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(os.cpu_count() or 1, 1)


def denoise_s2sred(image, *, profile="fast", device="cpu", rng=None, checkpoint_path=None,
                   n_mc=None, n_steps=None, n_threads=None, deterministic=False, callback=None,
                   reference=None, **overrides):
    """Denoise one frame with S2SRED; returns the MC mean and standard deviation.

    Parameters
    ----------
    image : array_like (H, W)
        Frame in any units (counts, normalised, ...); finite, not constant, at least
        ``MIN_SIZE_PX`` (64) px per side. Non-multiples of 16 px are reflect-padded.
    profile : {"fast", "paper", "test"} or S2SProfile
        Settings (:mod:`pvq_dask.kernels.denoise.profiles`).
    device : str
        ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...). bf16/channels_last apply on CUDA only.
    rng : int or numpy.random.Generator, optional
        Seed. Given a seed the CPU result is bit-for-bit reproducible. None draws a fresh
        seed, except with ``checkpoint_path`` where it means seed 0 (so a rerun resumes).
    checkpoint_path : str or Path, optional
        Checkpoint file, written every ``checkpoint_every`` steps and at the end; if it
        exists, the run resumes from it (same result as an uninterrupted run on CPU).
    n_mc, n_steps : int, optional
        Override the profile's MC passes and step count.
    n_threads : int, optional
        Torch CPU threads during the call (default: the CPUs this process may use).
    deterministic : bool
        Call ``torch.use_deterministic_algorithms`` during the run (for CUDA). Not needed
        on CPU, whose kernels here are deterministic (tested), and 2.5x slower there.
    callback : callable, optional
        ``callback(step, info)`` after every step (may raise to interrupt the run).
    reference : array_like (H, W), optional
        The raw frame when ``image`` is a filtered version of it (ABSF, the paper's S2SRED
        input). The MC std is then calibrated against the raw frame: the filtered frame's
        residual noise is correlated and the filter's own error is invisible in it, so
        calibrating against ``image`` left the std at ~0.5x the true error (measured).
    **overrides
        Any other :class:`S2SProfile` field.

    Returns
    -------
    S2SResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> clean = 5 + 4 * np.cos(2 * np.pi * xx / 8) * np.cos(2 * np.pi * yy / 8)
    >>> res = denoise_s2sred(rng.poisson(clean).astype(float), profile="test", rng=0,
    ...                      n_steps=5, n_mc=2)
    >>> res.mean.shape, res.std.shape, res.info["steps_run"]
    ((64, 64), (64, 64), 5)
    """
    t0 = time.perf_counter()
    image = _check(image)
    prof_over = dict(overrides)
    if n_mc is not None:
        prof_over["n_mc"] = int(n_mc)
    if n_steps is not None:
        prof_over["n_steps"] = int(n_steps)
    prof = get_profile(profile, **prof_over)
    dev = _device(device)
    seed = _seed(rng, checkpoint_path)
    n_threads = _default_threads() if n_threads is None else int(n_threads)

    y, lo, hi = normalise(image)
    h, w = y.shape
    ph, pw = (-h) % SIZE_MULTIPLE_PX, (-w) % SIZE_MULTIPLE_PX
    yp = np.pad(y, ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else y
    ref = None
    if reference is not None:
        ref = (_check(reference) - lo) / (hi - lo)
        if ref.shape != y.shape:
            raise ValueError(f"reference shape {ref.shape} differs from image {y.shape}")
    fp = fingerprint(yp, prof.to_dict(), seed) if checkpoint_path else None
    noise_sigma = estimate_sigma(y)
    # centre the data: the freshly initialised network outputs ~0, i.e. the frame mean,
    # instead of a dark frame that the first hundreds of steps must lift (measured bias)
    offset = float(yp.mean())
    yp = yp - offset

    with _torch_settings(n_threads, deterministic=deterministic):
        yt = torch.as_tensor(yp, dtype=torch.float32, device=dev)[None, None]
        gens = {"host": torch.Generator().manual_seed(seed),
                "dev": torch.Generator(device=dev).manual_seed(seed + 1)}
        if prof.uses_red and prof.x_init == "prior":
            x0 = apply_prior(prof, yt, noise_sigma)
        else:
            x0 = yt.clone()
        t_train = time.perf_counter()
        net, red, extra = train(yt, prof, device=dev, gens=gens, x0=x0,
                                checkpoint_path=checkpoint_path, fp=fp, callback=callback)
        t_mc = time.perf_counter()
        ref_t = None
        if ref is not None:
            refp = np.pad(ref, ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else ref
            ref_t = torch.as_tensor(refp - offset, dtype=torch.float32, device=dev)[None, None]
        mean, std, blind_mse = mc_predict(net, yt, prof, gens, dev, prof.n_mc, ref=ref_t)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_end = time.perf_counter()
        mean = mean[0, 0, :h, :w].double().cpu().numpy() + offset
        std = std[0, 0, :h, :w].double().cpu().numpy()

    std, calib = _calibrate(std, blind_mse, estimate_noise_var(y if ref is None else ref),
                            prof.n_mc)
    info = {
        "profile": prof.name, "settings": prof.to_dict(), "seed": seed, "device": str(dev),
        "n_threads": n_threads, "steps_run": extra["step"],
        "stopped_early": extra["stopped_early"], "resumed_from": extra["resumed_from"],
        "loss_history": list(extra["history"]), "noise_sigma_norm": noise_sigma,
        "normalise_lo_hi": (lo, hi), "pad_px": (ph, pw), **calib,
        "std_calibrated_against": "image" if ref is None else "reference",
        "time_train_s": t_mc - t_train, "time_mc_s": t_end - t_mc,
        "time_total_s": time.perf_counter() - t0,
    }
    scale = hi - lo
    return S2SResult(mean=mean * scale + lo, std=std * scale, info=info)
