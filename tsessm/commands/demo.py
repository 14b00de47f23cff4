"""`tsessm demo`: the main job, eSSM against the baselines on one benchmark column."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.commands import options

NAME = "demo"
HELP = "the main job: eSSM vs baselines on ETTh1 (univariate OT), table + plot"
DESCRIPTION = ("Train the eSSM and the baselines on the Informer train split of a benchmark's univariate column, "
               "backtest them on its test split (windowed and one-pass), print the table, save a plot, log to "
               "MLflow. The default is the accuracy benchmark's cell at one horizon (about a minute on 2 idle "
               "cores); --full runs every horizon of the benchmark's protocol.")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION)
    p.add_argument("--data", default="ETTh1", help="benchmark name (default ETTh1)")
    p.add_argument("--data-dir", help=options.DATA_DIR_HELP)
    p.add_argument("--column", default="OT", help="univariate column (default OT)")
    p.add_argument("--horizon", type=int, default=24, help="steps forecast at once (default 24)")
    p.add_argument("--full", action="store_true",
                   help="every horizon of the benchmark's protocol (ETTh1: 24, 48, 168, 336, 720) instead of --horizon")
    p.add_argument("--lookback", type=int, default=96, help="rows each windowed forecast sees (default 96)")
    p.add_argument("--epochs", type=int, default=10, help="most training epochs of the neural models (default 10)")
    p.add_argument("--models", default="essm,lstm,arima,naive,linear",
                   help="comma-separated; unavailable ones are skipped with a note")
    p.add_argument("--out-dir", default="runs/demo", help="where the plot, table and models go")
    p.add_argument("--coverage", type=float, default=0.9,
                   help="nominal coverage of the prediction intervals scored and drawn (default 0.9; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="random_state of the neural models (default 0)")
    options.add_track_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from tsessm.demo import run_demo  # torch, pandas and the jobs load when the demo runs

    run_demo(args)
    return 0
