"""LSTMNet: the recurrent baseline with the same interface as ESSMNet.

encoder (Linear) -> nn.LSTM (n_layers, dropout between layers) -> LayerNorm -> horizon head

The LSTM is recurrent by nature, so the three views are one computation: `forward` is
`prefill` from the zero state, and `step` is `prefill` over one position.
"""
from __future__ import annotations

from torch import Tensor, nn

from tsessm.checks import positive_int
from tsessm.nn.head import HorizonHead, Positions


class LSTMNet(HorizonHead, nn.Module):
    """`net(x) -> yhat`: x (batch, L, n_in) -> yhat (batch, L, horizon, n_out).

    yhat[:, t, k] is the forecast made at position t for position t + k + 1.
    The recurrent state is a list [h, c] of two (batch, n_layers, d_model) tensors: batch first,
    like every tsessm net's state, so many series' states stack along dimension 0.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        horizon: int,
        d_model: int = 128,
        n_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        sizes = {"n_in": n_in, "n_out": n_out, "horizon": horizon, "d_model": d_model, "n_layers": n_layers}
        n_in, n_out, horizon, d_model, n_layers = (positive_int(k, v) for k, v in sizes.items())
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.n_in, self.d_model, self.n_layers = n_in, d_model, n_layers
        self.encoder = nn.Linear(n_in, d_model)
        # nn.LSTM applies dropout to the outputs of every layer but the last (none for one layer).
        self.lstm = nn.LSTM(d_model, d_model, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self._build_head(d_model, horizon, n_out)

    def forward(self, x: Tensor, positions: Positions = None) -> Tensor:
        """x (batch, L, n_in) -> yhat (batch, L, horizon, n_out) from the zero state, or at `positions` only."""
        return self._head(self._body(x, None)[0], positions)

    def initial_state(self, batch: int) -> list[Tensor]:
        """The zero state: [h, c], each (batch, n_layers, d_model) on the parameters' device/dtype."""
        p = self.encoder.weight
        zeros = p.new_zeros(batch, self.n_layers, self.d_model)
        return [zeros, zeros.clone()]

    def step(self, x_t: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x_t (batch, n_in) -> (yhat_t (batch, horizon, n_out), new state [h, c])."""
        yhat, state = self.prefill(x_t[:, None], state)
        return yhat[:, 0], state

    def prefill(self, x: Tensor, state: list[Tensor] | None = None,
                positions: Positions = None) -> tuple[Tensor, list[Tensor]]:
        """x (batch, L, n_in) from `state` (zero if None) -> (yhat (batch, L, horizon, n_out), [h, c]);
        yhat at `positions` only when given."""
        z, state = self._body(x, state)
        return self._head(z, positions), state

    def _body(self, x: Tensor, state: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        """x (batch, L, n_in) from `state` (zero if None) -> (LSTM outputs (batch, L, d_model), [h, c])."""
        if state is None:
            state = self.initial_state(x.shape[0])
        h0, c0 = (s.transpose(0, 1).contiguous() for s in state)  # nn.LSTM wants layers first
        z, (h, c) = self.lstm(self.encoder(x), (h0, c0))
        return z, [h.transpose(0, 1), c.transpose(0, 1)]
