"""ChannelIndependent: one net of one channel, run on every channel of a multivariate series.

Each of the C channels is forecast as a series of its own by the same weights (the finding behind
PatchTST and DLinear: on the multivariate benchmarks, sharing a univariate model across channels
beats mixing them). The channels become extra rows of the batch inside the wrapper; outside, the
shapes are the multivariate net's, and so is the state: every tensor of the inner state, batch
first, with the channels as a second axis (batch, C, ...), so states of several series still
concatenate and select along the first axis.
"""
from __future__ import annotations

from torch import Tensor, nn

from tsessm.nn.head import Positions
from tsessm.nn.wrapper import NetWrapper


class ChannelIndependent(NetWrapper):
    """Wraps a one-input, one-output net with `forward / initial_state / step / prefill`.

    x (batch, L, C) -> yhat (batch, L, horizon, C): channel c's forecast reads channel c only.
    """

    def __init__(self, net: nn.Module, n_channels: int) -> None:
        if getattr(net, "n_in", 1) != 1 or getattr(net, "n_out", 1) != 1:
            raise ValueError(f"ChannelIndependent wraps a net of one input and one output channel, "
                             f"got n_in={getattr(net, 'n_in', 1)}, n_out={getattr(net, 'n_out', 1)}")
        super().__init__(net)
        self.n_channels = n_channels

    @property
    def n_in(self) -> int:
        return self.n_channels

    def _series(self, x: Tensor) -> Tensor:
        """(batch, L, C) -> (batch * C, L, 1)."""
        batch, length, channels = x.shape
        return x.transpose(1, 2).reshape(batch * channels, length, 1)

    def _forecasts(self, out: Tensor, batch: int) -> Tensor:
        """(batch * C, L, H, 1) -> (batch, L, H, C)."""
        _, length, horizon, _ = out.shape
        return out.reshape(batch, self.n_channels, length, horizon).permute(0, 2, 3, 1)

    def _inner(self, state: list[Tensor]) -> list[Tensor]:
        return [s.reshape(-1, *s.shape[2:]) for s in state]

    def _outer(self, state: list[Tensor], batch: int) -> list[Tensor]:
        return [s.reshape(batch, self.n_channels, *s.shape[1:]) for s in state]

    def forward(self, x: Tensor, positions: Positions = None) -> Tensor:
        """x (batch, L, C) -> yhat (batch, L, horizon, C) from a fresh state, or at `positions` only."""
        return self._forecasts(self.net(self._series(x), positions), len(x))

    def initial_state(self, batch: int) -> list[Tensor]:
        return self._outer(self.net.initial_state(batch * self.n_channels), batch)

    def step(self, x_t: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x_t (batch, C) -> (yhat_t (batch, horizon, C), new state)."""
        batch = len(x_t)
        out, inner = self.net.step(x_t.reshape(batch * self.n_channels, 1), self._inner(state))
        return out.reshape(batch, self.n_channels, -1).transpose(1, 2), self._outer(inner, batch)

    def prefill(self, x: Tensor, state: list[Tensor] | None = None,
                positions: Positions = None) -> tuple[Tensor, list[Tensor]]:
        """x (batch, L, C) from `state` (fresh if None) -> (yhat (batch, L, horizon, C), state);
        yhat at `positions` only when given."""
        batch = len(x)
        out, inner = self.net.prefill(self._series(x), None if state is None else self._inner(state), positions)
        return self._forecasts(out, batch), self._outer(inner, batch)
