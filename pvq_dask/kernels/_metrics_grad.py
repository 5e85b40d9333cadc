"""Small helpers for first-order uncertainty propagation of geometric metrics."""

import numpy as np

__all__ = ["angle_grad", "quadratic_form"]


def angle_grad(v):
    """Gradient of ``atan2(v_y, v_x)`` with respect to ``v`` (last axis = x, y)."""
    v = np.asarray(v, dtype=np.float64)
    n2 = (v**2).sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([-v[..., 1], v[..., 0]], axis=-1) / n2


def quadratic_form(grad, atoms, cov):
    """Variance ``sum_a g_a^T C_a g_a`` with slot gradients merged per atom.

    Parameters
    ----------
    grad : ndarray, shape (M, S, 2)
        Gradient of one scalar metric per row with respect to each slot's (x, y).
    atoms : ndarray of int, shape (M, S)
        Atom index of each slot (-1 = no atom; its gradient is ignored). The same atom may
        fill several slots; their gradients are summed before the quadratic form.
    cov : ndarray, shape (N, 2, 2)
        Position covariance per atom.

    Examples
    --------
    >>> g = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    >>> c = np.array([np.eye(2)])
    >>> float(quadratic_form(g, np.array([[0, 0]]), c)[0])  # same atom twice: (1+1)^2
    4.0
    """
    g = np.nan_to_num(np.array(grad, dtype=np.float64))
    atoms = np.asarray(atoms)
    s = atoms.shape[1]
    g[atoms < 0] = 0.0
    for a in range(s):
        for b in range(a + 1, s):
            same = (atoms[:, a] == atoms[:, b]) & (atoms[:, b] >= 0)
            if same.any():
                g[same, a] += g[same, b]
                g[same, b] = 0.0
    c = cov[np.maximum(atoms, 0)]
    c[atoms < 0] = 0.0
    return np.einsum("msi,msij,msj->m", g, c, g)
