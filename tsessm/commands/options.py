"""Options several commands share (data, model, tracking, --trust-pickle), and reading them back.

Adding the options is light (argparse only), so `tsessm --help` answers at once; the helpers
that turn them into data and models import the jobs when a command runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tsessm.checks import pairs
from tsessm.columns import TIME_COLUMNS

# Model options with a flag of their own; anything else goes through --set name=value.
# model flag -> (type, help); unset flags keep the model's own default
MODEL_FLAGS = {
    "lookback": (int, "rows one training window warms up on (linear: the values its map reads); the windowed "
                      "backtest sees this many (default 96; linear 336)"),
    "d_model": (int, "eSSM/LSTM width (default 64)"),
    "n_layers": (int, "eSSM blocks or LSTM layers (default 2)"),
    "d_state": (int, "eSSM complex states per layer, split over the heads (default 64)"),
    "n_heads": (int, "eSSM heads: block-diagonal systems, with a head mixer when more than one (default 1)"),
    "epochs": (int, "training epochs, with early stopping on the validation split (default 10)"),
    "lr": (float, "AdamW learning rate (default 1e-3)"),
    "batch_size": (int, "training windows per step (default 32)"),
    "dropout": (float, "dropout rate (default 0.1)"),
    "device": (str, "auto (CUDA when present), cpu, cuda or cuda:N (default auto)"),
    "discretization": (str, "eSSM discretisation: zoh or bilinear (default zoh)"),
    "season_length": (int, "naive model: repeat the last season of this many steps (default 1: the last value)"),
    "alpha": (float, "linear model: ridge penalty on standardised values (default 1.0)"),
    "normalization": (str, "linear model: last (NLinear), none or decompose (DLinear) (default last)"),
}

DATA_DIR_HELP = "folder with the benchmark files (default: $TSESSM_DATA_DIR, datasets/, ../shared/datasets)"
TRUST_PICKLE_HELP = ("also read model files that are pickles (tsessm 0.2 and older). A pickle runs the code it "
                     "holds while it loads: use this only for files from a source you trust, then save them again "
                     "as code-free model files")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="benchmark name (ETTh1, ETTh2, ETTm1, ETTm2, WTH, weather, ECL) or a CSV/Parquet path")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--time-col", help=f"timestamp column of a CSV/Parquet file (default: {'/'.join(TIME_COLUMNS)})")
    p.add_argument("--columns", help="comma-separated columns to use (default: all); e.g. OT for the univariate setting")


def add_trust_pickle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="essm",
                   help="essm | lstm | arima | naive | linear, or (backtest/predict) a file written by `tsessm train`")
    p.add_argument("--target", help="column(s) to forecast, comma-separated (default: all columns)")
    p.add_argument("--horizon", type=int, default=24, help="steps forecast at once (default 24)")
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    for name, (kind, text) in MODEL_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name, default=None, help=text)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other model parameter, e.g. --set n_heads=4 (repeatable)")


def add_track_args(p: argparse.ArgumentParser, experiment: str = "tsessm") -> None:
    p.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                   help="log the run to MLflow ($MLFLOW_TRACKING_URI, default sqlite:///mlruns.db)")
    p.add_argument("--experiment", default=experiment, help="MLflow experiment name")


def targets(args: argparse.Namespace) -> str | list[str] | None:
    """--target as the forecasters take it: one name, a list of names, or None (all columns)."""
    if not args.target:
        return None
    names = args.target.split(",")
    return names[0] if len(names) == 1 else names


# ----- reading the options back (the jobs load here, when a command runs) -----------------------
def model_params(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from tsessm.jobs import model_class, parse_value

    accepted = model_class(name)().get_params()
    params: dict[str, Any] = {"horizon": args.horizon, "random_state": args.seed, "verbose": 1}
    if args.target:
        params["target"] = targets(args)
    params.update({k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None})
    params = {k: v for k, v in params.items() if k in accepted}  # flags a model does not take are moot
    params.update({k: parse_value(v) for k, v in pairs(args.set, "--set").items()})
    return params


def open_source(args: argparse.Namespace, lookback: int):
    """The data arguments opened and split (tsessm.jobs.open_data)."""
    from tsessm.jobs import open_data

    columns = args.columns.split(",") if args.columns else None
    return open_data(args.data, lookback=lookback, columns=columns, data_dir=args.data_dir, time_col=args.time_col)


def fitted_or_new(args: argparse.Namespace):
    """(model, needs_training): a saved file is loaded, a model name is built from the flags."""
    from tsessm.jobs import MODELS, make_model
    from tsessm.tracking import is_model_uri, load_forecaster

    if args.model not in MODELS:
        if not (is_model_uri(args.model) or Path(args.model).exists()):
            raise ValueError(f"--model {args.model!r} is neither a model name ({', '.join(MODELS)}), "
                             "a file nor an MLflow URI such as models:/NAME@champion")
        return load_forecaster(args.model, allow_pickle=getattr(args, "trust_pickle", False)), False
    return make_model(args.model, **model_params(args, args.model)), True
