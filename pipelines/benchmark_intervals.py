"""Prediction-interval benchmark: per-step coverage and width of the eSSM's and ARIMA's intervals.

For each data set's univariate target at one horizon, fit the eSSM (the accuracy benchmark's
parameters for that cell) and ARIMA (order="auto") on the Informer train split, then backtest
the test split at a nominal coverage: one-pass (the stream's state, intervals recalibrated
online as the values arrive) and windowed (the static calibration). Writes one row per (data
set, model, mode) with the mean and the worst step's coverage and the mean width (scaled), the
per-step table next to it, and a plot of both models' one-pass bands (step 1, last 300 origins).

    python pipelines/benchmark_intervals.py --datasets ETTh1,ETTm1,WTH --horizon 24 --coverage 0.9
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from tsessm import datasets, jobs
from tsessm.bench.accuracy import Cell, cell_params, load_config
from tsessm.bench.options import DEFAULT_CONFIG
from tsessm.plotting import plot_backtest
from tsessm.tracking import git_commit

OUT = Path("pipelines") / "results" / "intervals.csv"


def run(dataset: str, horizon: int, coverage: float, seed: int, config: dict,
        plot: Path | None = None) -> tuple[list[dict], pd.DataFrame]:
    rows, steps, one_pass = [], [], {}
    for name in ("essm", "arima"):
        params = cell_params(Cell(dataset, "S", horizon, name), config, seed)
        if name == "arima":
            params = {"horizon": horizon, "order": "auto", "verbose": 0, "lookback": params["lookback"]}
        lookback = params["lookback"]
        source = jobs.open_data(dataset, lookback=lookback, columns=[datasets.target(dataset)])
        accepted = jobs.model_class(name)().get_params()
        model = jobs.make_model(name, **{k: v for k, v in params.items() if k != "lookback" or k in accepted})
        started = time.perf_counter()
        jobs.train(model, source)
        fit_seconds = time.perf_counter() - started
        for mode in ("one-pass", "windowed"):
            result, _ = jobs.evaluate(model, source, mode, lookback, coverage=coverage)
            if mode == "one-pass":
                one_pass[name] = result
            per_step = result.by_step.assign(dataset=dataset, model=name, mode=mode)
            steps.append(per_step)
            scores = result.scores
            rows.append({"dataset": dataset, "horizon": horizon, "model": name, "mode": mode,
                         "nominal": coverage, "coverage": scores["coverage"],
                         "worst_step_coverage": float(per_step.coverage.min()),
                         "steps_within_2_points": int((abs(per_step.coverage - coverage) <= 0.02).sum()),
                         "n_steps": len(per_step), "width": scores["width"], "crps": scores["crps"],
                         "pinball": scores["pinball"], "mse": scores["mse"], "mase": scores["mase"],
                         "fit_seconds": round(fit_seconds, 1), "params": json.dumps(params, sort_keys=True),
                         "commit": git_commit() or "unknown"})
            print(f"{dataset} {name} {mode}: coverage {scores['coverage']:.3f} (worst step "
                  f"{per_step.coverage.min():.3f}), width {scores['width']:.3f}", flush=True)
    if plot is not None:  # both models' bands, one-pass: what a stream serves
        plot_backtest(one_pass, plot, step=1, last=300, bands=2)
    return rows, pd.concat(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ETTh1,ETTm1,WTH")
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    config = load_config(DEFAULT_CONFIG)
    out = Path(args.out)
    for dataset in args.datasets.split(","):
        plot = out.with_name(f"intervals_{dataset}.png")
        rows, steps = run(dataset, args.horizon, args.coverage, args.seed, config, plot)
        table = pd.DataFrame(rows)
        old = pd.read_csv(out) if out.exists() else None
        if old is not None:  # one row per (data set, model, mode): the newest wins
            keep = ~old.set_index(["dataset", "model", "mode"]).index.isin(
                table.set_index(["dataset", "model", "mode"]).index)
            table = pd.concat([old[keep], table])
        table.to_csv(out, index=False)
        steps.to_csv(out.with_name(f"intervals_by_step_{dataset}.csv"), index=False)


if __name__ == "__main__":
    main()
