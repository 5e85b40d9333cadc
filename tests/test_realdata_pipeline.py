"""The whole pipeline on real microscope frames (skipped without ``../shared/data/real``).

SrTiO3 is cubic at room temperature: its octahedra do not tilt. In the [001] HAADF frame the
visible columns (Sr and Ti-O) form the same square "corner + edge" pattern as the Pb and
equatorial-halide columns of a [001] CsPbX3 projection, so ``pvq analyze`` builds a network
on it, and its tilts must come out near zero: a zero-tilt control on real data, with real
scan noise and a 4 % scan distortion, against the ~10 deg of a CsPbI3 dot.
"""

import numpy as np
import pytest

from pvq_dask.cli import main
from pvq_dask.store import open_result

pytestmark = pytest.mark.realdata

STO_001 = "openncem/16_STOimage.emi"        # SrTiO3 [001] HAADF, 1024^2, 0.0100 nm/px
MIN_OCTAHEDRA = 150
ZERO_TILT_MAX_DEG = 1.0                     # mean theta3 (a magnitude, so > 0 by noise)
CSPBI3_TILT_DEG = 10.9                      # what a real tilt looks like (paper's core)
SPACING_REL_TOL = 0.08                      # stored calibrations are off by 4-8 % (README)
STO_A_NM = 0.3905


@pytest.fixture(scope="module")
def sto_result(tmp_path_factory):
    from pathlib import Path

    real = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    if not (real / STO_001).is_file():
        pytest.skip(f"real data file {real / STO_001} absent")
    out = tmp_path_factory.mktemp("sto") / "sto.pvq"
    assert main(["analyze", str(real / STO_001), "-o", str(out)]) == 0
    return open_result(out)


def test_sto_zero_tilt_control(sto_result):
    octs = sto_result.octahedra
    trusted = octs[octs.region != "edge_excluded"]
    assert len(trusted) >= MIN_OCTAHEDRA
    for col in ("theta1_deg", "theta2_deg", "theta3_deg"):
        assert abs(np.nanmean(trusted[col])) < ZERO_TILT_MAX_DEG, col
    # The tilt floor is an order of magnitude below a CsPbI3 dot's tilt.
    assert np.nanmean(trusted.theta3_deg) < 0.1 * CSPBI3_TILT_DEG
    assert (trusted.theta3_err_deg > 0).all()


def test_sto_spacing_matches_the_lattice(sto_result):
    # The "X-Pb-X" length of this mapping is the Sr-Sr face diagonal, sqrt(2) a.
    length_nm = np.nanmedian(np.r_[sto_result.octahedra.L1_nm, sto_result.octahedra.L2_nm])
    assert abs(length_nm / (np.sqrt(2) * STO_A_NM) - 1) < SPACING_REL_TOL
