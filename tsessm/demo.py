"""`tsessm demo`: the main job. The eSSM against the baselines on one benchmark column.

Trains every model on the Informer train split (validation split for early stopping), backtests
it on the test split in both modes, prints the table with the best model of each mode marked,
saves the models, the table and a plot, logs everything to MLflow, and prints the wall time of
each stage. The default is the accuracy benchmark's cell at one horizon; `--full` runs every
horizon of the benchmark's protocol.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd

from tsessm import datasets
from tsessm.jobs import evaluate, make_model, model_class, open_data, train
from tsessm.plotting import plot_backtest
from tsessm.redact import mask
from tsessm.tracking import start_run, tracking_uri

MODES = ("windowed", "one-pass")


class _Clock:
    """Prints each stage's wall time as it ends."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()

    def lap(self, what: str) -> float:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        print(f"  [{now - self.start:5.1f} s] {what}: {seconds:.1f} s", flush=True)
        return seconds


def demo_table(rows: list[dict]) -> pd.DataFrame:
    """One row per (horizon, model, mode); `best` marks the lowest MSE of each (horizon, mode)."""
    if not rows:
        raise ValueError("no model ran: --models named none that is available (essm, lstm, arima, naive, linear)")
    table = pd.DataFrame(rows).set_index(["horizon", "model", "mode"]).sort_index()
    best = table.groupby(level=["horizon", "mode"])["mse"].transform("min")
    table["best"] = (table["mse"] == best).map({True: "*", False: ""})
    return table


# The printed table's columns (metrics.csv keeps every score) and their decimals.
SHOWN = {"mse": 4, "mae": 4, "mase": 3, "coverage": 3, "width": 3, "fit_s": 1, "backtest_s": 2}


def format_table(table: pd.DataFrame) -> str:
    """The table as printed: the errors, MASE, the intervals' coverage and width, the seconds."""
    shown = table[[c for c in (*SHOWN, "best") if c in table]].copy()
    for column, digits in SHOWN.items():
        if column in shown:
            shown[column] = shown[column].map(lambda v, d=digits: f"{v:.{d}f}")
    return shown.to_string()


def run_demo(args: argparse.Namespace) -> None:
    clock = _Clock()
    source = open_data(args.data, lookback=args.lookback, columns=[args.column], data_dir=args.data_dir)
    horizons = list(datasets.horizons(source.name)) if args.full else [args.horizon]
    import torch

    print(f"{source.name} univariate {args.column}: horizon{'s' if len(horizons) > 1 else ''} "
          f"{', '.join(map(str, horizons))}, lookback {args.lookback}; {source.info['split']}; "
          f"torch {torch.get_num_threads()} thread(s)", flush=True)
    print("The accuracy benchmark's cell" + (" at every protocol horizon" if args.full else
          f" at horizon {horizons[0]}, nothing shortened (--full: every protocol horizon)") +
          f"; models: {args.models}; neural models at most {args.epochs} epochs with early stopping.", flush=True)
    clock.lap("data")
    out_dir = Path(args.out_dir)
    created = not out_dir.exists()
    try:
        table, plots = _run(args, source, horizons, out_dir, clock)
    except BaseException:
        if created and out_dir.exists():  # a failed run leaves no half-filled folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    print(f"\ntest split, scaled values ({source.test_stop - source.test_start - horizons[0] + 1} windows at "
          f"H={horizons[0]}; * = lowest MSE of its mode" +
          (f"; coverage and width of the {100 * args.coverage:g} % intervals" if args.coverage else "") + "):")
    print(format_table(table))
    print(f"\nplot: {', '.join(map(str, plots))}\ntable: {out_dir / 'metrics.csv'}\n"
          f"wall time: {time.perf_counter() - clock.start:.0f} s")
    if args.track:
        uri = mask(tracking_uri())
        print(f"MLflow: {uri} (experiment {args.experiment!r}; `mlflow ui --backend-store-uri {uri}`)")


def _run(args: argparse.Namespace, source, horizons: list[int], out_dir: Path,
         clock: _Clock) -> tuple[pd.DataFrame, list[Path]]:
    rows, plots = [], []
    own = {"arima": {"order": "auto"}}  # the baselines at their best, not at a default order
    with start_run(args.track, args.experiment, run_name=f"demo-{source.name}") as parent:
        parent.log_params({"demo_horizons": ",".join(map(str, horizons)), "demo_lookback": args.lookback,
                           **source.info})
        for horizon in horizons:
            plotted = {}
            for name in args.models.split(","):
                try:
                    accepted = model_class(name)().get_params()
                except ValueError as exc:
                    print(f"skipping {name}: {exc}")
                    continue
                wanted = {"horizon": horizon, "random_state": args.seed, "lookback": args.lookback,
                          "epochs": args.epochs, "verbose": 1}
                model = make_model(name, **{k: v for k, v in wanted.items() if k in accepted}, **own.get(name, {}))
                with start_run(args.track, args.experiment, run_name=f"demo-{name}-H{horizon}",
                               nested=True) as tracker:
                    fit_seconds = train(model, source, tracker)
                    epochs = len(getattr(model, "history_", []))
                    clock.lap(f"H={horizon} {name} fit" + (f" ({epochs} epochs)" if epochs else ""))
                    out_dir.mkdir(parents=True, exist_ok=True)
                    model.save(out_dir / f"{name}-H{horizon}.tsm")
                    tracker.log_artifact(out_dir / f"{name}-H{horizon}.tsm")
                    for mode in MODES:
                        try:
                            result, seconds = evaluate(model, source, mode, args.lookback, tracker,
                                                       coverage=args.coverage or None)
                        except NotImplementedError as exc:
                            print(f"{name}: no {mode} backtest ({exc})")
                            continue
                        rows.append({"horizon": horizon, "model": name, "mode": mode, **result.scores,
                                     "fit_s": fit_seconds, "backtest_s": seconds})
                        if mode == "windowed":
                            plotted[name] = result
                    clock.lap(f"H={horizon} {name} backtests")
            if plotted:
                path = out_dir / ("forecast.png" if len(horizons) == 1 else f"forecast-H{horizon}.png")
                plot_backtest(plotted, path)
                parent.log_artifact(path)
                plots.append(path)
        table = demo_table(rows)
        out_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(out_dir / "metrics.csv")
        parent.log_artifact(out_dir / "metrics.csv")
        parent.log_metrics({"wall_seconds": time.perf_counter() - clock.start})
    clock.lap("table, plot, MLflow")
    return table, plots
