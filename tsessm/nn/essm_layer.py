"""The eSSM layer: block-diagonal diagonal MIMO state spaces with a real read-in and read-out.

Per head s (of S), with h = d_model // S channels and n = d_state // S complex states, the
authors' efficient form (ESSM.md section 4b):

    x_k = Lambda_bar * x_{k-1} + b_bar * (B @ u_k)   (Lambda_bar, b_bar: (n,) complex; B: (n, h) real)
    y_k = C @ Re(x_k) + D * u_k                       (C: (h, n) real, D: (h,))

Because B u is real, Re(x_k) = sum_j K[j] * (B u)_{k-j} with the real kernel
K[j] = Re(b_bar * Lambda_bar^j): `forward` projects first, convolves each state channel with
its kernel by one real FFT of length 2L (time on the last axis), then reads out. `step` and
`prefill` carry the complex state x explicitly: two exact views of one operator.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsessm.errors import StreamingNotSupported
from tsessm.nn.config import ESSMConfig
from tsessm.nn.init import INITS


class StepOperator(NamedTuple):
    """What one recurrent step needs, per head: x <- lambda_bar * x + b_bar * (B u); y = C Re(x) + D u."""

    lambda_bar: Tensor  # (S, n) complex
    b_bar: Tensor  # (S, n) complex
    B: Tensor  # (S, n, h) real
    C: Tensor  # (S, h, n) real
    D: Tensor  # (S, h) real


def _softplus_inverse(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


def lambda_powers(log_lambda_bar: Tensor, length: int, first: int = 0) -> Tensor:
    """Lambda_bar^k for k = first, ..., first + length - 1: (..., length) complex, time last.

    log_lambda_bar: (...,) complex. An outer product of ~sqrt(length) fine and ~sqrt(length)
    coarse powers, so a long kernel costs one complex multiply per entry rather than one complex
    exp (several times dearer).
    """
    block = math.isqrt(max(length - 1, 0)) + 1  # fine powers 0..block-1, block * block >= length
    real = log_lambda_bar.real.dtype
    fine = torch.arange(block, device=log_lambda_bar.device, dtype=real)
    coarse = torch.arange(first, first + length, block, device=log_lambda_bar.device, dtype=real)
    fine = torch.exp(log_lambda_bar[..., None] * fine)  # (..., block)
    coarse = torch.exp(log_lambda_bar[..., None] * coarse)  # (..., ceil(length / block))
    return (coarse[..., :, None] * fine[..., None, :]).flatten(-2)[..., :length]


class _CausalFFTConv(torch.autograd.Function):
    """x[..., k] = sum_m K[..., m] v[..., k - m] over the last axis, by real FFTs of length 2L.

    v: (batch, S, n, L) real; kernel: (S, n, M) real with M <= 2L (lags beyond L - 1 wrap to
    negative lags: the bidirectional mirror). Returns (batch, S, n, L). The backward pass is written
    out (two more FFTs, the kernel's gradient summed over the batch before its inverse FFT) instead
    of autograd's, which pads, copies and conjugates complex tensors several times over.
    """

    @staticmethod
    def forward(ctx, v: Tensor, kernel: Tensor) -> Tensor:
        length = v.shape[-1]
        v_f = torch.fft.rfft(v, n=2 * length)
        k_f = torch.fft.rfft(kernel, n=2 * length)
        ctx.save_for_backward(v_f, k_f)
        ctx.kernel_length = kernel.shape[-1]
        return torch.fft.irfft(v_f * k_f, n=2 * length)[..., :length]

    @staticmethod
    @torch.autograd.function.once_differentiable  # the written-out backward is not itself differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        v_f, k_f = ctx.saved_tensors
        length = grad.shape[-1]
        g_f = torch.fft.rfft(grad, n=2 * length)
        grad_v = grad_k = None
        if ctx.needs_input_grad[0]:  # correlation with the kernel
            grad_v = torch.fft.irfft(g_f * k_f.conj(), n=2 * length)[..., :length]
        if ctx.needs_input_grad[1]:  # correlation of the output's gradient with the input
            # sum_b conj(V_b) G_b in one reduction (a product then a sum would materialise both)
            grad_k = torch.fft.irfft(torch.linalg.vecdot(v_f, g_f, dim=0), n=2 * length)[..., :ctx.kernel_length]
        return grad_v, grad_k


def causal_conv(v: Tensor, kernel: Tensor) -> Tensor:
    """x_k = sum_{j<=k} K[j] v_{k-j}: v (batch, S, n, L), kernel (S, n, L) -> (batch, S, n, L)."""
    return _CausalFFTConv.apply(v, kernel)


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

    Parameters per head: B (n x h) and C (h x n) real, D (h), Lambda (n complex), log Delta (n):
    S (2 n h + h + 3 n) in all.
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
        config = ESSMConfig(d_model=d_model, d_state=d_state, n_heads=n_heads, bidirectional=bidirectional,
                            discretization=discretization, init=init, dt_min=dt_min, dt_max=dt_max)  # checks
        d_model, d_state, n_heads = config.d_model, config.d_state, config.n_heads
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
        self.B = nn.Parameter(torch.randn(S, n, h) / math.sqrt(h))
        self.C = nn.Parameter(torch.randn(S, h, n) / math.sqrt(n))
        self.D = nn.Parameter(torch.randn(S, h))
        if bidirectional:  # the future is read out through its own C, same Lambda and B
            self.C_back = nn.Parameter(torch.randn(S, h, n) / math.sqrt(n))

    @classmethod
    def from_config(cls, config: ESSMConfig) -> "ESSMLayer":
        """The layer of one block of a net built from `config`."""
        return cls(config.d_model, config.d_state, config.n_heads, config.bidirectional, config.discretization,
                   config.init, config.dt_min, config.dt_max)

    # ----- the discretised system -------------------------------------------------------
    def continuous_lambda(self) -> Tensor:
        """(S, n) complex eigenvalues, Re < 0 by construction."""
        re = -(F.softplus(self.lambda_re_raw) + self._re_floor)
        return torch.complex(re, self.lambda_im)

    def _discretize_states(self) -> tuple[Tensor, Tensor]:
        """(log Lambda_bar, b_bar), both (S, n) complex: B_bar = b_bar * B."""
        lam = self.continuous_lambda()
        dt = torch.exp(self.log_dt).to(lam.dtype)
        if self.discretization == "zoh":
            log_lambda_bar = dt * lam
            b_bar = torch.expm1(log_lambda_bar) / lam
        else:
            denom = 1 - dt * lam / 2
            log_lambda_bar = torch.log((1 + dt * lam / 2) / denom)
            b_bar = dt / denom
        return log_lambda_bar, b_bar

    def step_operator(self) -> StepOperator:
        """The recurrence's pieces, cached without autograd until a parameter changes, so one
        `step` costs a handful of small tensor ops, not a rediscretisation."""
        if torch.is_grad_enabled():
            return self._compute_step_operator()
        # the layer's own parameters (it has no submodules): cheaper than walking self.parameters()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self._parameters.values())
        if getattr(self, "_cache_key", None) != key:
            self._cache = self._compute_step_operator()
            self._cache_key = key
        return self._cache

    def _compute_step_operator(self) -> StepOperator:
        log_lambda_bar, b_bar = self._discretize_states()
        return StepOperator(torch.exp(log_lambda_bar), b_bar, self.B, self.C, self.D)

    def discrete_system(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(Lambda_bar (S, n), B_bar (S, n, h), C (S, h, n), D (S, h)) of the causal recurrence.

        Lambda_bar, B_bar and C are complex (C with a zero imaginary part), so that
        x_k = Lambda_bar * x_{k-1} + B_bar @ u_k, y_k = Re(C @ x_k) + D * u_k holds exactly.
        For a bidirectional layer this is the causal (past) half only.
        """
        log_lambda_bar, b_bar = self._discretize_states()
        B_bar = b_bar[..., None] * self.B.to(b_bar.dtype)
        return torch.exp(log_lambda_bar), B_bar, self.C.to(b_bar.dtype), self.D

    def _kernel(self, length: int) -> tuple[Tensor, Tensor]:
        """(b_bar * Lambda_bar^k for k < length (S, n, length) complex, its real part contiguous)."""
        log_lambda_bar, b_bar = self._discretize_states()
        k = b_bar[..., None] * lambda_powers(log_lambda_bar, length)
        return k, k.real.contiguous()

    # ----- shared pieces ----------------------------------------------------------------
    def _project(self, u: Tensor) -> Tensor:
        """B @ u per head, time last: u (batch, L, d_model) -> v (batch, S, n, L) real."""
        if self.n_heads == 1:
            return torch.matmul(self.B[0], u.transpose(1, 2)).unsqueeze(1)
        return torch.einsum("sic,blsc->bsil", self.B, u.unflatten(-1, (self.n_heads, self.h)))

    def _readout(self, x: Tensor, C: Tensor, u: Tensor | None) -> Tensor:
        """C @ x (+ D u) per head: x (batch, S, n, L) real -> (batch, L, d_model)."""
        if self.n_heads == 1:
            y = torch.matmul(x[:, 0].transpose(1, 2), C[0].T)
        else:
            y = torch.einsum("sci,bsil->blsc", C, x).flatten(-2)
        return y if u is None else torch.addcmul(y, self.D.reshape(-1), u)

    def _check_streamable(self, what: str) -> None:
        if self.bidirectional:
            raise StreamingNotSupported(
                f"{what} is not available for a bidirectional eSSM layer: its output at time t "
                "depends on inputs after t, which a stream has not seen yet"
            )

    # ----- convolution view -------------------------------------------------------------
    def forward(self, u: Tensor) -> Tensor:
        """u: (batch, L, d_model) -> y: (batch, L, d_model), by one real FFT convolution."""
        length = u.shape[1]
        _, kernel = self._kernel(length)  # (S, n, L) real
        v = self._project(u)  # (batch, S, n, L)
        y = self._readout(causal_conv(v, kernel), self.C, u)
        if self.bidirectional:
            # Mirror kernel: x_back_k = sum_{j>k} K[j-k] v_j, the kernel at negative lags (wrapped
            # to the end of the 2L support), so the present is counted once.
            mirror = torch.cat([kernel.new_zeros(*kernel.shape[:-1], length + 1), kernel[..., 1:].flip(-1)], -1)
            y = y + self._readout(causal_conv(v, mirror), self.C_back, None)
        return y

    # ----- recurrent view ---------------------------------------------------------------
    def initial_state(self, batch: int) -> Tensor:
        """The zero state: (batch, S, n) complex, on the parameters' device and dtype."""
        dtype = torch.complex128 if self.B.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.n_heads, self.n, dtype=dtype, device=self.B.device)

    def step(self, u_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One observation: u_t (batch, d_model), state (batch, S, n) -> (y_t, new state)."""
        self._check_streamable("step")
        op = self.step_operator()
        u_h = u_t.unflatten(-1, (self.n_heads, self.h))  # (batch, S, h)
        v = (op.B @ u_h[..., None]).squeeze(-1)  # (batch, S, n) real
        state = op.lambda_bar * state + op.b_bar * v
        y = (op.C @ state.real[..., None]).squeeze(-1) + op.D * u_h
        return y.flatten(-2), state

    def prefill(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Convolution view over u (batch, L, d_model) starting from `state` (zero if None).

        Returns y (batch, L, d_model) and the state after the last step, (batch, S, n);
        equal to calling `step` L times.
        """
        self._check_streamable("prefill")
        length = u.shape[1]
        k_complex, kernel = self._kernel(length)
        v = self._project(u)  # (batch, S, n, L)
        x = causal_conv(v, kernel)
        # The complex state after the last step: sum_j b_bar Lambda_bar^(L-1-j) v_j (+ the carried one).
        weights = k_complex.flip(-1)
        last = torch.complex((v * weights.real).sum(-1), (v * weights.imag).sum(-1))
        if state is not None:
            log_lambda_bar, _ = self._discretize_states()
            carried = lambda_powers(log_lambda_bar, length, first=1) * state[..., None]  # (batch, S, n, L)
            x = x + carried.real
            last = last + carried[..., -1]
        return self._readout(x, self.C, u), last
