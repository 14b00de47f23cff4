"""The eSSM against an LSTM of the same width and depth: forward+backward time, size, training epochs.

`core_fwd_bwd_times` times the cores alone (the stacked eSSM blocks against `nn.LSTM`), the
paper's comparison; `etth1_epoch_times` times the forecasters' own training
loop (encoder, core, LayerNorm, horizon head, loss, AdamW), the figures of the models a user trains.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from tsessm.bench.timing import interleaved_times, medians, spread, synchronizer
from tsessm.forecasters.essm import ESSMForecaster
from tsessm.forecasters.lstm import LSTMForecaster
from tsessm.forecasters.neural import NeuralForecaster, resolve_device
from tsessm.nn import ESSMConfig
from tsessm.data import standard_stats
from tsessm.jobs import open_data
from tsessm.nn.essm_net import ESSMBlock

# What a training epoch is here, for the JSON detail.
TRAIN_METHOD = (
    "the forecasters' own training loop (NeuralForecaster.fit_scaled: windows of 2 * lookback rows, "
    "loss after a lookback // 2 burn-in, AdamW, gradient clipping) for one epoch at the forecasters' "
    "default sizes and steps per epoch, on the ETTh1 OT train split; no validation rows"
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
    return lambda: model.fit_scaled([(xs, len(xs))], [0])


CORE_METHOD = (
    "forward and backward (loss: mean square of the output) of the cores alone on random input "
    "(batch, L, d_model): n_layers eSSM blocks (LayerNorm, eSSM layer, GELU, a head mixer only with "
    "several heads, residual) against nn.LSTM(d_model, d_model, n_layers); no encoder, head or optimizer"
)


def core_fwd_bwd_times(width: dict[str, int], length: int, *, batch_size: int = 32, repeats: int = 5,
                       device: str = "cpu", seed: int = 0) -> dict:
    """Seconds of one forward+backward of the eSSM blocks and of an nn.LSTM, interleaved."""
    dev = resolve_device(device)
    d = width["d_model"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        essm = nn.Sequential(*[ESSMBlock(ESSMConfig(d_model=d, d_state=width["d_state"], n_heads=width["n_heads"]))
                               for _ in range(width["n_layers"])]).to(dev)
        lstm = nn.LSTM(d, d, width["n_layers"], batch_first=True).to(dev)
        x = torch.randn(batch_size, length, d, device=dev)

    def fwd_bwd(core: nn.Module) -> Callable[[], None]:
        def run() -> None:
            out = core(x)
            (out[0] if isinstance(out, tuple) else out).pow(2).mean().backward()
        return run
    times = interleaved_times({"essm": fwd_bwd(essm), "lstm": fwd_bwd(lstm)}, repeats=repeats, warmup=2,
                              sync=synchronizer(dev))
    med = medians(times)
    return {"length": length, "batch_size": batch_size, "repeats": repeats,
            "essm_params": n_params(essm), "lstm_params": n_params(lstm),
            "essm_ms": 1e3 * med["essm"], "lstm_ms": 1e3 * med["lstm"],
            "essm_spread": spread(times["essm"]), "lstm_spread": spread(times["lstm"]),
            "lstm_over_essm": med["lstm"] / med["essm"]}


def etth1_epoch_times(*, repeats: int, device: str, data_dir: str | None = None, seed: int = 0) -> dict:
    """Seconds per training epoch of ESSMForecaster() and LSTMForecaster() at their defaults on ETTh1 S
    (OT, the Informer train split scaled as `fit` scales it, no validation rows), interleaved."""
    models = {"essm": ESSMForecaster(epochs=1, verbose=0, random_state=seed, device=device),
              "lstm": LSTMForecaster(epochs=1, verbose=0, random_state=seed, device=device)}
    source = open_data("ETTh1", lookback=models["essm"].lookback, columns=["OT"], data_dir=data_dir)
    values = source.train.to_numpy(dtype=np.float64)
    mean, std = standard_stats(values)
    xs = ((values - mean) / std).astype(np.float32)
    times = interleaved_times({name: _epoch_fn(m, xs) for name, m in models.items()}, repeats=repeats, warmup=1,
                              sync=synchronizer(resolve_device(device)))
    med = medians(times)
    shown = ("lookback", "d_model", "n_layers", "d_state", "n_heads", "mixer", "batch_size", "dropout")
    return {"data": "ETTh1 S (OT), Informer train split", "rows": len(values), "repeats": repeats,
            "params": {name: {k: v for k, v in m.get_params().items() if k in shown} for name, m in models.items()},
            "essm_s": med["essm"], "lstm_s": med["lstm"], "essm_all_s": times["essm"], "lstm_all_s": times["lstm"],
            "lstm_over_essm": med["lstm"] / med["essm"]}
