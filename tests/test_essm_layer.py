"""ESSMLayer: the convolution view against an independent NumPy recurrence, and the three views."""
import numpy as np
import pytest
import torch

from tsessm import StreamingNotSupported
from tsessm.nn import ESSMLayer
from tsessm.nn.essm_layer import lambda_powers
from views import assert_views_agree, relative_error


def numpy_recurrence(layer: ESSMLayer, u: np.ndarray) -> np.ndarray:
    """A plain loop over x_k = Lb x_{k-1} + Bb u_k, y_k = Re(C x_k) + D u_k, per head."""
    with torch.no_grad():
        Lb, Bb, C, D = (t.cpu().numpy() for t in layer.discrete_system())
    S, n = Lb.shape
    h = u.shape[-1] // S
    batch, length, _ = u.shape
    y = np.zeros_like(u)
    for b in range(batch):
        for s in range(S):
            x = np.zeros(n, dtype=np.complex128)
            for k in range(length):
                uk = u[b, k, s * h : (s + 1) * h]
                x = Lb[s] * x + Bb[s] @ uk
                y[b, k, s * h : (s + 1) * h] = (C[s] @ x).real + D[s] * uk
    return y


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("n_heads", [1, 4])
@pytest.mark.parametrize("init", ["s4d-lin", "s4d-inv", "legs"])
def test_convolution_equals_numpy_recurrence(discretization, n_heads, init):
    torch.manual_seed(0)
    layer = ESSMLayer(8, d_state=8, n_heads=n_heads, discretization=discretization, init=init,
                      dt_min=1e-2, dt_max=0.5).double()
    u = np.random.default_rng(1).standard_normal((2, 60, 8))
    y = layer(torch.from_numpy(u)).detach().numpy()
    ref = numpy_recurrence(layer, u)
    assert np.abs(y - ref).max() <= 1e-9 * max(1.0, np.abs(ref).max())


def test_discrete_system_shapes_and_dtypes():
    layer = ESSMLayer(12, d_state=6, n_heads=3)
    Lb, Bb, C, D = layer.discrete_system()
    assert Lb.shape == (3, 2) and Lb.is_complex()
    assert Bb.shape == (3, 2, 4) and Bb.is_complex()
    assert C.shape == (3, 4, 2) and C.is_complex() and (C.imag == 0).all()  # a real read-out
    assert D.shape == (3, 4) and not D.is_complex()


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_forward_step_prefill_agree_float32(discretization):
    torch.manual_seed(0)
    layer = ESSMLayer(16, d_state=16, n_heads=2, discretization=discretization)
    assert_views_agree(layer, torch.randn(3, 200, 16), split=77)


def test_prefill_from_state_equals_stepping_from_that_state():
    torch.manual_seed(0)
    layer = ESSMLayer(4, d_state=4).double()
    start = torch.randn(2, 1, 4, dtype=torch.complex128)
    u = torch.randn(2, 30, 4, dtype=torch.float64)
    y_pre, s_pre = layer.prefill(u, start)
    state, ys = start, []
    for t in range(30):
        y_t, state = layer.step(u[:, t], state)
        ys.append(y_t)
    assert torch.allclose(torch.stack(ys, 1), y_pre, atol=1e-12)
    assert torch.allclose(state, s_pre, atol=1e-12)


def test_causal_output_does_not_depend_on_future():
    torch.manual_seed(0)
    layer = ESSMLayer(8, d_state=8, n_heads=2).double()
    u = torch.randn(2, 50, 8, dtype=torch.float64)
    changed = u.clone()
    changed[:, 30:] += torch.randn(2, 20, 8, dtype=torch.float64)
    y, y2 = layer(u), layer(changed)
    # FFT round-off is the only trace the future may leave on the past
    assert (y[:, :30] - y2[:, :30]).abs().max() < 1e-12
    assert (y[:, 30:] - y2[:, 30:]).abs().max() > 1e-2


def test_bidirectional_reads_future_and_refuses_streaming():
    torch.manual_seed(0)
    layer = ESSMLayer(8, d_state=8, n_heads=2, bidirectional=True, dt_min=0.05, dt_max=0.5)
    u = torch.randn(2, 50, 8)
    changed = u.clone()
    changed[:, 30:] += 1.0
    y, y2 = layer(u), layer(changed)
    assert (y[:, :30] - y2[:, :30]).abs().max() > 1e-3
    with pytest.raises(StreamingNotSupported, match="bidirectional"):
        layer.step(u[:, 0], layer.initial_state(2))
    with pytest.raises(StreamingNotSupported, match="future|after"):
        layer.prefill(u)
    assert issubclass(StreamingNotSupported, NotImplementedError)


def test_bidirectional_equals_explicit_two_sided_sum():
    """y_k = causal part + Re(C_back sum_{j>k} Lb^{j-k} Bb u_j), summed by brute force."""
    torch.manual_seed(0)
    layer = ESSMLayer(4, d_state=4, n_heads=2, bidirectional=True, dt_min=0.05, dt_max=0.5).double()
    u = torch.randn(1, 25, 4, dtype=torch.float64)
    with torch.no_grad():
        y = layer(u).numpy()
        Lb, Bb, C, D = (t.numpy() for t in layer.discrete_system())
        C_back = layer.C_back.numpy()
    causal = numpy_recurrence(layer, u.numpy())
    un = u.numpy()[0]
    back = np.zeros_like(un)
    for k in range(25):
        for s in range(2):
            x = sum(Lb[s] ** (j - k) * (Bb[s] @ un[j, 2 * s : 2 * s + 2]) for j in range(k + 1, 25))
            if k < 24:
                back[k, 2 * s : 2 * s + 2] = (C_back[s] @ x).real
    assert np.abs(y[0] - (causal[0] + back)).max() < 1e-9


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    for bidirectional in (False, True):
        layer = ESSMLayer(8, d_state=8, n_heads=2, bidirectional=bidirectional)
        layer(torch.randn(2, 20, 8)).pow(2).mean().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("d_model,d_state,n_heads", [(16, 8, 1), (16, 8, 4), (32, 64, 8)])
def test_parameter_count_matches_block_diagonal_formula(d_model, d_state, n_heads):
    S, h, n = n_heads, d_model // n_heads, d_state // n_heads
    # per head: Lambda (n complex = 2n), log dt (n), B (n x h real), C (h x n real), D (h)
    expected = S * (2 * n + n + n * h + h * n + h)
    layer = ESSMLayer(d_model, d_state=d_state, n_heads=n_heads)
    assert sum(p.numel() for p in layer.parameters()) == expected
    # block diagonal: about 1/S of the single-head system's B and C
    if n_heads > 1:
        full = ESSMLayer(d_model, d_state=d_state, n_heads=1)
        assert layer.B.numel() * n_heads == full.B.numel()


def test_stability_is_structural_at_extreme_parameters():
    layer = ESSMLayer(4, d_state=8, n_heads=2)
    with torch.no_grad():
        for raw in (-1e4, -50.0, 0.0, 50.0, 1e4):
            layer.lambda_re_raw.fill_(raw)
            layer.lambda_im.uniform_(-1e5, 1e5)
            for log_dt in (-20.0, 0.0, 5.0):
                layer.log_dt.fill_(log_dt)
                assert (layer.continuous_lambda().real < 0).all()
                for disc in ("zoh", "bilinear"):
                    layer.discretization = disc
                    Lb = layer.discrete_system()[0]
                    assert torch.isfinite(Lb).all() and (Lb.abs() <= 1).all()


def test_float64_and_device_follow_the_module():
    layer = ESSMLayer(4, d_state=4).double()
    y = layer(torch.randn(1, 10, 4, dtype=torch.float64))
    assert y.dtype == torch.float64
    assert layer.initial_state(2).dtype == torch.complex128


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_heads"):
        ESSMLayer(10, d_state=8, n_heads=3)
    with pytest.raises(ValueError, match="discretization"):
        ESSMLayer(8, discretization="euler")
    with pytest.raises(ValueError, match="init"):
        ESSMLayer(8, init="random")


def test_long_recurrence_stays_finite_and_matches_float64():
    """100 000 float32 steps stay finite and within 1e-4 (relative) of the float64 convolution."""
    torch.manual_seed(0)
    layer32 = ESSMLayer(4, d_state=4, n_heads=2, dt_min=1e-3, dt_max=1e-1)
    layer64 = ESSMLayer(4, d_state=4, n_heads=2).double()
    layer64.load_state_dict({k: v.double() for k, v in layer32.state_dict().items()})
    n_steps = 100_000
    u = torch.randn(1, n_steps, 4, dtype=torch.float64)
    with torch.no_grad():
        reference, _ = layer64.prefill(u)
        state, stepped = layer32.initial_state(1), []
        for t in range(n_steps):
            y, state = layer32.step(u[:, t].float(), state)
            stepped.append(y)
    stepped = torch.stack(stepped, 1).double()
    assert torch.isfinite(stepped).all()
    assert relative_error(stepped, reference) <= 1e-4


@pytest.mark.parametrize("length", [0, 1, 2, 5, 96, 1000])
@pytest.mark.parametrize("first", [0, 1, 7])
def test_lambda_powers_equal_direct_exponentials(length, first):
    # the fine x coarse outer product against exp(k log Lambda_bar), in float64 where both are exact
    gen = torch.Generator().manual_seed(length + first)
    log_lam = torch.complex(-0.05 * torch.rand(2, 8, generator=gen, dtype=torch.float64),
                            3.0 * torch.rand(2, 8, generator=gen, dtype=torch.float64))
    k = torch.arange(first, first + length, dtype=torch.float64)
    expected = torch.exp(log_lam[..., None] * k)
    got = lambda_powers(log_lam, length, first=first)
    assert got.shape == (2, 8, length) and got.dtype == torch.complex128
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_length", [12, 24])  # 24 = 2L: the bidirectional mirror's support
def test_fft_convolution_gradients_equal_finite_differences(kernel_length):
    # the convolution's hand-written backward against torch's numerical gradient, in float64
    from tsessm.nn.essm_layer import _CausalFFTConv

    gen = torch.Generator().manual_seed(kernel_length)
    v = torch.randn(3, 2, 4, 12, dtype=torch.float64, generator=gen, requires_grad=True)
    kernel = torch.randn(2, 4, kernel_length, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(_CausalFFTConv.apply, (v, kernel), eps=1e-6, atol=1e-8)


def test_fft_convolution_equals_direct_causal_sum():
    from tsessm.nn.essm_layer import causal_conv

    gen = torch.Generator().manual_seed(0)
    v = torch.randn(2, 1, 3, 40, dtype=torch.float64, generator=gen)
    kernel = torch.randn(1, 3, 40, dtype=torch.float64, generator=gen)
    direct = torch.zeros_like(v)
    for k in range(40):
        for j in range(k + 1):
            direct[..., k] += kernel[..., j] * v[..., k - j]
    torch.testing.assert_close(causal_conv(v, kernel), direct, rtol=1e-10, atol=1e-10)


def test_layer_gradients_equal_a_float64_recurrence_by_autograd():
    """The whole layer's gradients (every parameter) equal those of the step-by-step recurrence."""
    torch.manual_seed(0)
    layer = ESSMLayer(6, d_state=4, n_heads=2, dt_min=0.05, dt_max=0.5).double()
    u = torch.randn(2, 30, 6, dtype=torch.float64)
    weights = torch.randn(2, 30, 6, dtype=torch.float64)

    def grads(loss):
        layer.zero_grad()
        loss.backward()
        return {name: p.grad.clone() for name, p in layer.named_parameters()}

    conv = grads((layer(u) * weights).sum())
    state, ys = layer.initial_state(2), []
    for t in range(30):
        y, state = layer.step(u[:, t], state)
        ys.append(y)
    stepped = grads((torch.stack(ys, 1) * weights).sum())
    for name in conv:
        torch.testing.assert_close(conv[name], stepped[name], rtol=1e-8, atol=1e-10, msg=name)
