"""`tsessm backtest`: evaluate a model on the test split (windowed and/or one-pass)."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.commands import options

NAME = "backtest"
HELP = "evaluate a model on the test split (windowed and/or one-pass)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP)
    options.add_data_args(p)
    options.add_model_args(p)
    options.add_trust_pickle_arg(p)
    p.add_argument("--mode", choices=["windowed", "one-pass", "both"], default="windowed")
    p.add_argument("--coverage", type=float, metavar="C",
                   help="also score prediction intervals of coverage C (e.g. 0.9): coverage, width, pinball, "
                        "CRPS; one-pass intervals recalibrate online as a stream does; the plot draws the bands")
    p.add_argument("--plot", help="save a forecast/error-by-horizon PNG here")
    p.add_argument("--out", help="write the per-step metrics as CSV here")
    options.add_track_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    # torch, the jobs and MLflow load here, when the command runs: `tsessm --help` stays fast
    from tsessm.jobs import evaluate, results_table, train
    from tsessm.plotting import plot_backtest
    from tsessm.tracking import start_run

    model, needs_training = options.fitted_or_new(args)
    lookback = args.lookback or getattr(model, "lookback", 96)
    source = options.open_source(args, lookback)
    modes = ["windowed", "one-pass"] if args.mode == "both" else [args.mode]
    with start_run(args.track, args.experiment, run_name=f"backtest-{type(model).__name__}") as tracker:
        if needs_training:
            train(model, source, tracker)
        rows, results = [], {}
        for mode in modes:
            result, seconds = evaluate(model, source, mode, lookback, tracker, coverage=args.coverage)
            results[f"{type(model).__name__} {mode}"] = result
            rows.append({"model": type(model).__name__, "mode": mode, **result.scores, "seconds": round(seconds, 2)})
            if args.out:
                result.by_step.assign(mode=mode).to_csv(args.out, mode="a" if len(rows) > 1 else "w",
                                                        header=len(rows) == 1, index=False)
        if args.plot:
            plot_backtest(results, args.plot)
            tracker.log_artifact(args.plot)
    print(results_table(rows).to_string(float_format="%.4f"))
    return 0
