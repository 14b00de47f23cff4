"""Differenced: feed a causal net the first differences of its input, with a streaming form.

x_t - x_{t-1}, and 0 at the first row the net sees. Together with a relative output (forecast =
current value + net output) the forecast moves with the level of the series: adding a constant
to the whole history adds it to the forecast. That is what per-window normalisation (subtracting
the last value, RevIN) buys the newer forecasters under distribution shift, but it needs only the
previous row, so training windows, batch prediction and one-step updates agree exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tsessm.nn.head import Positions
from tsessm.nn.wrapper import NetWrapper


def first_differences(x: Tensor) -> Tensor:
    """x (batch, L, n_in) -> (batch, L, n_in): x_t - x_{t-1}, zero at t = 0."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)


class Differenced(NetWrapper):
    """Wraps a net with `forward / initial_state / step / prefill` (ESSMNet, LSTMNet).

    The state is the inner net's list plus two batch-first tensors: the last row seen
    (batch, n_in) and whether there was one (batch, 1), so a fresh state gives a zero difference.
    """

    def forward(self, x: Tensor, positions: Positions = None) -> Tensor:
        """x (batch, L, n_in) -> yhat (batch, L, horizon, n_out) from a fresh state, or at `positions` only."""
        return self.net(first_differences(x), positions)

    def initial_state(self, batch: int) -> list[Tensor]:
        p = next(self.net.parameters())
        return [*self.net.initial_state(batch), p.new_zeros(batch, self.n_in), p.new_zeros(batch, 1)]

    def step(self, x_t: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x_t (batch, n_in) -> (yhat_t (batch, horizon, n_out), new state)."""
        *inner, last, seen = state
        out, inner = self.net.step((x_t - last) * seen, inner)
        return out, [*inner, x_t, torch.ones_like(seen)]

    def prefill(self, x: Tensor, state: list[Tensor] | None = None,
                positions: Positions = None) -> tuple[Tensor, list[Tensor]]:
        """x (batch, L, n_in) from `state` (fresh if None) -> (yhat (batch, L, horizon, n_out), state);
        yhat at `positions` only when given."""
        if state is None:
            inner, diffs = None, first_differences(x)
        else:
            *inner, last, seen = state
            head = (x[:, :1] - last[:, None]) * seen[:, None]
            diffs = torch.cat([head, x[:, 1:] - x[:, :-1]], dim=1)
        out, inner = self.net.prefill(diffs, inner, positions)
        return out, [*inner, x[:, -1], x.new_ones(x.shape[0], 1)]
