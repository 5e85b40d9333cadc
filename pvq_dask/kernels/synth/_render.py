"""Noise-free image formation: Gaussian columns on a carbon/ligand background."""

import numpy as np
from scipy import ndimage as ndi

__all__ = ["render_columns", "background", "column_weights"]

# Per-atom contrast ~ Z^n: iDPC (projected potential) ~ Z^0.75, HAADF ~ Z^1.7.
_Z = {"Pb": 82, "I": 53, "Br": 35, "Cs": 55}
_EXPONENT = {"idpc": 0.75, "haadf": 1.7}


def column_weights(contrast, *, br_fraction):
    """Relative column strengths (Pb+apical X column of pure CsPbI3 = 1).

    Examples
    --------
    >>> w = column_weights("idpc", br_fraction=0.0)
    >>> round(w["X"], 3), round(w["Cs"], 3)
    (0.419, 0.431)
    """
    n = _EXPONENT[contrast]
    z = {k: v**n for k, v in _Z.items()}
    halide = (1 - br_fraction) * z["I"] + br_fraction * z["Br"]
    ref = z["Pb"] + z["I"]
    return {"Pb": (z["Pb"] + halide) / ref, "X": halide / ref, "Cs": z["Cs"] / ref}


def render_columns(shape, xy, amplitude, sigma):
    """Sum of isotropic Gaussians sampled at pixel centres (x = column, y = row).

    Examples
    --------
    >>> img = render_columns((9, 9), np.array([[4.0, 4.0]]), np.array([2.0]), np.array([1.0]))
    >>> float(img[4, 4]), img.shape
    (2.0, (9, 9))
    """
    h, w = shape
    out = np.zeros(h * w)
    xy = np.asarray(xy, dtype=float)
    if len(xy) == 0:
        return out.reshape(shape)
    r = int(np.ceil(4.5 * float(np.max(sigma))))
    d = np.arange(-r, r + 1)
    cx = np.rint(xy[:, 0]).astype(np.int64)
    cy = np.rint(xy[:, 1]).astype(np.int64)
    for chunk in np.array_split(np.arange(len(xy)), max(1, len(xy) // 4000)):
        px = cx[chunk, None, None] + d[None, None, :]
        py = cy[chunk, None, None] + d[None, :, None]
        dx = px - xy[chunk, 0, None, None]
        dy = py - xy[chunk, 1, None, None]
        s2 = 2.0 * np.asarray(sigma)[chunk, None, None] ** 2
        val = amplitude[chunk, None, None] * np.exp(-(dx**2 + dy**2) / s2)
        px, py = np.broadcast_arrays(px, py)
        ok = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        out += np.bincount((py * w + px)[ok], weights=val[ok], minlength=h * w)
    return out.reshape(shape)


def background(params, sdf_image_nm, rng):
    """Baseline + amorphous-carbon texture + a ligand shell just outside the particle."""
    ps = params.pixel_size_nm
    noise = rng.standard_normal(sdf_image_nm.shape)
    tex = ndi.gaussian_filter(noise, params.carbon_correlation_nm / ps, mode="wrap")
    tex *= params.carbon_amplitude / (tex.std() or 1.0)
    d = sdf_image_nm
    ligand = params.ligand_amplitude * np.exp(-0.5 * ((d - params.ligand_width_nm / 2)
                                                      / (params.ligand_width_nm / 2)) ** 2)
    # Counts cannot be negative: the thinnest carbon still scatters a little.
    return np.clip(params.baseline + tex, 0.05 * params.baseline, None) + np.where(
        d > -0.2, ligand, 0.0)
