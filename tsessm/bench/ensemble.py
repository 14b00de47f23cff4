"""Seed ensembles for the accuracy benchmark: the average of the seeds' forecasts, declared as its
own model (`<model>_ens`), scored on the same windows as its members.

The members are the cells' fitted models kept by `--models-dir`; nothing is retrained. Each
member is backtested as in its own cell, and the ensemble's result is the first member's with
the forecasts replaced by the members' mean, so the targets, origins and scaler are the same.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tsessm import jobs
from tsessm.backtest import BacktestResult
from tsessm.bench.results import result_row
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
    val = average([jobs.validation_backtest(m, source, lookback) for m in members]).scores
    commit = git_commit() or "unknown"
    return [result_row(cell, mode, average([jobs.evaluate(m, source, mode, lookback)[0] for m in members]).scores,
                       val, lookback, params, commit) for mode in modes]


def load_members(paths: list[Path]) -> tuple[list[BaseForecaster], list[Path]]:
    """The members' fitted models, or ([], the missing files) while a file is missing."""
    missing = [p for p in paths if not p.exists()]
    return ([], missing) if missing else ([BaseForecaster.load(p) for p in paths], [])

