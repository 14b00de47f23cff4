"""NetWrapper: the base of the nets that wrap another (`Differenced`, `Rescaled`,
`ChannelIndependent`), each with `forward / initial_state / step / prefill` of its own."""
from __future__ import annotations

from torch import nn


class NetWrapper(nn.Module):
    """Holds the wrapped net as `net`; its head (the trainer zero-initialises it) and input width
    (model files record it) show through."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def head(self) -> nn.Module:
        return self.net.head

    @property
    def n_in(self) -> int:
        return self.net.n_in
