"""The forecast head every net ends with: LayerNorm, then one Linear to horizon x n_out values
per position (position-wise, so it serves the convolution and the recurrent views alike).

On long horizons the head is most of a forward pass (L x d_model x horizon x n_out
multiply-adds against the body's L x d_model^2), so the nets' `forward` takes `positions`: the
head then runs at those positions only, with the same values there."""
from __future__ import annotations

from typing import Union

from torch import Tensor, nn

# Positions along L to forecast at: an index tensor or a slice; None = every position.
Positions = Union[Tensor, slice, None]


class HorizonHead:
    """Mixin for an nn.Module: `_build_head` adds `norm` and `head` (their names are the weights'
    names in model files), `_head` applies them."""

    horizon: int
    n_out: int

    def _build_head(self, d_model: int, horizon: int, n_out: int) -> None:
        self.horizon, self.n_out = horizon, n_out
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, horizon * n_out)

    def _head(self, z: Tensor, positions: Positions = None) -> Tensor:
        """z (batch, L, d_model) -> (batch, L, horizon, n_out), or (batch, P, horizon, n_out) at
        `positions` (P of them); z may also be (batch, d_model) with positions None."""
        if positions is not None:
            z = z[:, positions]
        return self.head(self.norm(z)).unflatten(-1, (self.horizon, self.n_out))
