"""Seeded synthetic ground truth: [001] Pbnm CsPbX3 quantum-dot frames with exact truth.

See docs/synthetic.md for the physics and the choices behind it.
"""

from pvq_dask.kernels.synth._generate import SynthFrame, synthesize_frame, synthesize_series
from pvq_dask.kernels.synth._noise import dose_per_pixel
from pvq_dask.kernels.synth._params import CASES, SynthParams

__all__ = ["SynthParams", "SynthFrame", "CASES", "synthesize_frame", "synthesize_series",
           "dose_per_pixel"]
