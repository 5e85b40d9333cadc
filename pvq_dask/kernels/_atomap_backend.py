"""Reference fitter: Atomap's own 2D Gaussian refinement on our starting positions.

``fit_columns(..., backend="atomap")`` runs this so the paper's numbers (it used Atomap) can
be reproduced and compared with our batched fitter in one run. Atomap is optional (the
``interop`` extra: ``pip install "pvq_dask[interop]"``); it fits one column at a time in
Python (tens of columns per second) and reports no uncertainties, so ``cov``/``*_err_px`` are
NaN and ``fit_ok`` only says the fit returned a finite position near its start.
"""

import contextlib
import io
import warnings

import numpy as np

__all__ = ["fit_columns_atomap", "atomap_available"]

_MAX_SHIFT_FRAC = 0.5   # a fit that moved more than this x the mask radius failed


def atomap_available():
    """True when Atomap can be imported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import atomap.api  # noqa: F401
    except ImportError:
        return False
    return True


def fit_columns_atomap(image, xy0, *, sigma_px=None, percent_to_nn=0.4, mask_radius=None,
                       rotation_enabled=True):
    """Refine column positions with Atomap's ``refine_atom_positions_using_2d_gaussian``.

    Parameters
    ----------
    image : ndarray (H, W)
    xy0 : ndarray (n, 2)
        Starting positions (x, y), px.
    sigma_px : float, optional
        Starting width of every Gaussian (Atomap's default start otherwise).
    percent_to_nn, mask_radius : float, optional
        Atomap's fitting-mask size (fraction of the nearest-neighbour distance, or px).
    rotation_enabled : bool
        Let Atomap rotate its elliptical Gaussians.

    Returns
    -------
    dict of ndarray
        Same keys as :func:`pvq_dask.kernels.fit.fit_columns`.
    """
    from pvq_dask.kernels._fit import STATUS
    from pvq_dask.kernels.fit import FIT_KEYS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import atomap.api as am
    except ImportError as err:
        raise ImportError("backend='atomap' needs Atomap: pip install 'pvq_dask[interop]' "
                          "(or pip install atomap)") from err
    image = np.asarray(image, dtype=np.float64)
    xy0 = np.asarray(xy0, dtype=np.float64).reshape(-1, 2)
    n = len(xy0)
    out = {k: np.full(n, np.nan) for k in FIT_KEYS}
    out["cov"] = np.full((n, 2, 2), np.nan)
    out["fit_ok"] = np.zeros(n, dtype=bool)
    out["n_iter"] = np.zeros(n, dtype=np.int64)
    out["status"] = np.full(n, STATUS["skipped"], dtype=np.int64)
    if n == 0:
        return out
    if not np.isfinite(image).all():
        raise ValueError("backend='atomap' needs a frame without NaN pixels")
    if n < 2 and mask_radius is None:
        mask_radius = 3.0 * (sigma_px or 2.0)
    if mask_radius is not None:
        percent_to_nn = None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        # Atomap refuses negative pixels (read noise): it offsets them, as it recommends.
        sub = am.Sublattice(xy0.copy(), image, fix_negative_values=bool(image.min() < 0))
        if sigma_px is not None:
            for atom in sub.atom_list:
                atom.sigma_x = atom.sigma_y = float(sigma_px)
        if mask_radius is None:
            sub.find_nearest_neighbors()
        sub.refine_atom_positions_using_2d_gaussian(
            percent_to_nn=percent_to_nn, mask_radius=mask_radius,
            rotation_enabled=rotation_enabled, show_progressbar=False)
    atoms = sub.atom_list
    out["x_px"] = np.array([a.pixel_x for a in atoms], dtype=float)
    out["y_px"] = np.array([a.pixel_y for a in atoms], dtype=float)
    out["sigma_x_px"] = np.array([a.sigma_x for a in atoms], dtype=float)
    out["sigma_y_px"] = np.array([a.sigma_y for a in atoms], dtype=float)
    out["amplitude"] = np.array([a.amplitude_gaussian for a in atoms], dtype=float)
    if mask_radius is None:
        from scipy.spatial import cKDTree

        nn = cKDTree(xy0).query(xy0, k=2)[0][:, 1]
        radius = percent_to_nn * nn
    else:
        radius = np.full(n, float(mask_radius))
    moved = np.hypot(out["x_px"] - xy0[:, 0], out["y_px"] - xy0[:, 1])
    out["fit_ok"] = np.isfinite(moved) & (moved <= _MAX_SHIFT_FRAC * radius + 1.0)
    out["status"][:] = STATUS["ok"]
    return out
