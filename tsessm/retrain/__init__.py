"""Retraining with a promotion gate: train a challenger on the latest data, promote it only if it
beats the champion (`tsessm retrain --config retrain.toml`; the stages and exit codes are in
`cli.py`'s docstring, which is `tsessm retrain --help`).

Modules, in the order a run uses them:

    config    the TOML file (pydantic schema) -> RetrainConfig; ConfigError names section and key
    data      read, validate and fingerprint the rows (Dataset, load_data)
    train     fit the challenger (or tune it), score a model on the holdout
    gate      the promotion decision: pure functions, no MLflow (decide, check_comparable)
    report    what goes to the MLflow run and the registry's version tags
    pipeline  one run: lock, stages, Outcome (run_retrain)
    signals   SIGINT/SIGTERM stop a run, never in the middle of a promotion
    outcome   exit codes, Outcome and its printed line, RetrainError
    cli       add_retrain_parser, run_retrain_command, main

Importing this package stays light (`tsessm --help` builds the retrain parser): the names below
the parser load their module on first use.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from tsessm.retrain.cli import add_retrain_parser, main, run_retrain_command
from tsessm.retrain.outcome import EXIT_BUSY, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, Outcome, RetrainError

_LAZY = {
    "ConfigError": "config", "RetrainConfig": "config", "load_config": "config", "config_from_dict": "config",
    "DataError": "data", "Dataset": "data", "data_files": "data", "load_data": "data", "read_file": "data",
    "fingerprint": "data",
    "CHAMPION": "gate", "PREVIOUS": "gate", "Decision": "gate", "decide": "gate", "check_comparable": "gate",
    "run_retrain": "pipeline", "lock_path": "pipeline",
    "Interrupted": "signals", "handle_signals": "signals",
}

__all__ = ["add_retrain_parser", "run_retrain_command", "main", "EXIT_OK", "EXIT_FAILED", "EXIT_CONFIG",
           "EXIT_BUSY", "Outcome", "RetrainError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tsessm.retrain' has no attribute {name!r}")
    return getattr(import_module(f"tsessm.retrain.{module}"), name)
