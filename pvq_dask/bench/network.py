"""``pvq bench network``: octahedral-network accuracy on seeded synthetic dots (issue 4).

Each case is a synthetic frame with exact truth. The whole frame pipeline (no denoising)
runs on it twice, with the default corner-sharing bond prior and with ``bond_prior="none"``,
and both results are scored against truth: octahedra recall, theta/L errors, core and shell
theta3, z-scores and the fitted prior.
"""

import json

from pvq_dask.bench.score import score_octahedra
from pvq_dask.kernels.config import AnalysisConfig
from pvq_dask.kernels.frame import analyze_frame
from pvq_dask.kernels.synth import SynthParams, synthesize_frame

__all__ = ["CASES", "bench_network", "markdown_table"]

#: name -> (preset, overrides); seeds are given separately
CASES = {
    "coreshell": ("coreshell", {}),
    "rotated17": ("coreshell", {"lattice_rotation_deg": 17.0}),
    "segregated": ("segregated", {}),
    "fine-pixels": ("coreshell", {"pixel_size_nm": 0.012, "shape": (900, 900),
                                  "dot_size_nm": 8.0}),
    "coarse-pixels": ("coreshell", {"pixel_size_nm": 0.025, "shape": (512, 512),
                                    "dot_size_nm": 9.0}),
    "rotated-40": ("coreshell", {"lattice_rotation_deg": -40.0, "shape": (640, 640),
                                 "dot_size_nm": 8.0}),
    "disorder2pm": ("coreshell", {"static_disorder_nm": 0.002}),
    "disorder4pm": ("coreshell", {"static_disorder_nm": 0.004}),
    "dose44": ("coreshell", {"dose_e_per_A2": 44.0}),
    # robustness sweep: one physical change each
    "dose110": ("coreshell", {"dose_e_per_A2": 110.0}),
    "haadf": ("coreshell", {"contrast": "haadf"}),
    "no-carbon": ("coreshell", {"carbon_amplitude": 0.0, "ligand_amplitude": 0.0}),
    "mixed-br": ("coreshell", {"br_fraction": 0.5}),
    "wide-columns": ("coreshell", {"column_sigma_nm": 0.05}),
    "dot6": ("coreshell", {"dot_size_nm": 6.0}),
    "dot15": ("coreshell", {"dot_size_nm": 15.0}),
    "thin-edges": ("coreshell", {"edge_thickness_frac": 0.25}),
    "scan-distortion": ("coreshell", {"scan_distortion_px": 1.0}),
    "opposite-sense": ("coreshell", {"rotation_sense": -1}),
    "tilt-jitter1": ("coreshell", {"tilt_jitter_deg": 1.0}),
    "bond-jitter5": ("coreshell", {"bond_jitter_nm": 0.005}),
}

_KEYS = ("recall", "mae_theta1_deg", "mae_theta2_deg", "mae_theta3_deg", "mae_L1_pm",
         "mae_L2_pm", "z_std_theta3_deg", "z_std_L1_nm", "z_std_L2_nm", "core_theta3_found",
         "core_theta3_truth", "shell_theta3_found", "shell_theta3_truth")


def _score(frame, config):
    r = analyze_frame(frame.image, pixel_size_nm=frame.pixel_size_nm, config=config)
    s = score_octahedra(r.octahedra, r.atoms, frame.octahedra, frame.atoms)
    out = {k: float(s[k]) for k in _KEYS if k in s}
    out["bond_prior"] = dict(r.bond_prior)
    return out


def bench_network(*, cases=("coreshell",), seeds=(0,), out_json=None):
    """Score the network of every (case, seed), with and without the bond prior.

    Returns
    -------
    dict
        ``rows``: one dict per (case, seed) with ``prior`` and ``direct`` scores.

    Examples
    --------
    >>> row = bench_network(cases=["coarse-pixels"], seeds=[2])["rows"][0]
    >>> bool(row["prior"]["mae_L1_pm"] < row["direct"]["mae_L1_pm"])
    True
    """
    rows = []
    for name in cases:
        if name not in CASES:
            raise ValueError(f"unknown case {name!r}; choose from {sorted(CASES)}")
        preset, overrides = CASES[name]
        for seed in seeds:
            f = synthesize_frame(SynthParams.preset(preset, **overrides), rng=int(seed))
            rows.append({"case": name, "seed": int(seed),
                         "prior": _score(f, AnalysisConfig()),
                         "direct": _score(f, AnalysisConfig(bond_prior="none"))})
    out = {"benchmark": "network", "rows": rows}
    if out_json:
        with open(out_json, "w") as fh:
            json.dump(out, fh, indent=2, default=float)
    return out


def markdown_table(result):
    """The rows of :func:`bench_network` as the table of docs/benchmarks.md."""
    lines = ["| case, seed | oct. recall | theta3 MAE (deg) | theta1 / theta2 MAE | core / shell "
             "theta3 (truth) | L1 / L2 MAE (pm) | direct L1 / L2 MAE | z std theta3 / L1 / L2 "
             "| prior tau (pm) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        s, d = row["prior"], row["direct"]
        lines.append(
            f"| {row['case']}, {row['seed']} | {s['recall'] * 100:.1f} % | "
            f"{s['mae_theta3_deg']:.2f} | {s['mae_theta1_deg']:.2f} / {s['mae_theta2_deg']:.2f} | "
            f"{s['core_theta3_found']:.2f} / {s['shell_theta3_found']:.2f} "
            f"({s['core_theta3_truth']:.2f} / {s['shell_theta3_truth']:.2f}) | "
            f"**{s['mae_L1_pm']:.2f} / {s['mae_L2_pm']:.2f}** | "
            f"{d['mae_L1_pm']:.2f} / {d['mae_L2_pm']:.2f} | {s['z_std_theta3_deg']:.2f} / "
            f"{s['z_std_L1_nm']:.2f} / {s['z_std_L2_nm']:.2f} | "
            f"{s['bond_prior'].get('tau_nm', float('nan')) * 1000:.1f} |")
    return "\n".join(lines)
