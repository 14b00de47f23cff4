"""RecurrentEngine: a net's recurrent view as plain numpy, for one observation at a time.

One `net.step` through torch modules costs about a millisecond on a CPU, almost all of it
operator dispatch and module calls around 128-element vectors. The engine reads the weights
once, folds every position-wise affine map it can (LayerNorm's scale and shift into the next
matrix, the head's norm into the head), and then advances all layers and the head with a few
dozen numpy calls: tens of microseconds, for one series or a batch of series at once.

`compile_engine(net)` takes an `ESSMNet`, an `LSTMNet`, or `Differenced` / `Rescaled` / `ChannelIndependent` wrappers (in
eval mode: dropout is off). `engine.step(x_t, state)` equals `net.step` on the same inputs, with
the state as the same list of arrays (numpy instead of torch, same shapes and dtypes), so the two
are interchangeable mid-stream. Weights are captured when compiled: recompile after training.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.special import ndtr
from torch import nn

from tsessm.nn.channels import ChannelIndependent
from tsessm.nn.differenced import Differenced
from tsessm.nn.essm_net import ESSMNet
from tsessm.nn.lstm_net import LSTMNet
from tsessm.nn.rescaled import EPS, Rescaled

State = list[np.ndarray]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    """(S, r, c) per-head blocks -> (S r, S c) dense block-diagonal matrix."""
    S, r, c = blocks.shape
    out = np.zeros((S * r, S * c), dtype=blocks.dtype)
    for s in range(S):
        out[s * r:(s + 1) * r, s * c:(s + 1) * c] = blocks[s]
    return out


class _Normalise:
    """LayerNorm without its affine part (folded into what follows): z (batch, d) -> same.

    Means as a product with a (d, 1) column of 1/d: one BLAS call instead of numpy's `mean`,
    which costs several microseconds of Python per call.
    """

    def __init__(self, norm: nn.LayerNorm, dtype: np.dtype) -> None:
        d = norm.normalized_shape[-1]
        self.average = np.full((d, 1), 1.0 / d, dtype=dtype)
        self.eps = norm.eps

    def __call__(self, z: np.ndarray) -> np.ndarray:
        centred = z - z @ self.average
        return centred / np.sqrt((centred * centred) @ self.average + self.eps)


def _gelu(y: np.ndarray) -> np.ndarray:
    """nn.GELU() (the exact form y * Phi(y), Phi the normal CDF): two numpy calls."""
    return y * ndtr(y)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * a) + 1.0)


class _Affine:
    """y = x @ W.T + b, with LayerNorm(norm)'s scale and shift folded in when given."""

    def __init__(self, linear_weight: np.ndarray, bias: np.ndarray | None, norm: nn.LayerNorm | None = None):
        weight = linear_weight
        bias = np.zeros(weight.shape[0], weight.dtype) if bias is None else bias
        if norm is not None:
            gamma, beta = _numpy(norm.weight), _numpy(norm.bias)
            bias = bias + weight @ beta
            weight = weight * gamma
        self.weight_t = np.ascontiguousarray(weight.T)
        self.bias = bias

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight_t + self.bias


class _ESSMBlockEngine:
    """norm -> eSSM layer -> GELU -> (mixer) -> + residual, for one step."""

    def __init__(self, block: nn.Module) -> None:
        layer = block.ssm
        with torch.no_grad():
            op = layer.step_operator()
        S, n = op.lambda_bar.shape
        self.shape = (S, n)
        self.normalise = _Normalise(block.norm, _numpy(op.B).dtype)
        self.lambda_bar = _numpy(op.lambda_bar).reshape(-1)  # (N,) complex
        # b_bar * (B u) with u = gamma * normed + beta, as one complex affine map of normed
        read_in = _Affine(_block_diagonal(_numpy(op.B)), None, block.norm)
        b_bar = _numpy(op.b_bar).reshape(-1)
        self.read_in_t, self.read_in_bias = read_in.weight_t * b_bar, read_in.bias * b_bar
        self.read_out_t = np.ascontiguousarray(_block_diagonal(_numpy(op.C)).T)  # (N, d)
        gamma, beta = _numpy(block.norm.weight), _numpy(block.norm.bias)
        D = _numpy(op.D).reshape(-1)
        self.skip_scale, self.skip_shift = D * gamma, D * beta
        self.mixer = [m for m in block.mixer if not isinstance(m, nn.GELU)]  # after the activation
        self.mix = None
        if self.mixer:
            first = self.mixer[0]
            self.mix = _Affine(_numpy(first.weight), _numpy(first.bias))
            self.glu = any(isinstance(m, nn.GLU) for m in self.mixer)

    def step(self, z: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z (batch, d), state (batch, S, n) complex -> (z_next, state_next)."""
        normed = self.normalise(z)
        x = self.lambda_bar * state.reshape(len(z), -1) + (normed @ self.read_in_t + self.read_in_bias)
        y = x.real @ self.read_out_t + normed * self.skip_scale + self.skip_shift
        y = _gelu(y)
        if self.mix is not None:
            y = self.mix(y)
            if self.glu:
                half = y.shape[-1] // 2
                y = y[:, :half] * _sigmoid(y[:, half:])
        return z + y, x.reshape(len(z), *self.shape)


class _Head:
    """LayerNorm -> Linear head -> (batch, horizon, n_out), the norm folded into the head."""

    def __init__(self, net: nn.Module) -> None:
        self.normalise = _Normalise(net.norm, _numpy(net.head.weight).dtype)
        self.linear = _Affine(_numpy(net.head.weight), _numpy(net.head.bias), net.norm)
        self.shape = (net.horizon, net.n_out)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.linear(self.normalise(z)).reshape(len(z), *self.shape)


class ESSMEngine:
    """ESSMNet.step in numpy. State: one (batch, S, n) complex array per layer."""

    def __init__(self, net: ESSMNet) -> None:
        self.encoder = _Affine(_numpy(net.encoder.weight), _numpy(net.encoder.bias))
        self.blocks = [_ESSMBlockEngine(b) for b in net.blocks]
        self.head = _Head(net)

    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """x_t (batch, n_in) -> (yhat_t (batch, horizon, n_out), new state)."""
        z = self.encoder(x_t)
        new_state = []
        for block, s in zip(self.blocks, state):
            z, s = block.step(z, s)
            new_state.append(s)
        return self.head(z), new_state


class LSTMEngine:
    """LSTMNet.step in numpy. State [h, c], each (batch, n_layers, d_model)."""

    def __init__(self, net: LSTMNet) -> None:
        self.encoder = _Affine(_numpy(net.encoder.weight), _numpy(net.encoder.bias))
        lstm = net.lstm
        # gates = [x, h] @ [W_ih; W_hh].T + b_ih + b_hh, in torch's order (input, forget, cell, output)
        self.layers = [
            (np.ascontiguousarray(np.concatenate([_numpy(getattr(lstm, f"weight_ih_l{k}")),
                                                  _numpy(getattr(lstm, f"weight_hh_l{k}"))], 1).T),
             _numpy(getattr(lstm, f"bias_ih_l{k}")) + _numpy(getattr(lstm, f"bias_hh_l{k}")))
            for k in range(lstm.num_layers)
        ]
        self.d = lstm.hidden_size
        self.head = _Head(net)

    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """x_t (batch, n_in) -> (yhat_t (batch, horizon, n_out), new state [h, c])."""
        h_all, c_all = state
        z, hs, cs, d = self.encoder(x_t), [], [], self.d
        for k, (weight_t, bias) in enumerate(self.layers):
            gates = np.concatenate([z, h_all[:, k]], 1) @ weight_t + bias
            i, f, o = _sigmoid(gates[:, :d]), _sigmoid(gates[:, d:2 * d]), _sigmoid(gates[:, 3 * d:])
            c = f * c_all[:, k] + i * np.tanh(gates[:, 2 * d:3 * d])
            z = o * np.tanh(c)
            hs.append(z)
            cs.append(c)
        return self.head(z), [np.stack(hs, 1), np.stack(cs, 1)]


class DifferencedEngine:
    """Differenced.step in numpy: the inner engine fed x_t - last (zero before the first row)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self._ones: dict[tuple, np.ndarray] = {}  # the "seen" flags after a step, one array a shape

    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        *inner, last, seen = state
        out, inner = self.inner.step((x_t - last) * seen, inner)
        ones = self._ones.get((seen.shape, seen.dtype))
        if ones is None:
            ones = self._ones[(seen.shape, seen.dtype)] = np.ones_like(seen)  # shared, never written
        return out, [*inner, x_t, ones]


class RescaledEngine:
    """Rescaled.step in numpy: the moving mean square of the differences scales the inner
    engine's input down and its forecasts up."""

    def __init__(self, inner, beta: float, targets: list[int]) -> None:
        self.inner, self.beta, self.targets = inner, beta, np.asarray(targets)

    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        *inner, total, weight = state
        total, weight = self.beta * total + x_t * x_t, self.beta * weight + 1.0
        sigma = np.sqrt(total / weight + EPS)
        out, inner = self.inner.step(x_t / sigma, inner)
        return out * sigma[:, None, self.targets], [*inner, total, weight]


class ChannelIndependentEngine:
    """ChannelIndependent.step in numpy, around the inner net's engine."""

    def __init__(self, inner, n_channels: int) -> None:
        self.inner = inner
        self.n_channels = n_channels

    def step(self, x_t: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        batch, C = len(x_t), self.n_channels
        out, inner = self.inner.step(x_t.reshape(batch * C, 1), [s.reshape(batch * C, *s.shape[2:]) for s in state])
        return (np.ascontiguousarray(out.reshape(batch, C, -1).transpose(0, 2, 1)),
                [s.reshape(batch, C, *s.shape[1:]) for s in inner])


def compile_engine(net: nn.Module):
    """The numpy recurrent engine of `net` (ESSMNet, LSTMNet, or Differenced / Rescaled / ChannelIndependent of these)."""
    if isinstance(net, Differenced):
        return DifferencedEngine(compile_engine(net.net))
    if isinstance(net, Rescaled):
        return RescaledEngine(compile_engine(net.net), net.beta, net.targets.tolist())
    if isinstance(net, ChannelIndependent):
        return ChannelIndependentEngine(compile_engine(net.net), net.n_channels)
    if isinstance(net, ESSMNet):
        for block in net.blocks:
            block.ssm._check_streamable("a recurrent engine")
        return ESSMEngine(net)
    if isinstance(net, LSTMNet):
        return LSTMEngine(net)
    raise TypeError(f"no recurrent engine for {type(net).__name__}")
