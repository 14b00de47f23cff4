"""ESSMNet: a deep causal eSSM that forecasts the next `horizon` steps at every position.

encoder -> n_layers x [norm -> ESSMLayer -> GELU -> (head mixer) -> dropout -> + residual]
        -> norm -> horizon head

As in the authors' layer, a position-wise head mixer follows the activation only when there are
several heads (`mixer="auto"`): with one head the MIMO B and C already mix every channel.

Everything but the ESSMLayer is position-wise, so the convolution view (`forward`), the
recurrent view (`step`) and `prefill` compute the same function.
"""
from __future__ import annotations

from torch import Tensor, nn

from tsessm.checks import positive_int
from tsessm.nn.essm_layer import ESSMLayer


# The position-wise mixer that lets the heads talk: none, "linear" (d^2 weights) or "glu" (2 d^2).
_MIXERS = {
    "none": lambda d: [],
    "linear": lambda d: [nn.Linear(d, d)],
    "glu": lambda d: [nn.Linear(d, 2 * d), nn.GLU(dim=-1)],
}
MIXERS = ("auto", *_MIXERS)


def resolve_mixer(mixer: str, n_heads: int) -> str:
    """"auto" -> "linear" with several heads, "none" with one (the MIMO B and C mix already)."""
    if mixer not in MIXERS:
        raise ValueError(f"mixer must be one of {list(MIXERS)}, got {mixer!r}")
    if mixer == "auto":
        return "linear" if n_heads > 1 else "none"
    return mixer


class ESSMBlock(nn.Module):
    """One residual block; `forward`, `step` and `prefill` mirror ESSMLayer's."""

    def __init__(self, d_model: int, dropout: float, mixer: str = "auto", **layer_kwargs) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.ssm = ESSMLayer(d_model, **layer_kwargs)
        mixer = resolve_mixer(mixer, self.ssm.n_heads)
        self.mixer = nn.Sequential(nn.GELU(), *_MIXERS[mixer](d_model))
        self.dropout = nn.Dropout(dropout)

    def _finish(self, residual: Tensor, z: Tensor) -> Tensor:
        return residual + self.dropout(self.mixer(z))

    def forward(self, u: Tensor) -> Tensor:
        return self._finish(u, self.ssm(self.norm(u)))

    def step(self, u_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        z, state = self.ssm.step(self.norm(u_t), state)
        return self._finish(u_t, z), state

    def prefill(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, state = self.ssm.prefill(self.norm(u), state)
        return self._finish(u, z), state


class ESSMNet(nn.Module):
    """`net(x) -> yhat`: x (batch, L, n_in) -> yhat (batch, L, horizon, n_out).

    yhat[:, t, k] is the forecast made at position t for position t + k + 1.
    The recurrent state is a list with one (batch, S, n) complex tensor per layer.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        horizon: int,
        d_model: int = 128,
        n_layers: int = 2,
        d_state: int = 64,
        n_heads: int = 1,
        bidirectional: bool = False,
        discretization: str = "zoh",
        dropout: float = 0.0,
        init: str = "s4d-lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        mixer: str = "auto",
    ) -> None:
        super().__init__()
        resolve_mixer(mixer, 1)  # names a bad value before any layer is built
        sizes = {"n_in": n_in, "n_out": n_out, "horizon": horizon, "n_layers": n_layers, "d_model": d_model}
        n_in, n_out, horizon, n_layers, d_model = (positive_int(k, v) for k, v in sizes.items())
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.n_in, self.n_out, self.horizon = n_in, n_out, horizon
        self.encoder = nn.Linear(n_in, d_model)
        self.blocks = nn.ModuleList(
            ESSMBlock(
                d_model,
                dropout,
                mixer,
                d_state=d_state,
                n_heads=n_heads,
                bidirectional=bidirectional,
                discretization=discretization,
                init=init,
                dt_min=dt_min,
                dt_max=dt_max,
            )
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, horizon * n_out)

    def _head(self, z: Tensor) -> Tensor:
        return self.head(self.norm(z)).unflatten(-1, (self.horizon, self.n_out))

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        for block in self.blocks:
            z = block(z)
        return self._head(z)

    def initial_state(self, batch: int) -> list[Tensor]:
        return [block.ssm.initial_state(batch) for block in self.blocks]

    def step(self, x_t: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x_t (batch, n_in) -> (yhat_t (batch, horizon, n_out), new state)."""
        z = self.encoder(x_t)
        new_state = []
        for block, s in zip(self.blocks, state):
            z, s = block.step(z, s)
            new_state.append(s)
        return self._head(z), new_state

    def prefill(self, x: Tensor, state: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        """x (batch, L, n_in) from `state` (zero if None) -> (yhat (batch, L, horizon, n_out), state)."""
        state = state if state is not None else [None] * len(self.blocks)
        z = self.encoder(x)
        new_state = []
        for block, s in zip(self.blocks, state):
            z, s = block.prefill(z, s)
            new_state.append(s)
        return self._head(z), new_state
