"""Rescaled: a causal, streaming RevIN. The net reads its input divided by a trailing scale and
its forecasts are multiplied by the scale at the forecast origin.

RevIN (Kim et al., 2022) normalises each input window by its own mean and standard deviation
and puts them back on the forecast, so a model trained at one scale forecasts at another. Here
the level is taken care of by first differences and the relative anchor (`Differenced`); this
wrapper adds the scale. It sits inside `Differenced`, reads the differences d_s and keeps an
exponential moving average of d_s^2 (pandas' `ewm(span=span, adjust=True)`: the weighted average
of the rows seen so far, with no zero prior; from a fresh state the first row's difference is the
forced 0 of `Differenced`, which counts as a row, so the first few scales come out a little low):

    sigma_s = sqrt(ewm(d^2)_s + EPS),   net input d_s / sigma_s,   forecast at t: sigma_t * net_t

Multiplying a series by c > 0 multiplies every sigma by c (up to EPS), leaves the net's input
as it was and multiplies the forecast's change by c: the model is scale-equivariant, as RevIN
makes a model, and unlike per-window RevIN it needs O(1) state (a moving sum per column and one
total weight), so forward, prefill, step and the numpy engine compute the same function (to
float rounding) and a stream never recomputes a window.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tsessm.checks import positive_int
from tsessm.nn.head import Positions
from tsessm.nn.wrapper import NetWrapper

# Variance floor (scaled units): a flat stretch gives sigma = 0.01, not a division by zero.
EPS = 1e-4
# Rows per matrix product of the moving-average scan.
_SCAN_CHUNK = 64


def decay(span: int) -> float:
    """pandas' span convention: the weight of a row `k` rows back is (1 - 2 / (span + 1)) ** k."""
    return 1.0 - 2.0 / (positive_int("span", span) + 1.0)


def ewm_scan(v: Tensor, total: Tensor, weight: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """The weighted sums S_s = beta S_{s-1} + v_s and W_s = beta W_{s-1} + 1 along L.

    v (batch, L, C); total (batch, C) and weight (batch, 1): S and W before the first row (zero
    for a fresh state). Returns (S / W at every row (batch, L, C), the last S, the last W): the
    adjusted moving average. Chunks of rows go through one matrix product each (beta^(i-j)).
    """
    out = []
    k = torch.arange(_SCAN_CHUNK, device=v.device, dtype=v.dtype)
    powers = beta ** (k[:, None] - k[None, :]).clamp_min(0) * (k[:, None] >= k[None, :])  # (K, K)
    carry = beta ** (k + 1)  # (K,): what the sums before the chunk weigh at row i of it
    for chunk in v.split(_SCAN_CHUNK, dim=1):
        n = chunk.shape[1]
        sums = torch.einsum("ij,bjc->bic", powers[:n, :n], chunk) + carry[:n, None] * total[:, None]
        weights = powers[:n, :n].sum(1)[None, :, None] + carry[:n, None] * weight[:, None]
        out.append(sums / weights)
        total, weight = sums[:, -1], weights[:, -1]
    return torch.cat(out, dim=1), total, weight


class Rescaled(NetWrapper):
    """Wraps a net with `forward / initial_state / step / prefill` (ESSMNet, LSTMNet,
    ChannelIndependent) that reads differences and forecasts changes.

    `targets`: the input columns the net's outputs forecast (their scales multiply the outputs).
    The state is the inner net's list plus the moving sum of d^2 (batch, n_in) and its total
    weight (batch, 1).
    """

    def __init__(self, net: nn.Module, span: int, targets: list[int]) -> None:
        targets = list(targets)
        n_out = getattr(net, "n_out", len(targets))
        if not targets or len(targets) != n_out or not all(0 <= t < net.n_in for t in targets):
            raise ValueError(f"targets must name the net's {n_out} forecast column(s) among its {net.n_in} "
                             f"inputs, got {targets}")
        super().__init__(net)
        self.span, self.beta = span, decay(span)
        self.register_buffer("targets", torch.as_tensor(targets, dtype=torch.long), persistent=False)

    def _scales(self, d: Tensor, state: list[Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        if state is None:
            total, weight = d.new_zeros(d.shape[0], d.shape[2]), d.new_zeros(d.shape[0], 1)
        else:
            total, weight = state
        mean_square, total, weight = ewm_scan(d * d, total, weight, self.beta)
        return torch.sqrt(mean_square + EPS), total, weight

    def _out(self, out: Tensor, sigma: Tensor, positions: Positions = None) -> Tensor:
        """out (batch, [P,] H, k) times the targets' scales: sigma (batch, [L,] C), taken at
        `positions` when given."""
        if positions is not None:
            sigma = sigma[:, positions]
        return out * sigma[..., self.targets].unsqueeze(-2)

    def forward(self, x: Tensor, positions: Positions = None) -> Tensor:
        """x (batch, L, n_in) differences -> yhat (batch, L, horizon, n_out), or at `positions` only."""
        sigma, _, _ = self._scales(x, None)
        return self._out(self.net(x / sigma, positions), sigma, positions)

    def initial_state(self, batch: int) -> list[Tensor]:
        p = next(self.net.parameters())
        return [*self.net.initial_state(batch), p.new_zeros(batch, self.n_in), p.new_zeros(batch, 1)]

    def step(self, x_t: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x_t (batch, n_in) -> (yhat_t (batch, horizon, n_out), new state)."""
        *inner, total, weight = state
        total, weight = self.beta * total + x_t * x_t, self.beta * weight + 1.0
        sigma = torch.sqrt(total / weight + EPS)
        out, inner = self.net.step(x_t / sigma, inner)
        return self._out(out, sigma), [*inner, total, weight]

    def prefill(self, x: Tensor, state: list[Tensor] | None = None,
                positions: Positions = None) -> tuple[Tensor, list[Tensor]]:
        """x (batch, L, n_in) from `state` (fresh if None) -> (yhat (batch, L, horizon, n_out), state);
        yhat at `positions` only when given."""
        inner = None if state is None else state[:-2]
        sigma, total, weight = self._scales(x, None if state is None else state[-2:])
        out, inner = self.net.prefill(x / sigma, inner, positions)
        return self._out(out, sigma, positions), [*inner, total, weight]
