"""ESSMConfig: the eSSM architecture in one object, checked once and passed down whole
(net -> blocks -> layers), as nanoGPT passes its GPTConfig."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from tsessm.checks import positive_int
from tsessm.nn.init import INITS

DISCRETIZATIONS = ("zoh", "bilinear")
MIXERS = ("auto", "none", "linear", "glu")


@dataclass(frozen=True)
class ESSMConfig:
    """The shape and initialisation of a deep eSSM (see `ESSMLayer` and `ESSMNet`).

    d_model: channels H, split into `n_heads` heads of H / S channels.
    n_layers: residual blocks.
    d_state: complex states N in all, N / S per head.
    n_heads: independent heads S (a block-diagonal system).
    bidirectional: also read the future through the mirrored kernel (no streaming form).
    discretization: "zoh" or "bilinear".
    init: eigenvalue initialisation, "s4d-lin", "s4d-inv" or "legs".
    dt_min, dt_max: range of the log-uniform initial step size Delta (one per state).
    mixer: the position-wise head mixer after the activation: "auto" (Linear with several heads,
        none with one), "none", "linear" or "glu".
    dropout: in every block, after the mixer.
    """

    d_model: int = 128
    n_layers: int = 2
    d_state: int = 64
    n_heads: int = 1
    bidirectional: bool = False
    discretization: str = "zoh"
    init: str = "s4d-lin"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mixer: str = "auto"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "d_state", "n_heads"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        if self.d_model % self.n_heads or self.d_state % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model} and d_state={self.d_state}")
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {self.discretization!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)}, got {self.init!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {list(MIXERS)}, got {self.mixer!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def resolved_mixer(self) -> str:
        """"auto" -> "linear" with several heads, "none" with one (the MIMO B and C mix already)."""
        if self.mixer == "auto":
            return "linear" if self.n_heads > 1 else "none"
        return self.mixer

    def as_dict(self) -> dict:
        return asdict(self)
