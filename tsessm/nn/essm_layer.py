"""The eSSM layer: block-diagonal diagonal complex MIMO state spaces with two exact views.

Per head s (of S), with h = d_model // S channels and n = d_state // S complex states:

    x_k = Lambda_bar * x_{k-1} + B_bar @ u_k        (Lambda_bar: (n,), B_bar: (n, h))
    y_k = Re(C @ x_k) + D * u_k                      (C: (h, n), D: (h,))

`forward` evaluates this as a convolution ("project first, then convolve each state channel
with its Vandermonde kernel by FFT"); `step` and `prefill` carry the state x explicitly.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsessm.checks import positive_int
from tsessm.errors import StreamingNotSupported
from tsessm.nn.init import INITS

DISCRETIZATIONS = ("zoh", "bilinear")


class _Operator(NamedTuple):
    """The discretised layer as the views use it (S heads, n states, h channels per head)."""

    log_lambda_bar: Tensor  # (S, n) complex
    lambda_bar: Tensor  # (S, n) complex
    # Real weights on interleaved (Re, Im) pairs -- torch's own layout of a complex tensor, so
    # the projection is viewed as complex and the state as real without copying either.
    w_in: Tensor  # (S, h, 2n): u -> (Re v_1, Im v_1, Re v_2, ...) of v = B_bar u
    w_out: Tensor  # (S, 2n, h): (Re x_1, Im x_1, ...) -> Re(C x)
    w_back: Tensor | None  # (S, 2n, h), the future's read-out (bidirectional only)


def _softplus_inverse(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


def _interleaved_readout(C: Tensor) -> Tensor:
    """C (2, S, h, n) as (re, im) -> (S, 2n, h) read-out weights on interleaved (Re x, Im x) pairs."""
    S, h, n = C.shape[1:]
    return torch.stack([C[0], -C[1]], dim=-1).reshape(S, h, 2 * n).transpose(1, 2)


def lambda_powers(log_lambda_bar: Tensor, length: int, first: int = 0) -> Tensor:
    """Lambda_bar^k for k = first, ..., first + length - 1: (length, S, n) complex.

    As an outer product of ~sqrt(length) fine and ~sqrt(length) coarse powers, so a long kernel
    costs one complex multiply per entry rather than one complex exp (several times dearer).
    """
    block = math.isqrt(max(length - 1, 0)) + 1  # fine powers 0..block-1, block * block >= length
    real = log_lambda_bar.real.dtype
    fine = torch.arange(block, device=log_lambda_bar.device, dtype=real)
    coarse = torch.arange(first, first + length, block, device=log_lambda_bar.device, dtype=real)
    fine = torch.exp(fine[:, None, None] * log_lambda_bar)  # (block, S, n)
    coarse = torch.exp(coarse[:, None, None] * log_lambda_bar)  # (ceil(length / block), S, n)
    return (coarse[:, None] * fine[None]).flatten(0, 1)[:length]


def causal_state_conv(v: Tensor, log_lambda_bar: Tensor) -> Tensor:
    """x_k = sum_{j<=k} Lambda_bar^j v_{k-j} for every k, by FFT of length 2L (no wrap-around).

    v: (batch, L, S, n) complex; log_lambda_bar: (S, n) complex. Returns (batch, L, S, n).
    """
    length = v.shape[1]
    kernel = lambda_powers(log_lambda_bar, length)  # (L, S, n)
    n_fft = 2 * length
    x = torch.fft.ifft(torch.fft.fft(v, n=n_fft, dim=1) * torch.fft.fft(kernel, n=n_fft, dim=0), dim=1)
    return x[:, :length]


class ESSMLayer(nn.Module):
    """The pure state-space core: `(batch, length, d_model) -> (batch, length, d_model)`.

    Args:
        d_model: channels H; split into `n_heads` heads of h = H / S channels.
        d_state: total complex states N; each head has n = N / S.
        n_heads: number of independent heads S (block-diagonal system).
        bidirectional: also read the future through the mirrored kernel (no streaming form).
        discretization: "zoh" or "bilinear".
        init: eigenvalue initialisation, "s4d-lin", "s4d-inv" or "legs".
        dt_min, dt_max: range of the log-uniform initial step size Delta (one per state).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        n_heads: int = 1,
        bidirectional: bool = False,
        discretization: str = "zoh",
        init: str = "s4d-lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        d_model, d_state, n_heads = (positive_int(k, v) for k, v in
                                     (("d_model", d_model), ("d_state", d_state), ("n_heads", n_heads)))
        if d_model % n_heads or d_state % n_heads:
            raise ValueError(
                f"n_heads={n_heads} must divide d_model={d_model} and d_state={d_state}"
            )
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)}, got {init!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state, self.n_heads = d_model, d_state, n_heads
        self.bidirectional, self.discretization = bidirectional, discretization
        S, h, n = n_heads, d_model // n_heads, d_state // n_heads
        self.h, self.n = h, n

        lam = torch.as_tensor(INITS[init](n), dtype=torch.complex64).expand(S, n)
        # Re(lambda) = -(softplus(raw) + floor): negative for every parameter value.
        self._re_floor = 1e-4
        self.lambda_re_raw = nn.Parameter(_softplus_inverse(-lam.real - self._re_floor).clone())
        self.lambda_im = nn.Parameter(lam.imag.clone())
        log_dt = torch.rand(S, n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.B = nn.Parameter(torch.randn(2, S, n, h) / math.sqrt(2 * h))  # (re, im)
        self.C = nn.Parameter(torch.randn(2, S, h, n) / math.sqrt(n))  # (re, im)
        self.D = nn.Parameter(torch.randn(S, h))
        if bidirectional:  # the future is read out through its own C, same Lambda and B
            self.C_back = nn.Parameter(torch.randn(2, S, h, n) / math.sqrt(n))

    # ----- the discretised system -------------------------------------------------------
    def continuous_lambda(self) -> Tensor:
        """(S, n) complex eigenvalues, Re < 0 by construction."""
        re = -(F.softplus(self.lambda_re_raw) + self._re_floor)
        return torch.complex(re, self.lambda_im)

    def _discretize(self) -> _Operator:
        """The discretised operator in the form the views use.

        Without autograd (streaming) the result is cached until a parameter changes, so one
        `step` costs a handful of small tensor ops, not a rediscretisation.
        """
        if torch.is_grad_enabled():
            return self._compute_operator()
        # the layer's own parameters (it has no submodules): cheaper than walking self.parameters()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self._parameters.values())
        if getattr(self, "_cache_key", None) != key:
            self._cache = self._compute_operator()
            self._cache_key = key
        return self._cache

    def _discretize_states(self) -> tuple[Tensor, Tensor]:
        """(log Lambda_bar (S, n), B_bar (S, n, h)), both complex."""
        lam = self.continuous_lambda()
        dt = torch.exp(self.log_dt).to(lam.dtype)
        B = torch.complex(self.B[0], self.B[1])
        if self.discretization == "zoh":
            log_lambda_bar = dt * lam
            scale = torch.expm1(log_lambda_bar) / lam
        else:
            denom = 1 - dt * lam / 2
            log_lambda_bar = torch.log((1 + dt * lam / 2) / denom)
            scale = dt / denom
        return log_lambda_bar, scale[..., None] * B

    def _compute_operator(self) -> _Operator:
        log_lambda_bar, B_bar = self._discretize_states()
        # Re(C x) = C_re Re(x) - C_im Im(x): the read-out pairs are (C_re, -C_im).
        w_in = torch.view_as_real(B_bar).permute(0, 2, 1, 3).reshape(self.n_heads, self.h, 2 * self.n)
        w_out = _interleaved_readout(self.C)
        w_back = _interleaved_readout(self.C_back) if self.bidirectional else None
        return _Operator(log_lambda_bar, torch.exp(log_lambda_bar), w_in, w_out, w_back)

    def discrete_system(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(Lambda_bar (S, n), B_bar (S, n, h), C (S, h, n), D (S, h)) of the causal recurrence.

        For a bidirectional layer this is the causal (past) half only.
        """
        log_lambda_bar, B_bar = self._discretize_states()
        return torch.exp(log_lambda_bar), B_bar, torch.complex(self.C[0], self.C[1]), self.D

    # ----- shared pieces ----------------------------------------------------------------
    def _heads(self, u: Tensor) -> Tensor:
        return u.reshape(*u.shape[:-1], self.n_heads, self.h)

    def _per_head_matmul(self, a: Tensor, w: Tensor) -> Tensor:
        """(..., S, i) @ (S, i, o) -> (..., S, o): one matmul for one head, else batched over heads."""
        if self.n_heads == 1:
            return (a.squeeze(-2) @ w[0]).unsqueeze(-2)
        lead = a.shape[:-2]
        a = a.reshape(-1, self.n_heads, a.shape[-1]).transpose(0, 1)
        return torch.bmm(a, w).transpose(0, 1).reshape(*lead, self.n_heads, w.shape[-1])

    def _project(self, u: Tensor, w_in: Tensor) -> Tensor:
        """B_bar @ u per head: (..., d_model) real -> (..., S, n) complex, a view of the product."""
        v = self._per_head_matmul(self._heads(u), w_in)
        return torch.view_as_complex(v.unflatten(-1, (self.n, 2)))

    def _readout(self, x: Tensor, w_out: Tensor, u: Tensor | None) -> Tensor:
        """Re(C @ x) (+ D u) per head: x (..., S, n) complex -> (..., d_model) real."""
        y = self._per_head_matmul(torch.view_as_real(x).flatten(-2), w_out)
        if u is not None:
            y = y + self.D * self._heads(u)
        return y.reshape(*y.shape[:-2], self.d_model)

    def _check_streamable(self, what: str) -> None:
        if self.bidirectional:
            raise StreamingNotSupported(
                f"{what} is not available for a bidirectional eSSM layer: its output at time t "
                "depends on inputs after t, which a stream has not seen yet"
            )

    # ----- convolution view -------------------------------------------------------------
    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, d_model) -> y: (batch, L, d_model), by FFT convolution."""
        op = self._discretize()
        v = self._project(u, op.w_in)
        x = causal_state_conv(v, op.log_lambda_bar)
        y = self._readout(x, op.w_out, u)
        if self.bidirectional:
            # Mirror kernel: x_back_k = sum_{j>k} Lambda_bar^{j-k} v_j (the present counted once).
            x_back = causal_state_conv(v.flip(1), op.log_lambda_bar).flip(1) - v
            y = y + self._readout(x_back, op.w_back, None)
        return y

    # ----- recurrent view ---------------------------------------------------------------
    def initial_state(self, batch: int) -> Tensor:
        """The zero state: (batch, S, n) complex, on the parameters' device and dtype."""
        dtype = torch.complex128 if self.B.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.n_heads, self.n, dtype=dtype, device=self.B.device)

    def step(self, u_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One observation: u_t (batch, d_model), state (batch, S, n) -> (y_t, new state)."""
        self._check_streamable("step")
        op = self._discretize()
        state = op.lambda_bar * state + self._project(u_t, op.w_in)
        return self._readout(state, op.w_out, u_t), state

    def prefill(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Convolution view over u (batch, L, d_model) starting from `state` (zero if None).

        Returns y (batch, L, d_model) and the state after the last step, (batch, S, n);
        equal to calling `step` L times.
        """
        self._check_streamable("prefill")
        op = self._discretize()
        x = causal_state_conv(self._project(u, op.w_in), op.log_lambda_bar)
        if state is not None:
            # The carried state decays as Lambda_bar^(k+1) into position k.
            x = x + lambda_powers(op.log_lambda_bar, u.shape[1], first=1) * state[:, None]
        return self._readout(x, op.w_out, u), x[:, -1]
