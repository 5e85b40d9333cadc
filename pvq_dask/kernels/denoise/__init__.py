"""Self-supervised denoising of single frames: S2SRED (Self2Self + RED) in torch.

Importing this package needs torch; the rest of :mod:`pvq_dask.kernels` does not.
"""

from pvq_dask.kernels.denoise.net import MIN_SIZE_PX, PartialConv2d, S2SNet
from pvq_dask.kernels.denoise.priors import estimate_sigma, get_prior
from pvq_dask.kernels.denoise.profiles import PROFILES, S2SProfile, get_profile
from pvq_dask.kernels.denoise.s2sred import S2SResult, denoise_s2sred, normalise

__all__ = [
    "denoise_s2sred", "S2SResult", "S2SProfile", "PROFILES", "get_profile", "get_prior",
    "estimate_sigma", "S2SNet", "PartialConv2d", "MIN_SIZE_PX", "normalise",
]
