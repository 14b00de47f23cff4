"""`tsessm tune`: hyperparameter search with Optuna (the parser is light; the tuner loads when it runs)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tsessm.checks import pairs
from tsessm.commands import options
from tsessm.tune_options import DEFAULT_STORAGE, PRUNERS

NAME = "tune"
HELP = "search eSSM/LSTM hyperparameters with Optuna (pruning, shared studies, MLflow)"
DESCRIPTION = """Hyperparameter search for the neural forecasters with Optuna, logged to MLflow.

Each trial trains on the train split and reports its validation loss after every epoch, so poor
trials are pruned early. Several workers share one study through one storage (any RDB URL) and
study name, each with its own --seed; a study resumes after a crash. The best parameters are
refitted on train + validation and scored on the test split (--no-retrain skips that)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_data_args(p)
    p.add_argument("--target", help="column(s) to forecast, comma-separated (default: all columns)")
    p.add_argument("--model", default="essm", help="essm or lstm (default essm)")
    p.add_argument("--n-trials", type=int, default=20,
                   help="finished trials wanted in the study, all workers together (default 20)")
    p.add_argument("--storage", help=f"Optuna storage URL (default {DEFAULT_STORAGE}); share one RDB to scale out")
    p.add_argument("--study-name", help="study to create or join (default: from model, data and horizon)")
    p.add_argument("--horizon", type=int, default=24, help="steps forecast at once (default 24)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial (default 10)")
    p.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    p.add_argument("--pruner", choices=PRUNERS, default="median")
    p.add_argument("--seed", type=int, default=0, help="sampler seed and random_state; one per concurrent worker")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="pin a model parameter for every trial, e.g. --set steps_per_epoch=50 (repeatable)")
    p.add_argument("--space", action="append", default=[], metavar="NAME=A,B,...",
                   help="choices for a tuned parameter, e.g. --space lookback=96,192 (repeatable)")
    p.add_argument("--no-retrain", dest="retrain", action="store_false",
                   help="skip refitting the best parameters on train + validation and the test backtest")
    p.add_argument("--register-as", help="register the retrained best model under this MLflow model name")
    options.add_track_args(p, experiment="tsessm-tune")
    return p


def _print_trial(study: Any, trial: Any) -> None:
    value = f"val_loss {trial.value:.4g}" if trial.value is not None else trial.state.name.lower()
    print(f"trial {trial.number}: {value} {trial.params}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Print the best parameters and the test metrics; 0."""
    # The tuner (optuna, torch, the jobs) loads only when the command runs: `tsessm --help` stays fast.
    from tsessm.jobs import parse_value
    from tsessm.tuning import tune

    result = tune(
        args.data, model=args.model, n_trials=args.n_trials, horizon=args.horizon,
        columns=args.columns.split(",") if args.columns else None, target=options.targets(args),
        storage=args.storage, study_name=args.study_name, epochs=args.epochs, timeout=args.timeout,
        pruner=args.pruner, seed=args.seed, track=args.track, experiment=args.experiment,
        data_dir=args.data_dir, time_col=args.time_col,
        fixed_params={k: parse_value(v) for k, v in pairs(args.set, "--set").items()},
        space={k: [parse_value(x) for x in v.split(",")] for k, v in pairs(args.space, "--space").items()},
        retrain_best=args.retrain, register_as=args.register_as, callbacks=[_print_trial],
    )
    print(f"study {result.study_name} ({result.storage}): {result.n_complete} complete, {result.n_pruned} pruned")
    if result.best_params is None:
        print("no completed trial yet")
    else:
        print(f"best validation loss {result.best_value:.4f} with")
        for key, value in result.best_params.items():
            print(f"  {key} = {value}")
    if result.test_metrics:
        print("test (windowed, scaled): " + ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items()))
    for note in result.notes:
        print(note)
    if result.run_id:
        print(f"MLflow run {result.run_id}")
    return 0
