"""The command-line options of the benchmark suites (`tsessm bench accuracy|speed`, pipelines/*.py).

Light to import (argparse and paths only), so `tsessm bench --help` answers without loading
torch; the suites themselves (`accuracy`, `speed`) import their options from here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

# ----- accuracy ----------------------------------------------------------------------------
DATASETS = ("ETTh1", "ETTh2", "ETTm1", "WTH", "ECL")
MODELS = ("essm", "lstm", "arima", "naive", "linear")
DEFAULT_CONFIG = Path(__file__).resolve().with_name("accuracy.toml")  # shipped with the package
DEFAULT_RESULTS = Path("pipelines") / "results" / "accuracy.csv"
EXPERIMENT = "tsessm-bench-accuracy"
ACCURACY_HELP = ("The Informer-protocol grid: datasets x settings x horizons x models, each cell trained, "
                 "backtested (windowed and one-pass) and appended to a resumable CSV; then the markdown "
                 "table and the plots.")


def _int_list(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _seed_list(text: str) -> tuple[int, ...]:
    """"0,1,2" -> (0, 1, 2): distinct non-negative seeds, at least one."""
    try:
        seeds = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def add_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `tsessm bench accuracy` and pipelines/benchmark_accuracy.py."""
    p.add_argument("--datasets", help=f"comma-separated (default {','.join(DATASETS)}; ECL only where its file is found)")
    p.add_argument("--settings", help="S (univariate), M (multivariate) or both (default S,M)")
    p.add_argument("--horizons", help="comma-separated (default: each dataset's protocol horizons)")
    p.add_argument("--models", help=f"comma-separated (default {','.join(MODELS)})")
    p.add_argument("--quick", action="store_true",
                   help="a subset that finishes in minutes: ETTh1, S, horizons 24 and 48, every model")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="model parameters per cell (TOML; default: the "
                   "choices behind the published results, tsessm/bench/accuracy.toml)")
    p.add_argument("--set", action="append", default=[], metavar="MODEL.NAME=VALUE",
                   help="override a parameter for every cell of MODEL, e.g. --set essm.epochs=2")
    p.add_argument("--results", default=str(DEFAULT_RESULTS),
                   help="the results CSV, read to resume, then extended (default %(default)s, from the current folder)")
    p.add_argument("--report-dir", help="where the markdown table and the plots go (default: next to --results)")
    p.add_argument("--report-only", action="store_true", help="only render the table and plots from --results")
    p.add_argument("--data-dir", help="folder with the dataset files (e.g. a user-supplied ECL.csv)")
    p.add_argument("--seeds", type=_seed_list, default=(0,), metavar="0,1,2",
                   help="random_state of the neural models, one cell per seed (default 0); the other models "
                        "run once, as seed 0. The report gives the seeds' mean and spread")
    p.add_argument("--models-dir", help="also save each cell's fitted model here (for --ensemble)")
    p.add_argument("--ensemble", action="store_true",
                   help="also score each neural cell's seed ensemble (the mean of the --seeds models' forecasts, "
                        "from --models-dir; nothing is retrained) as the model <name>_ens")
    p.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                   help="one MLflow run per cell ($MLFLOW_TRACKING_URI, default sqlite:///mlruns.db)")
    p.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")



# ----- speed -------------------------------------------------------------------------------
DEFAULT_OUT = Path("pipelines") / "results" / "speed.json"
QUICK_OUT = Path("pipelines") / "results" / "speed_quick.json"  # a quick run never replaces the full record
GROUPS = ("core", "train", "params", "latency", "history", "recompute", "panel", "backtest", "arima", "memory")
# Sizes of the full run and of --quick; a flag given on the command line overrides either.
FULL = {"lengths": [96, 336, 720], "core_repeats": 9, "train_repeats": 3, "history_rows": 100_000,
        "repeats": 200, "n_series": 10_000, "panel_rounds": 5, "backtest_repeats": 3, "memory_steps": 10}
QUICK = {"lengths": [96], "core_repeats": 3, "train_repeats": 1, "history_rows": 10_000,
         "repeats": 30, "n_series": 1_000, "panel_rounds": 3, "backtest_repeats": 1, "memory_steps": 2}
SPEED_HELP = ("Speed and size ratios of the eSSM against the LSTM, ARIMA and recomputation, each measured "
              "side by side in one run on this machine -> pipelines/results/speed.json and a README table.")


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tsessm bench speed` and pipelines/benchmark_speed.py."""
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a minute or two (recorded in the JSON)")
    parser.add_argument("--out", default=None,
                        help=f"JSON result file (default {DEFAULT_OUT}, or {QUICK_OUT} with --quick)")
    parser.add_argument("--skip", action="append", default=[], choices=GROUPS, metavar="NAME",
                        help=f"leave a measure out (repeatable): {', '.join(GROUPS)}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto: CUDA when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--data-dir", default=None, help="folder with the benchmark files (default: searched)")
    parser.add_argument("--seed", type=int, default=0)
    g = parser.add_argument_group("nets (the same width and depth for the eSSM and the LSTM)")
    g.add_argument("--d-model", type=int, default=128)
    g.add_argument("--n-layers", type=int, default=2)
    g.add_argument("--d-state", type=int, default=64)
    g.add_argument("--n-heads", type=int, default=1)
    g.add_argument("--param-heads", type=_int_list, default=[1, 8], help="head counts in the parameter detail")
    g = parser.add_argument_group("sizes (default: the full run's, or --quick's)")
    g.add_argument("--lengths", type=_int_list, default=None, help=f"sequence lengths of the core timing (full {FULL['lengths']})")
    g.add_argument("--core-repeats", type=int, default=None, help="timed forward+backward passes per core and length")
    g.add_argument("--train-repeats", type=int, default=None, help="timed ETTh1 training epochs per model")
    g.add_argument("--history-rows", type=int, default=None, help="the long history (full 100 000)")
    g.add_argument("--repeats", type=int, default=None, help="timed update+predict calls per side")
    g.add_argument("--n-series", type=int, default=None, help="series in the panel (full 10 000)")
    g.add_argument("--panel-rounds", type=int, default=None)
    g.add_argument("--backtest-repeats", type=int, default=None)
    g.add_argument("--memory-steps", type=int, default=None, help="training steps in the peak-RSS child")
    g.add_argument("--memory-horizon", type=int, default=96, help="horizon of the ETTm1 training (default 96)")
    g.add_argument("--window", type=int, default=720, help="rows the windowed recompute reads (default 720)")
