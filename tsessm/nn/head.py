"""The forecast head every net ends with: LayerNorm, then one Linear to horizon x n_out values
per position (position-wise, so it serves the convolution and the recurrent views alike)."""
from __future__ import annotations

from torch import Tensor, nn


class HorizonHead:
    """Mixin for an nn.Module: `_build_head` adds `norm` and `head` (their names are the weights'
    names in model files), `_head` applies them."""

    horizon: int
    n_out: int

    def _build_head(self, d_model: int, horizon: int, n_out: int) -> None:
        self.horizon, self.n_out = horizon, n_out
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, horizon * n_out)

    def _head(self, z: Tensor) -> Tensor:
        """z (..., d_model) -> (..., horizon, n_out)."""
        return self.head(self.norm(z)).unflatten(-1, (self.horizon, self.n_out))
