"""Corner-sharing X-Pb-X lengths (kernels._bridge): gradients, prior fit, and the estimator
against truth on a synthetic network with known position noise."""

import numpy as np
import pytest

from pvq_dask.kernels._bridge import bond_length_pair, fit_asymmetry_prior
from pvq_dask.kernels.metrics import octahedra_metrics
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

PS = 0.0168


@pytest.fixture(scope="module")
def truth():
    f = synthesize_frame(SynthParams.preset("clean", shape=(768, 768), dot_size_nm=9.0), rng=3)
    xy = f.atoms[["x_px", "y_px"]].to_numpy()
    return f, xy


def _noisy(f, xy, seed, *, x_std_px=0.3, pb_std_px=0.12, cs_std_px=0.25):
    """Truth positions plus Gaussian noise of known, per-species, isotropic covariance."""
    rng = np.random.default_rng(seed)
    std = np.select([f.atoms.species == "X", f.atoms.species == "Pb"],
                    [x_std_px, pb_std_px], cs_std_px)
    cov = std[:, None, None] ** 2 * np.eye(2)
    return xy + std[:, None] * rng.standard_normal(xy.shape), cov


def _errors(f, m):
    e = np.r_[m["L1_nm"] - f.octahedra.L1_nm, m["L2_nm"] - f.octahedra.L2_nm]
    s = np.r_[m["L1_err_nm"], m["L2_err_nm"]]
    ok = np.isfinite(e) & np.isfinite(s)
    return e[ok] * 1000, e[ok] / s[ok]


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    p, x, a = rng.normal(size=(3, 5, 2)) + np.array([[0, 0], [9, 2], [18, 0]])[:, None, :]
    sd, sb, gd, gb = bond_length_pair(p, x, a)
    eps = 1e-6
    for slot, arr in enumerate((p, x, a)):
        for c in range(2):
            d = np.zeros_like(arr)
            d[:, c] = eps
            args_p = [p, x, a]
            args_m = [p, x, a]
            args_p[slot] = arr + d
            args_m[slot] = arr - d
            sd_p, sb_p, _, _ = bond_length_pair(*args_p)
            sd_m, sb_m, _, _ = bond_length_pair(*args_m)
            np.testing.assert_allclose((sd_p - sd_m) / (2 * eps), gd[:, slot, c], atol=1e-6)
            np.testing.assert_allclose((sb_p - sb_m) / (2 * eps), gb[:, slot, c], atol=1e-6)


def test_symmetric_bridge_gives_equal_lengths():
    # X on the perpendicular bisector of Pb-Pb: both estimates agree exactly
    sd, sb, _, _ = bond_length_pair(np.zeros(2), np.array([5.0, 1.3]), np.array([10.0, 0.0]))
    assert sd == pytest.approx(sb)


def test_prior_fit_finds_spread_and_anomalies():
    rng = np.random.default_rng(0)
    var = rng.uniform(2.0, 6.0, 3000)
    delta = rng.normal(0.0, np.sqrt(var + 1.5))
    delta[:60] = rng.normal(0.0, 12.0, 60)            # 2 % anomalies
    tau2, pi, _ = fit_asymmetry_prior(delta, var)
    assert 1.0 < tau2 < 2.1
    assert 0.005 < pi < 0.05
    tau2_0, _, _ = fit_asymmetry_prior(rng.normal(0.0, np.sqrt(var)), var)
    assert tau2_0 < 0.3


def test_without_covariance_or_prior_lengths_are_direct(truth):
    f, xy = truth
    noisy, cov = _noisy(f, xy, 0)
    plain = octahedra_metrics(noisy, f.network, pixel_size_nm=PS)
    none = octahedra_metrics(noisy, f.network, pixel_size_nm=PS, cov=cov, bond_prior="none")
    np.testing.assert_allclose(plain["L1_nm"], none["L1_nm"])
    np.testing.assert_allclose(plain["sigma3_nm"], none["sigma3_nm"])
    with pytest.raises(ValueError, match="bond_prior"):
        octahedra_metrics(noisy, f.network, pixel_size_nm=PS, cov=cov, bond_prior="rigid")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prior_halves_the_error_on_ideal_corner_sharing(truth, seed):
    f, xy = truth
    noisy, cov = _noisy(f, xy, seed)
    diag = {}
    direct = octahedra_metrics(noisy, f.network, pixel_size_nm=PS, cov=cov, bond_prior="none")
    post = octahedra_metrics(noisy, f.network, pixel_size_nm=PS, cov=cov, diagnostics=diag)
    e_d, z_d = _errors(f, direct)
    e_p, z_p = _errors(f, post)
    assert np.mean(np.abs(e_p)) < 0.55 * np.mean(np.abs(e_d))
    assert 0.85 < np.std(z_d) < 1.15 and 0.8 < np.std(z_p) < 1.2
    assert diag["bond_prior"]["tau_nm"] * 1000 < 2.0        # truth: 1 pm bond jitter only
    # off-centring (sigma1 - sigma2) and tilts are untouched; L = sigma1 + sigma2 still holds
    np.testing.assert_allclose(post["sigma1_nm"] - post["sigma2_nm"],
                               direct["sigma1_nm"] - direct["sigma2_nm"], atol=1e-12)
    np.testing.assert_allclose(post["L2_nm"], post["sigma3_nm"] + post["sigma4_nm"])
    np.testing.assert_allclose(post["theta3_deg"], direct["theta3_deg"])


def test_prior_adapts_to_real_asymmetry(truth):
    """Halides displaced along their bonds (3 pm, independent): the prior widens and the
    uncertainties stay calibrated; the estimate is still better than the direct one."""
    f, xy = truth
    rng = np.random.default_rng(7)
    shifted = xy.copy()
    is_x = (f.atoms.species == "X").to_numpy()
    shifted[is_x] += rng.normal(0.0, 0.003 / PS, (is_x.sum(), 2))
    moved = octahedra_metrics(shifted, f.network, pixel_size_nm=PS)   # the new truth
    noisy, cov = _noisy(f, shifted, 11)
    diag = {}
    post = octahedra_metrics(noisy, f.network, pixel_size_nm=PS, cov=cov, diagnostics=diag)
    direct = octahedra_metrics(noisy, f.network, pixel_size_nm=PS, cov=cov, bond_prior="none")
    e_p = np.r_[post["L1_nm"] - moved["L1_nm"], post["L2_nm"] - moved["L2_nm"]]
    s_p = np.r_[post["L1_err_nm"], post["L2_err_nm"]]
    e_d = np.r_[direct["L1_nm"] - moved["L1_nm"], direct["L2_nm"] - moved["L2_nm"]]
    ok = np.isfinite(e_p) & np.isfinite(s_p)
    assert 2.5 < diag["bond_prior"]["tau_nm"] * 1000 < 6.0        # truth: ~4.2 pm
    assert np.mean(np.abs(e_p[ok])) < 0.85 * np.mean(np.abs(e_d[ok]))
    assert 0.8 < np.std(e_p[ok] / s_p[ok]) < 1.2


def test_an_anomalous_octahedron_keeps_its_length(truth):
    """A single halide 25 pm off its bridge midpoint: the mixture prior lets it stand."""
    f, xy = truth
    noisy, cov = _noisy(f, xy, 5)
    net = f.network
    k = net.n_octahedra // 2
    xi = net.x_bonds[k, 0]
    bond = xy[xi] - xy[net.pb[k]]
    along = bond / np.linalg.norm(bond)
    planted = noisy.copy()
    planted[xi] += along * 0.025 / PS
    base = octahedra_metrics(noisy, net, pixel_size_nm=PS, cov=cov)
    post = octahedra_metrics(planted, net, pixel_size_nm=PS, cov=cov)
    jump_pm = (post["L1_nm"][k] - base["L1_nm"][k]) * 1000
    assert jump_pm > 15.0


def test_bench_network_cli(tmp_path, capsys):
    """``pvq bench network`` scores both estimators on a small synthetic dot."""
    import json

    from pvq_dask.cli import main

    out = tmp_path / "net.json"
    assert main(["bench", "network", "--cases", "coarse-pixels", "--seeds", "2",
                 "--json", str(out)]) == 0
    assert "| coarse-pixels, 2 |" in capsys.readouterr().out
    row = json.loads(out.read_text())["rows"][0]
    assert row["prior"]["mae_L1_pm"] < 0.7 * row["direct"]["mae_L1_pm"]
    assert row["prior"]["recall"] >= 0.9
