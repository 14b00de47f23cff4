"""The eSSM against an LSTM of the same width and depth: training time per epoch and size.

Both sides are the forecasters' own nets (`ESSMForecaster` / `LSTMForecaster`: encoder, core,
LayerNorm, horizon head), so the figures are those of the models a user trains.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from torch import nn

from tsessm.bench.timing import interleaved_times, medians, spread, synchronizer
from tsessm.forecasters.essm import ESSMForecaster
from tsessm.forecasters.lstm import LSTMForecaster
from tsessm.forecasters.neural import NeuralForecaster, resolve_device

# What a training epoch is here, for the JSON detail.
TRAIN_METHOD = (
    "the forecasters' own training loop (NeuralForecaster._fit_segments: windows of 2 * lookback rows, "
    "loss after a lookback // 2 burn-in, AdamW, gradient clipping) for one epoch of a fixed number of "
    "optimizer steps on a random univariate series; no validation split"
)


def forecasters(width: dict[str, int], **params: Any) -> dict[str, NeuralForecaster]:
    """The eSSM and the LSTM forecaster at one width/depth (`width`: d_model, n_layers, d_state, n_heads)."""
    lstm_width = {k: width[k] for k in ("d_model", "n_layers")}
    return {"essm": ESSMForecaster(**width, **params), "lstm": LSTMForecaster(**lstm_width, **params)}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(width: dict[str, int], heads: list[int], n_in: int = 1, horizon: int = 24) -> list[dict]:
    """Whole-net and core parameter counts of both forecasters' nets, one row per head count.

    core = the ESSM blocks (layer, norm, mixer) vs the nn.LSTM; encoder and head are shared sizes.
    Head counts that do not divide d_model and d_state are left out.
    """
    lstm = forecasters(width, horizon=horizon)["lstm"]._build_net(n_in, n_in)
    rows = []
    for h in sorted(set(heads)):
        if width["d_model"] % h or width["d_state"] % h:
            continue
        essm = forecasters({**width, "n_heads": h}, horizon=horizon)["essm"]._build_net(n_in, n_in)
        core = sum(n_params(b) for b in essm.blocks)
        rows.append({
            "n_heads": h,
            "essm_total": n_params(essm), "lstm_total": n_params(lstm),
            "total_ratio": n_params(essm) / n_params(lstm),
            "essm_core": core, "essm_ssm_layers": sum(n_params(b.ssm) for b in essm.blocks),
            "lstm_core": n_params(lstm.lstm), "core_ratio": core / n_params(lstm.lstm),
        })
    return rows


def _epoch_fn(model: NeuralForecaster, xs: np.ndarray) -> Callable[[], None]:
    """One epoch of the forecaster's real training from a fresh net (no validation rows)."""
    return lambda: model._fit_segments([(xs, len(xs))], [0])


def train_epoch_times(width: dict[str, int], lookback: int, *, steps: int, repeats: int, device: str,
                      batch_size: int = 32, horizon: int = 24, seed: int = 0) -> dict:
    """Seconds per training epoch of `steps` optimizer steps, eSSM and LSTM interleaved."""
    rng = np.random.default_rng(seed)
    rows = max(4 * lookback, 2 * lookback + horizon + 10 * batch_size)
    xs = np.cumsum(rng.standard_normal((rows, 1)), axis=0).astype(np.float32)
    xs = (xs - xs.mean()) / xs.std()
    common = dict(horizon=horizon, lookback=lookback, batch_size=batch_size, epochs=1, verbose=0,
                  random_state=seed, device=device)
    models = forecasters(width, steps_per_epoch=steps, **common)
    # Warm-up: one single-step epoch each (allocator, thread pools), not timed.
    for model in forecasters(width, steps_per_epoch=1, **common).values():
        _epoch_fn(model, xs)()
    times = interleaved_times({name: _epoch_fn(m, xs) for name, m in models.items()}, repeats=repeats,
                              warmup=0, sync=synchronizer(resolve_device(device)))
    med = medians(times)
    return {
        "lookback": lookback, "window_rows": 2 * lookback, "steps_per_epoch": steps, "batch_size": batch_size,
        "repeats": repeats, "essm_s": med["essm"], "lstm_s": med["lstm"],
        "essm_spread": spread(times["essm"]), "lstm_spread": spread(times["lstm"]),
        "essm_all_s": times["essm"], "lstm_all_s": times["lstm"],
        "lstm_over_essm": med["lstm"] / med["essm"],
    }

