"""ESSMNet: a deep causal eSSM that forecasts the next `horizon` steps at every position.

encoder -> n_layers x [norm -> ESSMLayer -> GELU -> (head mixer) -> dropout -> + residual]
        -> norm -> horizon head

As in the authors' layer, a position-wise head mixer follows the activation only when there are
several heads (`mixer="auto"`): with one head the MIMO B and C already mix every channel.

Everything but the ESSMLayer is position-wise, so the convolution view (`forward`), the
recurrent view (`step`) and `prefill` compute the same function.
"""
from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from tsessm.checks import positive_int
from tsessm.nn.config import ESSMConfig
from tsessm.nn.essm_layer import ESSMLayer
from tsessm.nn.head import HorizonHead, Positions

# The position-wise mixer that lets the heads talk: none, "linear" (d^2 weights) or "glu" (2 d^2).
_MIXERS = {
    "none": lambda d: [],
    "linear": lambda d: [nn.Linear(d, d)],
    "glu": lambda d: [nn.Linear(d, 2 * d), nn.GLU(dim=-1)],
}


class ESSMBlock(nn.Module):
    """One residual block of a net built from `config`; `forward`, `step` and `prefill` mirror
    ESSMLayer's."""

    def __init__(self, config: ESSMConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.ssm = ESSMLayer.from_config(config)
        self.mixer = nn.Sequential(nn.GELU(), *_MIXERS[config.resolved_mixer](config.d_model))
        self.dropout = nn.Dropout(config.dropout)

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


class ESSMNet(HorizonHead, nn.Module):
    """`net(x) -> yhat`: x (batch, L, n_in) -> yhat (batch, L, horizon, n_out).

    yhat[:, t, k] is the forecast made at position t for position t + k + 1.
    The recurrent state is a list with one (batch, S, n) complex tensor per layer.

    The architecture is an `ESSMConfig`, given whole (`config=`) or by its fields as keywords
    (`d_model=..., n_layers=...`), which replace the config's (default: ESSMConfig()).
    """

    def __init__(self, n_in: int, n_out: int, horizon: int, config: ESSMConfig | None = None, **fields) -> None:
        super().__init__()
        config = replace(config or ESSMConfig(), **fields)  # checked once, in ESSMConfig
        n_in, n_out, horizon = (positive_int(k, v) for k, v in (("n_in", n_in), ("n_out", n_out), ("horizon", horizon)))
        self.config, self.n_in = config, n_in
        self.encoder = nn.Linear(n_in, config.d_model)
        self.blocks = nn.ModuleList(ESSMBlock(config) for _ in range(config.n_layers))
        self._build_head(config.d_model, horizon, n_out)

    def forward(self, x: Tensor, positions: Positions = None) -> Tensor:
        """x (batch, L, n_in) -> yhat (batch, L, horizon, n_out), or at `positions` only (P of L)."""
        z = self.encoder(x)
        for block in self.blocks:
            z = block(z)
        return self._head(z, positions)

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

    def prefill(self, x: Tensor, state: list[Tensor] | None = None,
                positions: Positions = None) -> tuple[Tensor, list[Tensor]]:
        """x (batch, L, n_in) from `state` (zero if None) -> (yhat (batch, L, horizon, n_out), state);
        yhat at `positions` only when given."""
        state = state if state is not None else [None] * len(self.blocks)
        z = self.encoder(x)
        new_state = []
        for block, s in zip(self.blocks, state):
            z, s = block.prefill(z, s)
            new_state.append(s)
        return self._head(z, positions), new_state
