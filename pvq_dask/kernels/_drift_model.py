"""The drift model of a frame relative to the reference frame, fitted to matched sites.

A site at ``p`` in the reference frame is seen in frame ``t`` at

    p_t = c + s + S (p - c) + v (y_t - c_y - s_y) / H,   S = (1 + strain) R(rotation)

``c`` is the particle's centre in the reference frame (the centroid of the matched sites,
or of the registered signal), ``s`` the drift of that centre, ``v`` the linear intra-frame
(scan) drift over one frame height ``H`` (rows counted from the centre's row), and ``S`` a
similarity: the particle itself may rotate and expand between frames (a changing tilt
changes the Pb-Pb spacing). An isotropic expansion shows in ``x ~ x`` and ``y ~ y``, a
slow-scan drift only in ``x ~ y`` and ``y ~ y``: the model separates them by assuming the
particle's own change is isotropic.
"""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["DriftFit", "fit_drift", "correct_positions"]


@dataclass
class DriftFit:
    """A drift model (see the module docstring); angles in degrees, lengths in px.

    Attributes
    ----------
    shift_px : ndarray (2,)
        Drift of the particle centre.
    scan_drift_px : ndarray (2,)
        Extra displacement over one frame height of rows.
    centre_px : ndarray (2,)
        The particle centre in the reference frame.
    strain, rotation_deg : float
        The particle's own isotropic strain and rotation.
    residual_px : float
        RMS residual of the sites used (NaN for image registration).
    n_used : int
        Sites used (0 for image registration).
    """

    shift_px: np.ndarray
    scan_drift_px: np.ndarray = field(default_factory=lambda: np.zeros(2))
    centre_px: np.ndarray = field(default_factory=lambda: np.zeros(2))
    strain: float = 0.0
    rotation_deg: float = 0.0
    residual_px: float = float("nan")
    n_used: int = 0

    def to_frame(self, xy_reference, *, height_px):
        """Where reference-frame positions appear in the frame (the model, forward).

        Examples
        --------
        >>> fit = DriftFit(shift_px=np.array([1.0, 2.0]), scan_drift_px=np.array([0.5, 0.0]))
        >>> fit.to_frame([[0.0, 98.0]], height_px=100).tolist()
        [[1.49, 100.0]]
        """
        p = np.asarray(xy_reference, dtype=float).reshape(-1, 2)
        c, s = np.asarray(self.centre_px, float), np.asarray(self.shift_px, float)
        th = np.radians(self.rotation_deg)
        rot = (1 + self.strain) * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        base = c + s + (p - c) @ rot.T
        v = np.asarray(self.scan_drift_px, float)
        # y_t appears on both sides (the scan term follows the frame's own rows): solve it
        y_t = (base[:, 1] - v[1] * (c[1] + s[1]) / height_px) / (1 - v[1] / height_px)
        return base + np.outer((y_t - c[1] - s[1]) / height_px, v)

    def as_row(self):
        """Flat dict with the drift-table column names."""
        return {"drift_x_px": float(self.shift_px[0]), "drift_y_px": float(self.shift_px[1]),
                "scan_drift_x_px": float(self.scan_drift_px[0]),
                "scan_drift_y_px": float(self.scan_drift_px[1]),
                "strain": float(self.strain), "rotation_deg": float(self.rotation_deg),
                "centre_x_px": float(self.centre_px[0]), "centre_y_px": float(self.centre_px[1])}


def _solve(a, b, height_px, similarity):
    """One least-squares fit on the given sites: coefficients, centre, residual norms."""
    c = a.mean(axis=0)
    n = len(a)
    row = (b[:, 1] - b[:, 1].mean()) / height_px
    zero, one = np.zeros(n), np.ones(n)
    gx = [one, zero, row, zero]
    gy = [zero, one, zero, row]
    if similarity:
        d = a - c
        gx += [d[:, 0], -d[:, 1]]
        gy += [d[:, 1], d[:, 0]]
    g = np.vstack([np.column_stack(gx), np.column_stack(gy)])
    delta = np.r_[b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]]
    coef, *_ = np.linalg.lstsq(g, delta, rcond=None)
    return coef, c


def _residuals(coef, c, a, b, height_px, similarity):
    fit = DriftFit(shift_px=coef[0:2], scan_drift_px=coef[2:4], centre_px=c,
                   **_similarity(coef, similarity))
    return np.linalg.norm(correct_positions(b, fit, height_px=height_px) - a, axis=1)


def _similarity(coef, similarity):
    alpha, beta = (coef[4], coef[5]) if similarity else (0.0, 0.0)
    return {"strain": float(np.hypot(1 + alpha, beta) - 1),
            "rotation_deg": float(np.degrees(np.arctan2(beta, 1 + alpha)))}


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
    >>> moved = ref + [2.0, 1.0] + np.c_[0.6 * (ref[:, 1] - 90.0) / 200, 0.0 * ref[:, 1]]
    >>> fit = fit_drift(ref, moved, height_px=200)
    >>> np.round(fit.shift_px, 6).tolist(), (np.round(fit.scan_drift_px, 6) + 0.0).tolist()
    ([2.0, 1.0], [0.6, 0.0])
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
    keep = np.ones(len(a), dtype=bool)
    for _ in range(3):
        coef, c = _solve(a[keep], b[keep], height_px, similarity)
        res = _residuals(coef, c, a, b, height_px, similarity)
        scale = 1.4826 * np.median(res[keep]) + 1e-9
        new = res <= clip * scale
        if new.sum() < need or (new == keep).all():
            break
        keep = new
    return DriftFit(shift_px=coef[0:2].copy(), scan_drift_px=coef[2:4].copy(), centre_px=c,
                    residual_px=float(np.sqrt(np.mean(res[keep] ** 2))),
                    n_used=int(keep.sum()), **_similarity(coef, similarity))


def _get(drift, name, default=0.0):
    v = getattr(drift, name, None) if not hasattr(drift, "get") else drift.get(name)
    v = default if v is None else v
    return np.nan_to_num(np.asarray(v, dtype=float), nan=0.0)


def correct_positions(xy, drift, *, height_px):
    """Map positions measured in a frame into the reference frame (inverse of the model).

    Parameters
    ----------
    xy : ndarray (N, 2)
    drift : DriftFit or mapping
        A :class:`DriftFit`, or a mapping with the drift-table columns (``drift_x_px``,
        ``drift_y_px`` and optionally ``scan_drift_*``, ``strain``, ``rotation_deg``,
        ``centre_*``; missing ones count as 0).
    height_px : int

    Examples
    --------
    >>> correct_positions([[12.0, 50.0]], {"drift_x_px": 2.0, "drift_y_px": -1.0},
    ...                   height_px=101).tolist()
    [[10.0, 51.0]]
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if isinstance(drift, DriftFit):
        drift = drift.as_row()
    s = np.array([_get(drift, "drift_x_px"), _get(drift, "drift_y_px")])
    v = np.array([_get(drift, "scan_drift_x_px"), _get(drift, "scan_drift_y_px")])
    c = np.array([_get(drift, "centre_x_px"), _get(drift, "centre_y_px")])
    row = (xy[:, 1:2] - c[1] - s[1]) / height_px
    moved = xy - s - row * v - c
    th = np.radians(_get(drift, "rotation_deg"))
    inv = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
    return c + moved @ inv.T / (1.0 + _get(drift, "strain"))
