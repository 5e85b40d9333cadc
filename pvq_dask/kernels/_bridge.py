"""X-Pb-X lengths that use the corner-sharing constraint (empirical Bayes).

Every equatorial halide is shared by two octahedra: it bridges two Pb columns. Along the
Pb-Pb line it sits at the midpoint unless the bridge is asymmetric, so each Pb-X length has
two estimates:

- **direct**: ``sigma_d = |X - Pb|`` from the fitted halide, whose position error along the
  bond is the halide's (the weakest column of the frame);
- **bridge**: ``sigma_b = sqrt((|A - Pb| / 2)^2 + h^2)``, ``A`` being the Pb across the bond
  and ``h`` the halide's offset perpendicular to the Pb-Pb line (which is what sets the tilt).
  Along the bond it uses only Pb positions, about twice as precise as halide positions.

For ``L = sigma_1 + sigma_2`` the two differ by ``Delta = L_d - L_b``: the difference of the
two bridges' asymmetries. A displacement of the Pb inside its octahedron (off-centring) or a
smooth asymmetry field changes neither (they cancel in the sum), so ``Delta`` is the part of
the X-Pb-X length that no Pb position predicts. It is modelled per frame (both axes pooled)
as a scale mixture: most octahedra ``N(0, tau^2)``, a fraction ``pi`` of anomalies
``N(0, tau_wide^2)`` (``tau_wide`` = 4 x the median measurement std), with ``tau`` and ``pi``
estimated from the measured ``Delta`` and their propagated variances (EM). Each ``L`` is the
posterior mean ``L_b + w Delta``; ``w`` -> 1 (the direct length) where ``tau`` is large or the
octahedron looks anomalous, ``w`` -> 0 where the frame shows no asymmetry beyond noise.
The difference ``sigma_1 - sigma_2`` (off-centring) is always the direct one.

The reported uncertainty is the posterior standard deviation: the propagated noise of
``(1 - w) L_b + w L_d`` plus the prior's share ``(1 - w)^2 tau^2``. An excess scatter of
``Delta`` over its propagated noise cannot tell true asymmetry from an underestimated noise
model in a single frame: up to :data:`NOISE_SCALE_ALLOWANCE` of it (in variance) is credited to
the noise model, as our validation measured, and only the rest to asymmetry
(``docs/method.md``).
"""

import numpy as np

from pvq_dask.kernels._metrics_grad import quadratic_form

__all__ = ["NOISE_SCALE_ALLOWANCE", "bond_length_pair", "corner_sharing_lengths",
           "fit_asymmetry_prior"]

_WIDE = 4.0            # anomaly component std, in median measurement stds
_MIN_FIT = 40          # fewer Delta than this: no prior, direct lengths
#: Excess scatter of Delta over its propagated variance credited to the noise model first: our
#: position covariances run up to ~10 % small in std on synthetic frames (z std 1.0-1.1,
#: docs/benchmarks.md), i.e. up to ~20 % in variance; only scatter beyond that is asymmetry.
NOISE_SCALE_ALLOWANCE = 0.2
_EM_ITER = 200
_EM_TOL = 1e-10


def bond_length_pair(p, x, a):
    """Direct and bridge Pb-X lengths with their gradients.

    Parameters
    ----------
    p, x, a : ndarray, shape (..., 2)
        Pb, its halide and the Pb across the bond.

    Returns
    -------
    sd, sb : ndarray, shape (...)
        Direct ``|x - p|`` and bridge lengths.
    gd, gb : ndarray, shape (..., 3, 2)
        Their gradients with respect to (p, x, a).

    Examples
    --------
    A halide 0.1 off the midpoint along the bond, 1 off the line:

    >>> sd, sb, _, _ = bond_length_pair(np.zeros(2), np.array([1.1, 1.0]), np.array([2.0, 0.0]))
    >>> round(float(sd), 4), round(float(sb), 4)
    (1.4866, 1.4142)
    """
    b = x - p
    v = a - p
    sd = np.linalg.norm(b, axis=-1)
    nv = np.linalg.norm(v, axis=-1)
    vh = v / nv[..., None]
    perp = vh[..., 0] * b[..., 1] - vh[..., 1] * b[..., 0]
    half = 0.5 * nv
    sb = np.sqrt(half**2 + perp**2)
    normal = np.stack([-vh[..., 1], vh[..., 0]], axis=-1)        # d perp / d b
    dperp_dv = (np.stack([b[..., 1], -b[..., 0]], axis=-1) - perp[..., None] * vh) / nv[..., None]
    gx_b = (perp / sb)[..., None] * normal
    ga_b = (half / sb)[..., None] * 0.5 * vh + (perp / sb)[..., None] * dperp_dv
    gb = np.stack([-(gx_b + ga_b), gx_b, ga_b], axis=-2)
    bh = b / sd[..., None]
    gd = np.stack([-bh, bh, np.zeros_like(bh)], axis=-2)
    return sd, sb, gd, gb


def fit_asymmetry_prior(delta, var):
    """EM estimate of the scale mixture ``(1 - pi) N(0, tau^2) + pi N(0, tau_wide^2)``.

    Parameters
    ----------
    delta : ndarray, shape (n,)
        Measured ``L_d - L_b``.
    var : ndarray, shape (n,)
        Their propagated measurement variances.

    Returns
    -------
    tau2, pi, tau2_wide : float

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> var = np.full(4000, 4.0)
    >>> delta = rng.normal(0, np.sqrt(var + 1.0))
    >>> tau2, pi, _ = fit_asymmetry_prior(delta, var)
    >>> bool(0.7 < tau2 < 1.3), bool(pi < 0.02)
    (True, True)
    """
    delta = np.asarray(delta, float)
    var = np.asarray(var, float)
    wide2 = _WIDE**2 * float(np.median(var))
    tau2, pi = max(float(np.mean(delta**2 - var)), 0.0), 0.01
    for _ in range(_EM_ITER):
        resp = _anomaly_responsibility(delta, var, tau2, pi, wide2)
        keep = 1.0 - resp
        w = tau2 / (tau2 + var)
        new_tau2 = float(np.sum(keep * ((w * delta) ** 2 + w * var)) / max(keep.sum(), 1e-12))
        new_pi = float(np.clip(resp.mean(), 1e-4, 0.5))
        done = abs(new_tau2 - tau2) < _EM_TOL * (1 + tau2) and abs(new_pi - pi) < 1e-8
        tau2, pi = new_tau2, new_pi
        if done:
            break
    return tau2, pi, wide2


def _anomaly_responsibility(delta, var, tau2, pi, wide2):
    """Posterior probability that each ``delta`` belongs to the wide component."""
    def logn(v):
        return -0.5 * (np.log(v) + delta**2 / v)
    ln = np.log1p(-pi) + logn(tau2 + var)
    lw = np.log(pi) + logn(wide2 + var)
    return 1.0 / (1.0 + np.exp(np.clip(ln - lw, -700, 700)))


def corner_sharing_lengths(slots_xy, atoms, cov, sig, use, *, fit_mask):
    """Posterior-mean ``L1``, ``L2`` (and consistent ``sigma_k``) with their uncertainties.

    Parameters
    ----------
    slots_xy : ndarray, shape (M, 9, 2)
        Positions of slot 0 (Pb), 1..4 (X_k) and 5..8 (the Pb across bond k).
    atoms : ndarray of int, shape (M, 9)
        Atom index of each slot (for merging shared atoms in the covariance).
    cov : ndarray, shape (N, 2, 2)
        Position covariances (px^2).
    sig : ndarray, shape (M, 4)
        Direct Pb-X lengths (px).
    use : ndarray of bool, shape (M, 4)
        Slots whose X and across-Pb both exist (the bridge estimate is defined).
    fit_mask : ndarray of bool, shape (M,)
        Octahedra whose ``Delta`` enter the prior fit (trusted ones).

    Returns
    -------
    sig_post : ndarray, shape (M, 4)
    L_err : ndarray, shape (2, M)
        Posterior std of ``L1``, ``L2`` (px); NaN where no pair has a bridge estimate.
    prior : dict
        ``tau`` (px), ``pi``, ``excess``, ``scale`` and ``n`` of the prior fitted to both axes.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return _corner_sharing(slots_xy, atoms, cov, sig, use, fit_mask)


def _corner_sharing(slots_xy, atoms, cov, sig, use, fit_mask):
    m = len(slots_xy)
    sig_post = sig.copy()
    L_err = np.full((2, m), np.nan)
    axes = [_axis_terms(slots_xy, atoms, cov, sig, use, k1, k2) for k1, k2 in ((0, 1), (2, 3))]
    sel = [ax["ok"] & fit_mask & np.isfinite(ax["delta"]) & (ax["var"] > 0) for ax in axes]
    prior = {"n": int(sum(x.sum() for x in sel)), "tau": np.nan, "pi": np.nan, "excess": np.nan}
    if prior["n"] < _MIN_FIT:
        return sig_post, L_err, prior
    delta = np.concatenate([ax["delta"][x] for ax, x in zip(axes, sel)])
    var = np.concatenate([ax["var"][x] for ax, x in zip(axes, sel)])
    excess = max(float(np.mean(delta**2) / np.mean(var)) - 1.0, 0.0)
    scale = 1.0 + min(excess, NOISE_SCALE_ALLOWANCE)
    tau2, pi, wide2 = fit_asymmetry_prior(delta, scale * var)
    prior.update(tau=float(np.sqrt(tau2)), pi=float(pi), excess=excess, scale=scale)
    for h, ((k1, k2), ax) in enumerate(zip(((0, 1), (2, 3)), axes)):
        ok, delta, var = ax["ok"], ax["delta"], scale * ax["var"]
        r = _anomaly_responsibility(delta, var, tau2, pi, wide2)
        w_n = tau2 / (tau2 + var)
        w_w = wide2 / (wide2 + var)
        w = np.where(ok, (1 - r) * w_n + r * w_w, 1.0)
        prior_var = (1 - r) * (1 - w_n) ** 2 * tau2 + r * (1 - w_w) ** 2 * wide2
        spread = r * (1 - r) * ((w_n - w_w) * delta) ** 2
        g = (1 - w)[:, None, None] * ax["grad_b"] + w[:, None, None] * ax["grad_d"]
        post_var = scale * quadratic_form(g, atoms, cov) + prior_var + spread
        shift = np.where(ok, 0.5 * (1 - w) * delta, 0.0)
        sig_post[:, k1] = sig[:, k1] - shift
        sig_post[:, k2] = sig[:, k2] - shift
        L_err[h] = np.where(ok, np.sqrt(post_var), np.nan)
    return sig_post, L_err, prior


def _axis_terms(slots_xy, atoms, cov, sig, use, k1, k2):
    """``Delta = L_d - L_b`` of one axis, its variance and both gradients."""
    m = len(slots_xy)
    ok = use[:, k1] & use[:, k2]
    grad_d = np.zeros((m, 9, 2))
    grad_b = np.zeros((m, 9, 2))
    lb = np.zeros(m)
    for k in (k1, k2):
        _, sb, gd, gb = bond_length_pair(slots_xy[:, 0], slots_xy[:, 1 + k], slots_xy[:, 5 + k])
        lb += sb
        for g, out in ((gd, grad_d), (gb, grad_b)):
            out[:, 0] += g[:, 0]
            out[:, 1 + k] += g[:, 1]
            out[:, 5 + k] += g[:, 2]
    delta = np.where(ok, sig[:, k1] + sig[:, k2] - lb, 0.0)
    var = np.where(ok, quadratic_form(grad_d - grad_b, atoms, cov), 1.0)
    ok &= np.isfinite(delta) & np.isfinite(var)
    return {"ok": ok, "delta": np.where(ok, delta, 0.0), "var": np.where(ok, var, 1.0),
            "grad_d": grad_d, "grad_b": grad_b}
