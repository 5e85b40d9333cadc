"""Parameters of the synthetic CsPbX3 quantum-dot generator, and named cases."""

from dataclasses import asdict, dataclass, field, replace

__all__ = ["SynthParams", "CASES"]


@dataclass(frozen=True)
class SynthParams:
    """Everything that defines one synthetic frame (or series); all lengths in nm.

    Geometry choice (documented in docs/synthetic.md): the paper quotes X-Pb-X 0.633 nm,
    Cs-Cs 0.631 nm and a = 0.911 nm, which no single rigid geometry satisfies. We keep the
    Pb-X bond length (0.3165 nm, i.e. X-Pb-X = 0.633 nm, close to the Pb-I bond of
    gamma-CsPbI3) and derive everything else: Pb-Pb = Cs-Cs = 2 sigma cos(theta)
    ~ 0.622 nm at theta = 10.9 deg, orthorhombic a ~ b ~ 0.879 nm.
    """

    # frame
    shape: tuple = (1024, 1024)
    pixel_size_nm: float = 0.0168
    # particle
    lattice_rotation_deg: float = 3.0
    center_offset_nm: tuple = (0.0, 0.0)
    dot_size_nm: float = 11.0
    corner_radius_frac: float = 0.3
    outline_roughness_nm: float = 0.25
    protrusion_nm: float = 1.0
    protrusion_angle_deg: float = 135.0  # image coords: 135 deg = bottom-left
    protrusion_width_nm: float = 2.5
    rotation_sense: int = 1
    # octahedral network (the paper's CsPbI3 dot)
    bond_length_nm: float = 0.3165
    core_theta1_deg: float = 10.27
    core_theta2_deg: float = 11.55
    shell_theta1_deg: float = 8.51
    shell_theta2_deg: float = 9.32
    shell_width_uc: int = 3
    tilt_jitter_deg: float = 0.2
    bond_jitter_nm: float = 0.001
    # independent static displacement of every column (nm per axis): breaks the corner-sharing
    # symmetry of each bridge (point defects, local strain); 0 = ideal corner sharing
    static_disorder_nm: float = 0.0
    match_region_means: bool = True
    # Br-rich region: smaller tilt, shorter bonds, weaker halide columns
    segregation_center_nm: tuple | None = None
    segregation_radius_nm: float = 2.4
    segregation_edge_nm: float = 0.4
    segregation_theta_deg: float = 6.5
    segregation_bond_length_nm: float = 0.2975
    segregation_br_fraction: float = 0.6
    br_fraction: float = 0.0
    # contrast
    contrast: str = "idpc"  # "idpc" (~Z^0.75 per atom) or "haadf" (~Z^1.7)
    column_sigma_nm: float = 0.040
    light_sigma_factor: float = 1.05
    edge_thickness_frac: float = 0.45
    thickness_decay_nm: float = 1.2
    baseline: float = 0.30
    carbon_amplitude: float = 0.10
    carbon_correlation_nm: float = 0.10
    ligand_amplitude: float = 0.08
    ligand_width_nm: float = 0.8
    # noise
    dose_e_per_A2: float | None = 220.0
    # Effective detected counts per incident electron. iDPC builds its contrast from the
    # centre-of-mass shift of every electron, so its column signal-to-noise at a given dose
    # exceeds a counting image's. 8 puts the median halide CRLB over the default dot at
    # 3.7 pm at 220 e/A^2, so a fit at 1.2-1.3x the bound achieves the paper's reported
    # "typically better than 0.005 nm". None -> 8 for idpc, 1 for haadf.
    counts_per_electron: float | None = None
    read_noise_counts: float = 0.5
    scanline_offset_frac: float = 0.03
    scan_distortion_px: float = 0.0
    scan_distortion_period_px: float = 310.0
    # series
    n_frames: int = 1
    drift_px_per_frame: tuple = (1.5, -0.8)
    drift_jitter_px: float = 0.3
    intra_frame_drift_px: tuple = (0.0, 0.0)
    shell_tilt_rate_deg_per_frame: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.shape) != 2 or min(self.shape) < 64:
            raise ValueError(f"shape must be two sizes >= 64 px, got {self.shape}")
        if self.pixel_size_nm <= 0:
            raise ValueError(f"pixel_size_nm must be > 0, got {self.pixel_size_nm}")
        if self.contrast not in ("idpc", "haadf"):
            raise ValueError(f"contrast must be 'idpc' or 'haadf', got {self.contrast!r}")
        if self.dose_e_per_A2 is not None and self.dose_e_per_A2 <= 0:
            raise ValueError(f"dose_e_per_A2 must be > 0 or None, got {self.dose_e_per_A2}")
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {self.n_frames}")

    @classmethod
    def preset(cls, case="coreshell", **overrides):
        """Parameters of a named case, with overrides.

        Examples
        --------
        >>> SynthParams.preset("segregated").segregation_center_nm
        (-2.6, 2.6)
        >>> SynthParams.preset("clean").dose_e_per_A2 is None
        True
        """
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}; choose one of {sorted(CASES)}")
        if "shape" in overrides and isinstance(overrides["shape"], int):
            overrides["shape"] = (overrides["shape"], overrides["shape"])
        return replace(cls(**CASES[case]), **overrides)

    @property
    def gain(self):
        """Detected counts per incident electron for this contrast mode."""
        if self.counts_per_electron is not None:
            return float(self.counts_per_electron)
        return 8.0 if self.contrast == "idpc" else 1.0

    def to_dict(self):
        return asdict(self)


#: Named cases for tests, benchmarks and ``pvq synth --case``.
CASES = {
    # The paper's CsPbI3 dot: isotropic core/shell tilt gradient.
    "coreshell": {},
    # CsPbI3-xBrx (x = 0.5): Br-rich bottom-left region with reduced tilt and shorter bonds.
    "segregated": dict(
        bond_length_nm=0.3080, br_fraction=0.17,
        core_theta1_deg=10.0, core_theta2_deg=10.6, shell_theta1_deg=9.0, shell_theta2_deg=9.5,
        segregation_center_nm=(-2.6, 2.6), protrusion_angle_deg=135.0,
    ),
    # One tilt everywhere.
    "uniform": dict(core_theta1_deg=10.0, core_theta2_deg=10.0,
                    shell_theta1_deg=10.0, shell_theta2_deg=10.0),
    # The default dot with no noise at all (for bias checks).
    "clean": dict(dose_e_per_A2=None, read_noise_counts=0.0, scanline_offset_frac=0.0),
    # An in-situ series: drift between and within frames, shell tilt relaxing over time.
    "series": dict(n_frames=6, intra_frame_drift_px=(0.6, 0.2),
                   shell_tilt_rate_deg_per_frame=-0.15),
}
