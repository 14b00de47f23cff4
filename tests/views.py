"""One check of the three exact views every net and layer has: the convolution view `forward`,
the recurrent `step` from `initial_state`, and `prefill` (whole, and split in two with the state
carried across)."""
from __future__ import annotations

import torch


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _states(state):
    return state if isinstance(state, (list, tuple)) else [state]


def assert_views_agree(module, x: torch.Tensor, split: int, tol: float = 1e-5) -> torch.Tensor:
    """forward(x) == stepping == prefill(x) == prefill(x[:, :split]) then prefill(rest), outputs and
    final states, to a relative error <= tol. x: (batch, L, channels). Returns forward(x)."""
    with torch.no_grad():
        y = module(x)
        state, stepped = module.initial_state(x.shape[0]), []
        for t in range(x.shape[1]):
            y_t, state = module.step(x[:, t], state)
            stepped.append(y_t)
        y_pre, state_pre = module.prefill(x)
        y_a, mid = module.prefill(x[:, :split])
        y_b, end = module.prefill(x[:, split:], mid)
    assert relative_error(torch.stack(stepped, 1), y) <= tol
    assert relative_error(y_pre, y) <= tol
    assert relative_error(torch.cat([y_a, y_b], 1), y) <= tol
    for s_step, s_pre, s_end in zip(_states(state), _states(state_pre), _states(end), strict=True):
        assert relative_error(s_pre, s_step) <= tol
        assert relative_error(s_end, s_step) <= tol
    return y
