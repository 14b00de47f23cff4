"""Backtests on a held-out stretch: the protocol's windowed evaluation and the one-pass one.

windowed: every origin (stride 1) forecasts the next `horizon` rows seeing only the `lookback`
    rows up to it -- the Informer/S4 protocol.
one-pass: a causal model runs once over the whole history; its forecast at every origin comes
    from the full-history state -- what a streaming deployment sees.
Metrics are computed on values scaled by the train rows' per-column standard scaler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from tsessm import metrics
from tsessm.data import standard_stats
from tsessm.forecasters.base import BaseForecaster

MODES = ("windowed", "one-pass")


@dataclass
class BacktestResult:
    """forecasts, actuals: (N, H, k) in original units; origins: the N origin labels."""

    mode: str
    targets: list[str]
    origins: pd.Index
    forecasts: np.ndarray
    actuals: np.ndarray
    mean: np.ndarray  # (k,) scaler used for the metrics
    std: np.ndarray

    def scaled(self, array: np.ndarray) -> np.ndarray:
        return (array - self.mean) / self.std

    @property
    def by_step(self) -> pd.DataFrame:
        """Tidy metrics on scaled values per (step, target)."""
        return metrics.by_step(self.scaled(self.forecasts), self.scaled(self.actuals), self.targets)

    @property
    def scores(self) -> dict[str, float]:
        f, a = self.scaled(self.forecasts), self.scaled(self.actuals)
        return {"mse": metrics.mse(f, a), "mae": metrics.mae(f, a), "n_windows": len(f)}


def backtest(
    model: BaseForecaster,
    y: Any,
    *,
    test_start: int,
    train_rows: int | None = None,
    lookback: int | None = None,
    mode: str = "windowed",
) -> BacktestResult:
    """Evaluate a fitted `model` on the rows of `y` from `test_start` on.

    y: the history and the test stretch, with the columns the model was fitted on.
    test_start: first row forecast; origins run from test_start - 1 to len(y) - horizon - 1.
    train_rows: the scaler for the metrics is fitted on y[:train_rows]. The protocol fits it on
        the train split only: pass the train split's end (the default, test_start, also
        scales by the validation rows).
    lookback: rows a windowed forecast sees (default: the model's `lookback`).
    """
    check_is_fitted(model, "n_seen_")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    values, index = model.history_rows(y)
    H = model.horizon
    lookback = lookback if lookback is not None else getattr(model, "lookback", 1)
    train_rows = train_rows if train_rows is not None else test_start
    if not lookback <= test_start <= len(values) - H:
        raise ValueError(
            f"test_start={test_start} must leave `lookback`={lookback} rows before it and "
            f"horizon={H} rows after it in y ({len(values)} rows)"
        )
    origins = np.arange(test_start - 1, len(values) - H)
    if mode == "windowed":
        forecasts = model.forecast_windows(values, origins, lookback)
    else:
        forecasts = model.forecast_one_pass(values, origins)
    idx = [model.columns_.index(t) for t in model.target_columns_]
    targets = values[:, idx]
    actuals = np.lib.stride_tricks.sliding_window_view(targets[1:], H, axis=0)[origins].transpose(0, 2, 1)
    mean, std = standard_stats(targets[:train_rows], model.target_columns_)
    return BacktestResult(
        mode=mode,
        targets=list(model.target_columns_),
        origins=index[origins],
        forecasts=forecasts,
        actuals=np.ascontiguousarray(actuals),
        mean=mean,
        std=std,
    )
