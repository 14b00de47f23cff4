"""Retraining with a promotion gate: train a challenger on the latest data, promote it only if it
beats the champion.

    tsessm retrain --config retrain.toml          # or: python pipelines/retrain.py --config ...
    tsessm schedule --cron "0 3 * * *" --config retrain.toml   # the same on a schedule

One run, driven by a TOML file (see pipelines/retrain.example.toml):

1. lock      one retrain per registered model name at a time (a file lock in `[lock] dir`);
             a second one exits 3: "another retrain of NAME is running".
2. data      read the latest data (a CSV/Parquet file, or a directory: its newest file or all of
             them concatenated and sorted by time; pandas or polars reader) and validate it:
             required columns, parseable increasing timestamps, no gaps, NaN or inf (unless
             `missing` repairs them). Its fingerprint is the sha256 of the loaded rows (timestamps,
             column names, float64 values), so the reader and the file layout do not change it.
3. skip?     the fingerprint and the last timestamp of the last *completed* retrain of this model
             (promoted or not) are tags of that MLflow run (`retrain.data_sha256`,
             `retrain.data_end`, looked up in the run's experiment): the same data again -> "data
             unchanged", fewer than `min_new_rows` rows newer than its data -> "skipped"; both exit 0.
4. train     a challenger on every row but the last `holdout` (fixed parameters, or a short Optuna
             search with `[tuning]`).
5. compare   challenger and champion (`models:/NAME@champion`, pinned to its version number) on the
             same most recent `holdout` rows: the windowed protocol, same origins and targets, same
             history, metrics on values scaled by the training rows' scaler.
6. decide    promote when there is no champion, or when the challenger's score is better by at
             least `margin` (relative: 0.02 = 2 % lower MSE). Promoting registers the challenger
             (after it absorbed the holdout rows, so it forecasts from the end of the data), moves
             `champion` to it and `previous` to the old champion. The champion alias is re-read
             first; if someone moved it meanwhile nothing is promoted.
7. report    metrics.csv, by_step.csv, forecast.png, decision.json, the challenger model and the
             decision (params `decision`, `reason`; tags `retrain.*`) in the MLflow run.

Exit status: 0 promoted, not promoted or skipped; 1 failed (data, training, evaluation,
tracking server; the registry is left as it was); 2 invalid config; 3 another retrain of the
same model holds the lock. Either way one line `retrain NAME: STATUS: reason` is printed.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from tsessm.retrain.outcome import Outcome
from tsessm.retrain.signals import Interrupted, handle_signals
from tsessm.scripts import run_script

log = logging.getLogger("tsessm.retrain")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the retrain TOML file (see pipelines/retrain.example.toml)")
    p.add_argument("--force", action="store_true",
                   help="retrain even if the data is unchanged or has fewer than min_new_rows new rows")
    p.add_argument("--dry-run", action="store_true", help="train, compare and report, but leave the registry alone")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def add_retrain_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `retrain` on the `tsessm` sub-command parsers; dispatch with run_retrain_command(args)."""
    p = subparsers.add_parser(
        "retrain", help="retrain a registered model on the latest data; promote it only if it beats the champion",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    return p


def run_retrain_command(args: argparse.Namespace) -> int:
    """Run `tsessm retrain` from parsed arguments: prints one line, returns the exit status."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in job logs
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        log.setLevel(logging.INFO)
    with handle_signals():
        try:
            # the pipeline imports torch, pandas and the forecasters: `tsessm --help` builds this parser without them
            from tsessm.retrain.pipeline import run_retrain

            outcome = run_retrain(args.config, force=args.force, dry_run=args.dry_run)
        except Interrupted as exc:  # a signal outside the run (loading the config, taking the lock)
            outcome = Outcome("?", "failed", str(exc), 128 + exc.signum, stage="interrupted")
    print(outcome.line(), file=sys.stdout if outcome.ok else sys.stderr, flush=True)
    return outcome.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tsessm.retrain --config retrain.toml` (what `tsessm retrain` runs)."""
    return run_script("tsessm retrain", __doc__, _add_arguments, run_retrain_command, argv)
