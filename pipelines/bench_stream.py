"""Streaming benchmark: the cost of absorbing one observation, measured side by side in one run.

Prints four ratios (the goals in parentheses):
  1. update(1 obs)+predict latency, history 100k / history 1k            (<= 1.2: O(1) per obs)
  2. recomputing a 720-row window / recurrent update(1 obs)+predict     (>= 50)
  3. batched observations per second over 10 000 series                 (>= 100 000 /s)
  4. statsmodels SARIMAX extend per obs / eSSM update(1 obs)+predict    (>= 10)
Each pair is timed interleaved (A, B, A, B, ...) and summarised by medians, so machine noise
hits both sides alike.

    python pipelines/bench_stream.py [--d-model 64] [--n-series 10000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
import torch

from tsessm import ESSMForecaster
from tsessm.forecasters.panel import PanelForecaster


def _series(n: int, start: str = "2000-01-01", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = np.sin(2 * np.pi * t / 24) + 0.3 * np.sin(2 * np.pi * t / 168) + 0.1 * rng.standard_normal(n)
    return pd.DataFrame({"y": y}, index=pd.date_range(start, periods=n, freq="h"))


def _interleaved(a, b, repeats: int) -> tuple[float, float]:
    """Median seconds of a() and b(), called alternately."""
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); a(); ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); b(); tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _stepper(model: ESSMForecaster, future: pd.DataFrame):
    rows = iter(range(len(future)))

    def step():
        i = next(rows)
        model.update(future.iloc[i : i + 1])
        model.predict()
    return step


def bench_history(args) -> dict:
    base = _series(1_000)
    model = ESSMForecaster(horizon=24, lookback=96, d_model=args.d_model, n_layers=args.n_layers,
                           d_state=args.d_state, epochs=1, steps_per_epoch=5, verbose=0, random_state=0,
                           device="cpu").fit(base)
    long_hist = _series(100_000, seed=1)
    path = os.path.join(tempfile.mkdtemp(prefix="tsessm-bench-"), "model.pkl")
    model.save(path)
    short = ESSMForecaster.load(path)
    long = ESSMForecaster.load(path)
    # Give `long` 99 000 more rows of history (one prefill), then both stream the same kind of rows.
    shift = pd.Timedelta(hours=1000)
    long.update(long_hist.iloc[:99_000].set_axis(long_hist.index[:99_000] + shift))
    short_future = _series(args.repeats + 10, start=str(base.index[-1] + pd.Timedelta(hours=1)), seed=2)
    long_future = short_future.set_axis(
        pd.date_range(long.last_index_[0] + pd.Timedelta(hours=1), periods=len(short_future), freq="h"))
    t_short, t_long = _interleaved(_stepper(short, short_future), _stepper(long, long_future), args.repeats)

    window = torch.as_tensor(np.zeros((1, 720, 1), dtype=np.float32))
    fresh = ESSMForecaster.load(path)
    more = _series(args.repeats + 10, start=str(base.index[-1] + pd.Timedelta(hours=1)), seed=3)

    def recompute():
        with torch.no_grad():
            fresh.net_(window)
    t_recompute, t_update = _interleaved(recompute, _stepper(fresh, more), args.repeats)
    return {"update_predict_ms_history_1k": t_short * 1e3, "update_predict_ms_history_100k": t_long * 1e3,
            "ratio_100k_over_1k": t_long / t_short, "recompute_720_ms": t_recompute * 1e3,
            "update_predict_ms": t_update * 1e3, "ratio_recompute_over_update": t_recompute / t_update,
            "model": model}


def bench_panel(args) -> dict:
    n, lookback = args.n_series, 96
    rng = np.random.default_rng(0)
    t = np.arange(lookback + 2)
    ids = np.repeat(np.arange(n), len(t))
    frame = pd.DataFrame({
        "unique_id": ids,
        "ds": pd.Timestamp("2000-01-01") + pd.to_timedelta(np.tile(t, n), unit="h"),
        "y": np.sin(np.tile(t, n) / 7 + ids) + 0.1 * rng.standard_normal(len(ids)),
    })
    model = ESSMForecaster(horizon=24, lookback=lookback // 2, d_model=args.d_model, n_layers=args.n_layers,
                           d_state=args.d_state, epochs=1, steps_per_epoch=3, verbose=0, random_state=0,
                           device="cpu")
    t0 = time.perf_counter()
    panel = PanelForecaster(model).fit(frame)
    setup = time.perf_counter() - t0
    last = panel.last_time_[0]
    all_ids = list(panel.ids_)
    rounds = []
    for r in range(args.panel_rounds):
        when = [last + pd.Timedelta(hours=r + 1)] * n
        values = rng.standard_normal((n, 1))
        t0 = time.perf_counter()
        panel.observe(all_ids, when, values)
        rounds.append(time.perf_counter() - t0)
    seconds = statistics.median(rounds)
    return {"panel_series": n, "panel_setup_s": setup, "panel_round_s": seconds, "panel_obs_per_s": n / seconds}


def bench_arima(args, essm: ESSMForecaster) -> dict:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    base = _series(1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = {"res": SARIMAX(base["y"].to_numpy(), order=(2, 0, 1), trend="c").fit(disp=False)}
    future = _series(args.repeats + 10, seed=4)["y"].to_numpy()
    arima_rows = iter(future)

    def arima_step():
        res = state["res"].extend(np.array([next(arima_rows)]))
        res.forecast(24)
        state["res"] = res
    more = _series(args.repeats + 10, start=str(essm.last_index_[0] + pd.Timedelta(hours=1)), seed=5)
    t_arima, t_essm = _interleaved(arima_step, _stepper(essm, more), args.repeats)
    return {"arima_extend_forecast_ms": t_arima * 1e3, "essm_update_predict_ms": t_essm * 1e3,
            "ratio_arima_over_essm": t_arima / t_essm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--n-series", type=int, default=10_000)
    parser.add_argument("--panel-rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)
    history = bench_history(args)
    essm = history.pop("model")
    results = {**history, **bench_arima(args, essm), **bench_panel(args),
               "torch_threads": torch.get_num_threads(),
               "config": f"d_model={args.d_model} n_layers={args.n_layers} d_state={args.d_state} horizon=24"}
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
