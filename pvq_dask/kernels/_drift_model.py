"""The drift model of a frame relative to the reference frame, fitted to matched sites.

A site at ``p`` in the reference frame is seen in frame ``t`` at

    p_t = c + s + S (p - c) + v (y_t - (H - 1) / 2) / H,   S = (1 + strain) R(rotation)

``c`` is the centre of the matched reference sites (the particle), ``s`` the drift of that
centre (as seen at the middle scan row), ``v`` the linear intra-frame (scan) drift over one
frame height, and ``S`` a similarity: the particle itself may rotate and expand between
frames (a changing tilt changes the Pb-Pb spacing). An isotropic expansion shows in
``x ~ x`` and ``y ~ y``, a slow-scan drift only in ``x ~ y`` and ``y ~ y``: the model
separates them by assuming the particle's own change is isotropic.
"""

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DriftFit", "fit_drift", "correct_positions"]


@dataclass
class DriftFit:
    """A fitted drift model (see the module docstring); angles in degrees, lengths in px."""

    shift_px: np.ndarray
    scan_drift_px: np.ndarray
    strain: float = 0.0
    rotation_deg: float = 0.0
    centre_px: np.ndarray = None
    residual_px: float = float("nan")
    n_used: int = 0

    def as_row(self):
        """Flat dict with the drift-table column names."""
        c = np.zeros(2) if self.centre_px is None else self.centre_px
        return {"drift_x_px": float(self.shift_px[0]), "drift_y_px": float(self.shift_px[1]),
                "scan_drift_x_px": float(self.scan_drift_px[0]),
                "scan_drift_y_px": float(self.scan_drift_px[1]),
                "strain": float(self.strain), "rotation_deg": float(self.rotation_deg),
                "centre_x_px": float(c[0]), "centre_y_px": float(c[1])}

    def to_dict(self):
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}


def _design(a, b, c, height_px, similarity):
    """Rows [x-equations; y-equations] for unknowns (sx, sy, vx, vy[, alpha, beta])."""
    n = len(a)
    row = (b[:, 1] - (height_px - 1) / 2.0) / height_px
    zero, one = np.zeros(n), np.ones(n)
    gx = [one, zero, row, zero]
    gy = [zero, one, zero, row]
    if similarity:
        d = a - c
        gx += [d[:, 0], -d[:, 1]]
        gy += [d[:, 1], d[:, 0]]
    return np.vstack([np.column_stack(gx), np.column_stack(gy)])


def fit_drift(xy_reference, xy, *, height_px, similarity=True, clip=4.0):
    """Drift, intra-frame drift and (optionally) particle rotation/strain from matched sites.

    Least squares of the module's model, refitted without sites off by more than ``clip``
    robust standard deviations.

    Parameters
    ----------
    xy_reference, xy : ndarray (N, 2)
        The same sites (e.g. tracked Pb columns) in the reference frame and in the frame.
    height_px : int
        Frame height H.
    similarity : bool
        Fit the particle's rotation and isotropic strain too (needs N >= 4); else they are
        0 (N >= 3).
    clip : float

    Returns
    -------
    DriftFit

    Examples
    --------
    >>> ref = np.c_[np.tile(np.arange(0, 200, 20.0), 10), np.repeat(np.arange(0, 200, 20.0), 10)]
    >>> y = ref[:, 1] + 1.0
    >>> moved = ref + [2.0, 1.0] + np.c_[0.6 * (y - 99.5) / 200, 0.0 * y]
    >>> fit = fit_drift(ref, moved, height_px=200)
    >>> (np.round(fit.scan_drift_px, 6) + 0.0).tolist(), round(abs(fit.rotation_deg), 9)
    ([0.6, 0.0], 0.0)
    """
    a = np.asarray(xy_reference, dtype=float).reshape(-1, 2)
    b = np.asarray(xy, dtype=float).reshape(-1, 2)
    if a.shape != b.shape:
        raise ValueError(f"xy_reference {a.shape} and xy {b.shape} must match row for row")
    need = 4 if similarity else 3
    if len(a) < need:
        raise ValueError(f"need at least {need} matched positions to fit drift, got {len(a)}")
    if height_px <= 0:
        raise ValueError(f"height_px must be > 0, got {height_px}")
    if np.ptp(b[:, 1]) < 1.0:
        raise ValueError("matched positions span less than one row: scan drift undefined")
    c = a.mean(axis=0)
    g = _design(a, b, c, height_px, similarity)
    delta = np.r_[b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]]
    n = len(a)
    keep = np.ones(n, dtype=bool)
    for _ in range(3):
        k2 = np.r_[keep, keep]
        coef, *_ = np.linalg.lstsq(g[k2], delta[k2], rcond=None)
        r = delta - g @ coef
        res = np.hypot(r[:n], r[n:])
        scale = 1.4826 * np.median(res[keep]) + 1e-9
        new = res <= clip * scale
        if new.sum() < need or (new == keep).all():
            break
        keep = new
    alpha, beta = (coef[4], coef[5]) if similarity else (0.0, 0.0)
    return DriftFit(shift_px=coef[0:2].copy(), scan_drift_px=coef[2:4].copy(),
                    strain=float(np.hypot(1 + alpha, beta) - 1),
                    rotation_deg=float(np.degrees(np.arctan2(beta, 1 + alpha))), centre_px=c,
                    residual_px=float(np.sqrt(np.mean(res[keep] ** 2))),
                    n_used=int(keep.sum()))


def correct_positions(xy, *, shift_px, scan_drift_px=(0.0, 0.0), height_px, strain=0.0,
                      rotation_deg=0.0, centre_px=(0.0, 0.0)):
    """Map positions measured in a frame into the reference frame (inverse of the model).

    Examples
    --------
    >>> correct_positions([[12.0, 50.0]], shift_px=(2.0, -1.0), height_px=101).tolist()
    [[10.0, 51.0]]
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    c = np.asarray(centre_px, dtype=float)
    row = (xy[:, 1:2] - (height_px - 1) / 2.0) / height_px
    moved = xy - np.asarray(shift_px, dtype=float) - row * np.asarray(scan_drift_px, float) - c
    th = np.radians(rotation_deg)
    s = 1.0 + strain
    inv = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]]) / s
    return c + moved @ inv.T
