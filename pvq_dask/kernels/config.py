"""Analysis configuration: every parameter of a run, hashed into the provenance."""

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

__all__ = ["AnalysisConfig", "BOND_PRIORS", "S2S_INPUTS"]

_DENOISERS = ("none", "absf", "s2sred")
#: What S2SRED denoises: the raw frame or its ABSF output (the paper's choice).
S2S_INPUTS = ("raw", "absf")
#: X-Pb-X lengths: with the corner-sharing prior (kernels._bridge), or from halides alone.
BOND_PRIORS = ("corner_sharing", "none")
_STAGES = ("atoms", "network", "maps")


@dataclass(frozen=True)
class AnalysisConfig:
    """Parameters of ``pvq analyze`` (paper defaults where the paper gives one).

    Examples
    --------
    >>> cfg = AnalysisConfig(denoise="absf")
    >>> cfg.replace(shell_width_uc=2).shell_width_uc
    2
    >>> len(cfg.sha256())
    64
    """

    stages: tuple = _STAGES
    denoise: str = "none"
    denoise_profile: str = "fast"
    # S2SRED input: "absf" (the paper: the ABSF-prefiltered frame) or "raw"
    s2s_input: str = "absf"
    device: str = "cpu"
    # peaks and fit (paper: 7x7 maxima, CoM radius 3 px, LM tol 1e-6, reject residual > 8 %)
    min_distance_px: int = 3
    com_radius_px: float = 3.0
    fit_tol: float = 1e-6
    reject_residual_frac: float = 0.08
    classify_method: str = "mixture"
    # SOFS (paper: 8 candidates, B = 4, alpha = 9)
    sofs_candidates: int = 8
    sofs_branching: int = 4
    sofs_depth: int = 9
    # metrics
    shell_width_uc: int = 3
    # X-Pb-X lengths: "corner_sharing" (empirical-Bayes prior from the Pb across each bond)
    # or "none" (the halide positions alone)
    bond_prior: str = "corner_sharing"
    map_step_nm: float = 0.3
    # tiling of one frame (0 = whole frame); "global": one SOFS on the gathered columns
    tile_px: int = 0
    tile_network: str = "global"
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.denoise not in _DENOISERS:
            raise ValueError(f"denoise must be one of {_DENOISERS}, got {self.denoise!r}")
        if self.s2s_input not in S2S_INPUTS:
            raise ValueError(f"s2s_input must be one of {S2S_INPUTS}, got {self.s2s_input!r}")
        bad = set(self.stages) - set(_STAGES)
        if bad:
            raise ValueError(f"unknown stages {sorted(bad)}; choose from {_STAGES}")
        if self.tile_px < 0:
            raise ValueError(f"tile_px must be >= 0 (0 = whole frame), got {self.tile_px}")
        if self.tile_network not in ("global", "tiles"):
            raise ValueError(f"tile_network must be 'global' or 'tiles', got {self.tile_network!r}")
        if self.bond_prior not in BOND_PRIORS:
            raise ValueError(f"bond_prior must be one of {BOND_PRIORS}, got {self.bond_prior!r}")
        if self.shell_width_uc < 1:
            raise ValueError(f"shell_width_uc must be >= 1, got {self.shell_width_uc}")

    def replace(self, **changes):
        return replace(self, **changes)

    def to_dict(self):
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "stages" in kw:
            kw["stages"] = tuple(kw["stages"])
        return cls(**kw)

    def sha256(self):
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
