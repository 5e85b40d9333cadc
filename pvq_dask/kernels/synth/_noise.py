"""Detector noise: Poisson counts at a dose, read noise and scan-line offsets."""

import numpy as np

__all__ = ["dose_per_pixel", "add_noise"]


def dose_per_pixel(dose_e_per_A2, pixel_size_nm):
    """Incident electrons per pixel for a dose in e/A^2.

    Examples
    --------
    >>> round(dose_per_pixel(220.0, 0.0168), 2)
    6.21
    """
    return float(dose_e_per_A2) * (10.0 * pixel_size_nm) ** 2


def add_noise(expected_counts, params, rng):
    """Poisson(expected) + N(0, read_noise) + one N(0, frac * mean) offset per scan row.

    The row offsets put the classic scan-noise streak on the k_x = 0 axis of the FFT.
    """
    lam = np.clip(expected_counts, 0.0, None)
    img = rng.poisson(lam).astype(np.float64)
    if params.read_noise_counts > 0:
        img += params.read_noise_counts * rng.standard_normal(img.shape)
    if params.scanline_offset_frac > 0:
        rows = params.scanline_offset_frac * lam.mean() * rng.standard_normal(img.shape[0])
        img += rows[:, None]
    return img
