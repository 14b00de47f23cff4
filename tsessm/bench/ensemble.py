"""Seed ensembles for the accuracy benchmark: the average of the seeds' forecasts, declared as its
own model (`<model>_ens`), scored on the same windows as its members.

The members are the cells' fitted models kept by `--models-dir`; nothing is retrained. Each
member is backtested as in its own cell, and the ensemble's result is the first member's with
the forecasts replaced by the members' mean, so the targets, origins and scaler are the same.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tsessm import jobs
from tsessm.backtest import BacktestResult, backtest
from tsessm.bench.results import params_key
from tsessm.forecasters.base import BaseForecaster
from tsessm.tracking import git_commit


def average(results: list[BacktestResult]) -> BacktestResult:
    """The members' results on the same windows -> one result with their mean forecast."""
    first = results[0]
    for r in results[1:]:
        if r.forecasts.shape != first.forecasts.shape or not first.origins.equals(r.origins):
            raise ValueError("ensemble members must be backtested on the same windows")
    return dataclasses.replace(first, forecasts=np.mean([r.forecasts for r in results], axis=0))


def ensemble_params(member_params: list[dict]) -> dict[str, Any]:
    """The ensemble's recorded parameters: its members' (but the seed), and the members' seeds."""
    params = {k: v for k, v in member_params[0].items() if k != "random_state"}
    params["members"] = sorted(p["random_state"] for p in member_params)
    return params


def ensemble_rows(cell: Any, modes: tuple[str, ...], members: list[BaseForecaster], params: dict[str, Any],
                  source: jobs.DataSource, lookback: int) -> list[dict[str, Any]]:
    """Result rows (one per mode) of the members' average, with its validation scores."""
    start = source.val[0] + lookback
    validation = source.frame.iloc[: source.val[1]]
    val = average([backtest(m, validation, test_start=start, train_rows=source.train_stop, lookback=lookback)
                   for m in members]).scores
    rows = []
    for mode in modes:
        scores = average([backtest(m, source.history, test_start=source.test_start, train_rows=source.train_stop,
                                   lookback=lookback, mode=mode) for m in members]).scores
        rows.append({
            "dataset": cell.dataset, "setting": cell.setting, "horizon": cell.horizon, "model": cell.model,
            "seed": cell.seed, "mode": mode, "mse": scores["mse"], "mae": scores["mae"], "n_windows": scores["n_windows"],
            "lookback": lookback, "val_mse": val["mse"], "val_mae": val["mae"],
            "params": json.dumps(params, sort_keys=True, default=str), "params_key": params_key(params),
            "commit": git_commit() or "unknown", "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
    return rows


def load_members(paths: list[Path]) -> tuple[list[BaseForecaster], list[Path]]:
    """The members' fitted models, or ([], the missing files) while a file is missing."""
    missing = [p for p in paths if not p.exists()]
    return ([], missing) if missing else ([BaseForecaster.load(p) for p in paths], [])

