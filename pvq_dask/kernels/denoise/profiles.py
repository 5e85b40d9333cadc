"""Named S2SRED settings: ``paper``, ``fast`` and ``test``."""

from dataclasses import asdict, dataclass, replace

__all__ = ["S2SProfile", "PROFILES", "get_profile"]


@dataclass(frozen=True)
class S2SProfile:
    """Every setting of one S2SRED run.

    Network: ``features`` (encoder F), ``decoder_features``, ``dropout``. Self2Self:
    ``keep_prob`` (Bernoulli mask), ``n_steps``, ``lr`` (Adam), ``batch_size`` crops of
    ``crop_px`` (None: the whole frame, batch 1). RED/ADMM (design.md section 5): ``prior``
    (``"bm3d"``, ``"nlm"``, ``"gaussian"`` or None for plain Self2Self), ``prior_sigma``
    (noise level handed to the prior, [0, 1] units; ``prior_width_px`` for the Gaussian
    prior), ``red_lambda``, ``red_mu``, an x/u
    update every ``prior_every`` steps, ``coupling`` (``"dropped"``: the RED term only on
    the pixels hidden from the network; ``"full"``: on all pixels), ``x_init`` (``"prior"``:
    x starts at f(y); ``"input"``: at y), ``xbar_decay`` (EMA of the outputs for whole-frame
    steps) or ``xbar_passes`` (MC passes that form xbar when training on crops). Early
    stopping: every ``es_every`` steps the EMA of the blind-spot loss is compared with its
    best; ``es_patience`` checks without a relative gain of ``es_min_rel`` stop the run (0
    disables). Inference: ``n_mc`` passes, ``mc_batch`` at a time. CUDA only: ``bf16``
    autocast and ``channels_last``. ``checkpoint_every`` steps a checkpoint is written when
    a path is given.
    """

    name: str = "custom"
    features: int = 64
    decoder_features: int = 128
    dropout: float = 0.3
    keep_prob: float = 0.7
    n_steps: int = 3000
    lr: float = 3e-4
    batch_size: int = 8
    crop_px: int | None = 128
    prior: str | None = "gaussian"
    prior_sigma: float = 15.0 / 255.0
    prior_width_px: float = 1.5
    red_lambda: float = 0.2
    red_mu: float = 1.0
    prior_every: int = 100
    coupling: str = "dropped"
    x_init: str = "prior"
    xbar_decay: float = 0.99
    xbar_passes: int = 4
    es_every: int = 100
    es_patience: int = 4
    es_min_rel: float = 0.002
    n_mc: int = 32
    mc_batch: int = 8
    bf16: bool = True
    channels_last: bool = True
    checkpoint_every: int = 500

    def __post_init__(self):
        if not 0 < self.keep_prob < 1:
            raise ValueError(f"keep_prob must be in (0, 1), got {self.keep_prob}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.prior not in (None, "bm3d", "nlm", "gaussian"):
            raise ValueError(f"prior must be 'bm3d', 'nlm', 'gaussian' or None, "
                             f"got {self.prior!r}")
        if self.coupling not in ("dropped", "full"):
            raise ValueError(f"coupling must be 'dropped' or 'full', got {self.coupling!r}")
        if self.x_init not in ("prior", "input"):
            raise ValueError(f"x_init must be 'prior' or 'input', got {self.x_init!r}")
        if self.crop_px is not None and self.crop_px % 16:
            raise ValueError(f"crop_px must be a multiple of 16 px, got {self.crop_px}")
        for key in ("n_steps", "batch_size", "n_mc", "mc_batch", "prior_every",
                    "checkpoint_every", "es_every", "features", "decoder_features"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")

    @property
    def uses_red(self):
        return self.prior is not None and self.red_lambda > 0

    def to_dict(self):
        return asdict(self)


#: The paper's settings (Self2Self's whole-frame schedule, BM3D prior sigma = 15/255,
#: lambda = 0.2, mu = 1.0, N = 100 MC passes; ~2.5 h per 1024^2 frame on a laptop GPU).
PAPER = S2SProfile(
    name="paper", n_steps=150_000, lr=1e-5, batch_size=1, crop_px=None, prior="bm3d",
    prior_every=1000, xbar_decay=0.99, es_patience=0, n_mc=100, mc_batch=4, bf16=False,
    channels_last=False, checkpoint_every=5000,
)
#: Our fastest settings at equal quality: batches of random crops with fresh masks, a
#: larger step, early stopping on the blind-spot loss, a torch Gaussian prior that runs
#: where the network runs, bf16 + channels_last on CUDA. RED weight: measured on the
#: generator's dot (128 px, 50 e/A^2, 200 steps of batch 2, PSNR vs clean): plain S2S
#: 31.31 dB; RED mu = 1.0 with the Gaussian / BM3D / NLM prior 30.31 / 30.50 / 28.59 dB;
#: mu = 0.1 (Gaussian) 31.18 dB; the pitfall (x0 = y, coupling on all pixels) 29.08 dB
#: with a std map at half the true error. Short schedules with early stopping do not
#: need the paper's strong coupling, so the fast profile keeps RED at mu = 0.1.
FAST = S2SProfile(name="fast", red_mu=0.1)
#: Tiny network and few steps: seconds on a CPU (tests only, not for science).
TEST = S2SProfile(
    name="test", features=8, decoder_features=16, n_steps=300, lr=2e-3, batch_size=4,
    crop_px=64, prior="gaussian", prior_every=25, xbar_passes=2, es_every=25, es_patience=0,
    n_mc=8, mc_batch=8, bf16=False, channels_last=False, checkpoint_every=50,
)

PROFILES = {p.name: p for p in (PAPER, FAST, TEST)}


def get_profile(profile="fast", **overrides):
    """A profile by name (or an :class:`S2SProfile`), with field overrides.

    Examples
    --------
    >>> get_profile("paper").prior
    'bm3d'
    >>> get_profile("test", n_steps=10).n_steps
    10
    """
    if isinstance(profile, S2SProfile):
        base = profile
    elif profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    unknown = set(overrides) - set(base.to_dict())
    if unknown:
        raise ValueError(f"unknown profile settings {sorted(unknown)}")
    return replace(base, **overrides) if overrides else base
