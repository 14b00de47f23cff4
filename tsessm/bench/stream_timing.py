"""The cost of absorbing one observation: eSSM `observe` (and update+predict) against the alternatives.

Each pair is timed interleaved in blocks (BLOCK calls of A, BLOCK of B, ...) and summarised by
the medians of the block means, so machine noise hits both sides alike. Blocks, not single
calls: alternating a torch call with a numpy one call by call makes each pay for the other's
idle OpenMP threads (4.1 ms -> 6.4 ms for a recompute, 0.10 -> 0.43 ms for an observe, measured
side by side), which says more about the alternation than about either side. One small fitted
eSSM (`base_model`) is copied for every measure.
"""
from __future__ import annotations

import copy
import statistics
import warnings
from typing import Callable

import numpy as np
import pandas as pd
import torch

from tsessm.bench.timing import interleaved_times, medians, synchronizer, time_call
from tsessm.forecasters.essm import ESSMForecaster
from tsessm.forecasters.panel import PanelForecaster

HORIZON = 24
WARMUP = 5  # untimed update+predict calls before each interleaved pair
BLOCK = 25  # calls of one side timed back to back per repeat
HOUR = pd.Timedelta(hours=1)


def series(n: int, start: str | pd.Timestamp = "2000-01-01", seed: int = 0) -> pd.DataFrame:
    """An hourly series with daily and weekly cycles and noise, column "y"."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = np.sin(2 * np.pi * t / 24) + 0.3 * np.sin(2 * np.pi * t / 168) + 0.1 * rng.standard_normal(n)
    return pd.DataFrame({"y": y}, index=pd.date_range(start, periods=n, freq="h"))


def base_model(width: dict[str, int], device: str, seed: int = 0) -> ESSMForecaster:
    """A small fitted eSSM (a few steps: its weights do not change what is timed)."""
    return ESSMForecaster(horizon=HORIZON, lookback=96, **width, epochs=1, steps_per_epoch=5, verbose=0,
                          random_state=seed, device=device).fit(series(1_000))


def _next_rows(model: ESSMForecaster, n: int, seed: int) -> pd.DataFrame:
    """n rows that continue the model's series."""
    return series(n, start=model.last_index_[0] + HOUR, seed=seed)


def _stepper(model: ESSMForecaster, future: pd.DataFrame) -> Callable[[], None]:
    """Each call absorbs the next row of `future` and forecasts."""
    rows = iter(range(len(future)))

    def step() -> None:
        i = next(rows)
        model.update(future.iloc[i : i + 1])
        model.predict()
    return step


def _observer(model: ESSMForecaster, future: pd.DataFrame) -> Callable[[], None]:
    """Each call hands the next row of `future` to `observe` (the stream's path): absorb + forecast."""
    rows = iter(zip(future.index, future.to_numpy()))

    def step() -> None:
        time, values = next(rows)
        model.observe(values, time)
    return step


def _sync(model: ESSMForecaster) -> Callable[[], None] | None:
    return synchronizer(model.device_)


def history_latency(base: ESSMForecaster, long_rows: int, repeats: int) -> dict:
    """observe (one row in, the forecast out) with ~1k rows of history against `long_rows` rows."""
    if long_rows <= base.n_seen_:
        raise ValueError(f"the long history ({long_rows} rows) must exceed the short one ({base.n_seen_})")
    short, long = copy.deepcopy(base), copy.deepcopy(base)
    long.update(_next_rows(long, long_rows - base.n_seen_, seed=1))  # one prefill
    rows = {"short": int(short.n_seen_), "long": int(long.n_seen_)}
    n = (repeats + WARMUP + 10) * BLOCK
    times = interleaved_times({"short": _observer(short, _next_rows(short, n, seed=2)),
                               "long": _observer(long, _next_rows(long, n, seed=2))},
                              repeats=repeats, warmup=WARMUP, inner=BLOCK, sync=_sync(base))
    med = medians(times)
    return {"history_short_rows": rows["short"], "history_long_rows": rows["long"],
            "observe_ms_short": 1e3 * med["short"], "observe_ms_long": 1e3 * med["long"],
            "repeats": repeats, "long_over_short": med["long"] / med["short"]}


def recompute_vs_observe(base: ESSMForecaster, window: int, repeats: int) -> dict:
    """A forward pass of the net over the last `window` rows against one `observe` (row in, forecast out).

    The recompute side is the bare net forward (no scaling, no pandas), so the ratio is a floor.
    """
    model = copy.deepcopy(base)
    x = torch.zeros((1, window, model.net_.n_in), device=model.device_)

    def recompute() -> None:
        with torch.no_grad():
            model.net_(x)
    rows = _next_rows(model, (repeats + WARMUP + 10) * BLOCK, seed=3)
    times = interleaved_times({"recompute": recompute, "observe": _observer(model, rows)},
                              repeats=repeats, warmup=WARMUP, inner=BLOCK, sync=_sync(model))
    med = medians(times)
    return {"window": window, "recompute_ms": 1e3 * med["recompute"], "observe_ms": 1e3 * med["observe"],
            "repeats": repeats, "recompute_over_observe": med["recompute"] / med["observe"]}


def observe_latency(base: ESSMForecaster, repeats: int) -> dict:
    """Median seconds of one new observation -> new forecast: `observe` and update(1 row)+predict()."""
    fast, api = copy.deepcopy(base), copy.deepcopy(base)
    n = (repeats + WARMUP + 10) * BLOCK
    times = interleaved_times({"observe": _observer(fast, _next_rows(fast, n, seed=6)),
                               "update_predict": _stepper(api, _next_rows(api, n, seed=6))},
                              repeats=repeats, warmup=WARMUP, inner=BLOCK, sync=_sync(base))
    med = medians(times)
    return {"horizon": HORIZON, "repeats": repeats, "block": BLOCK, "observe_ms": 1e3 * med["observe"],
            "update_predict_ms": 1e3 * med["update_predict"],
            "observe_block_p90_ms": 1e3 * float(np.quantile(times["observe"], 0.9)),
            "update_predict_block_p90_ms": 1e3 * float(np.quantile(times["update_predict"], 0.9))}


def recompute_vs_step(base: ESSMForecaster, window: int, repeats: int) -> dict:
    """Like for like at the net: a forward pass over the last `window` rows against one `net.step`.

    Both sides are bare torch calls on the fitted net (no scaling, no pandas, no forecast copy),
    so this isolates what the recurrence saves from what the public API costs per call.
    """
    net = copy.deepcopy(base).net_
    device = next(net.parameters()).device
    x = torch.zeros((1, window, net.n_in), device=device)
    x_t = torch.zeros((1, net.n_in), device=device)
    with torch.no_grad():
        state = {"s": net.prefill(x)[1]}

        def recompute() -> None:
            net(x)

        def step() -> None:
            state["s"] = net.step(x_t, state["s"])[1]
        times = interleaved_times({"recompute": recompute, "step": step}, repeats=repeats, warmup=WARMUP,
                                  inner=BLOCK, sync=synchronizer(device))
    med = medians(times)
    return {"window": window, "recompute_ms": 1e3 * med["recompute"], "step_ms": 1e3 * med["step"],
            "repeats": repeats, "block": BLOCK, "recompute_over_step": med["recompute"] / med["step"]}


def arima_vs_update(base: ESSMForecaster, repeats: int) -> dict:
    """statsmodels SARIMAX(2,0,1) `extend` by one row + 24-step forecast against eSSM `observe`."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = {"res": SARIMAX(series(1_000)["y"].to_numpy(), order=(2, 0, 1), trend="c").fit(disp=False)}
    arima_rows = iter(series((repeats + WARMUP + 10) * BLOCK, seed=4)["y"].to_numpy())

    def arima_step() -> None:
        res = state["res"].extend(np.array([next(arima_rows)]))
        res.forecast(HORIZON)
        state["res"] = res
    model = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # extend() warns about the index it does not have
        rows = _next_rows(model, (repeats + WARMUP + 10) * BLOCK, seed=5)
        times = interleaved_times({"arima": arima_step, "essm": _observer(model, rows)},
                                  repeats=repeats, warmup=WARMUP, inner=BLOCK, sync=_sync(model))
    med = medians(times)
    return {"arima_order": [2, 0, 1], "arima_extend_forecast_ms": 1e3 * med["arima"],
            "essm_observe_ms": 1e3 * med["essm"], "repeats": repeats,
            "arima_over_essm": med["arima"] / med["essm"]}


def panel_throughput(width: dict[str, int], n_series: int, rounds: int, device: str, seed: int = 0) -> dict:
    """Observations per second of `PanelForecaster.observe`: one new row for each of n_series per round."""
    lookback = 48
    rng = np.random.default_rng(seed)
    t = np.arange(2 * lookback + 2)
    ids = np.repeat(np.arange(n_series), len(t))
    frame = pd.DataFrame({
        "unique_id": ids,
        "ds": pd.Timestamp("2000-01-01") + pd.to_timedelta(np.tile(t, n_series), unit="h"),
        "y": np.sin(np.tile(t, n_series) / 7 + ids) + 0.1 * rng.standard_normal(len(ids)),
    })
    model = ESSMForecaster(horizon=HORIZON, lookback=lookback, **width, epochs=1, steps_per_epoch=3,
                           verbose=0, random_state=seed, device=device)
    panel = PanelForecaster(model)
    setup = time_call(lambda: panel.fit(frame))
    sync = synchronizer(panel.model_.device_)
    all_ids, last = list(panel.ids_), panel.last_time_[0]
    round_no = iter(range(1, rounds + 1))

    def observe_round() -> None:
        r = next(round_no)
        panel.observe(all_ids, [last + r * HOUR] * n_series, rng.standard_normal((n_series, 1)))
    seconds = [time_call(observe_round, sync=sync) for _ in range(rounds)]
    median = statistics.median(seconds)
    return {"n_series": n_series, "rounds": rounds, "fit_and_prefill_s": setup, "round_s": median,
            "round_all_s": seconds, "obs_per_s": n_series / median}
