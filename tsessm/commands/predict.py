"""`tsessm predict`: forecast from a saved model, optionally after absorbing new rows."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.commands import options

NAME = "predict"
HELP = "forecast from a saved model, optionally after absorbing new rows"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP)
    p.add_argument("--model", required=True, help="a file written by `tsessm train`, or models:/NAME@alias")
    options.add_trust_pickle_arg(p)
    p.add_argument("--update", help="CSV/Parquet of observations that follow the training data")
    p.add_argument("--time-col", help="timestamp column of the --update file")
    p.add_argument("--fh", help="comma-separated steps to return (default 1..horizon)")
    p.add_argument("--out", help="write the forecast as CSV here (default: print it)")
    p.add_argument("--save", help="save the updated model here (default: leave the file as it is)")
    return p


def run(args: argparse.Namespace) -> int:
    # pandas and the forecasters load here, when the command runs: `tsessm --help` stays fast
    from tsessm.data import read_table
    from tsessm.tracking import load_forecaster

    model = load_forecaster(args.model, allow_pickle=args.trust_pickle)
    if args.update:
        model.update(read_table(args.update, time_col=args.time_col)[list(model.columns_)])
        if args.save:
            model.save(args.save)
    fh = [int(s) for s in args.fh.split(",")] if args.fh else None
    forecast = model.predict(fh=fh)
    if args.out:
        forecast.to_csv(args.out)
    else:
        print(forecast.to_string())
    return 0
