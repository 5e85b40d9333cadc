"""Particle outline: a rounded square with low-order roughness and an optional protrusion."""

import numpy as np

__all__ = ["make_outline"]


def make_outline(params, rng):
    """Return ``sdf(points_nm) -> signed distance (nm, < 0 inside)`` for one particle.

    Points are particle-centred, in image orientation (x right, y down). The base shape is a
    square of side ``dot_size_nm`` aligned with the lattice, corners rounded with radius
    ``corner_radius_frac * side / 2``; its boundary is perturbed by a few random harmonics of
    amplitude ``outline_roughness_nm`` and a Gaussian bump of height ``protrusion_nm``.

    Examples
    --------
    >>> from pvq_dask.kernels.synth import SynthParams
    >>> p = SynthParams(outline_roughness_nm=0.0, protrusion_nm=0.0, lattice_rotation_deg=0)
    >>> sdf = make_outline(p, np.random.default_rng(0))
    >>> np.round(sdf(np.array([[0.0, 0.0], [5.5, 0.0], [7.0, 0.0]])), 3).tolist()
    [-5.5, 0.0, 1.5]
    """
    half = 0.5 * params.dot_size_nm
    rc = params.corner_radius_frac * half
    rot = np.deg2rad(params.lattice_rotation_deg)
    n_harm = 5
    amps = params.outline_roughness_nm * rng.standard_normal(n_harm) / np.sqrt(n_harm)
    phases = rng.uniform(0, 2 * np.pi, n_harm)
    orders = np.arange(2, 2 + n_harm)
    p_ang = np.deg2rad(params.protrusion_angle_deg)
    p_sig = params.protrusion_width_nm / max(half, 1e-9) / 2.0

    def sdf(points):
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        c, s = np.cos(-rot), np.sin(-rot)
        lx = c * pts[:, 0] - s * pts[:, 1]
        ly = s * pts[:, 0] + c * pts[:, 1]
        qx = np.abs(lx) - (half - rc)
        qy = np.abs(ly) - (half - rc)
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        box = outside + np.minimum(np.maximum(qx, qy), 0) - rc
        ang = np.arctan2(pts[:, 1], pts[:, 0])
        rough = (amps[None, :] * np.cos(orders[None, :] * ang[:, None] + phases)).sum(axis=1)
        dang = np.angle(np.exp(1j * (ang - p_ang)))
        bump = params.protrusion_nm * np.exp(-0.5 * (dang / p_sig) ** 2)
        return box - rough - bump

    return sdf
