"""Backtests on a held-out stretch: the protocol's windowed evaluation and the one-pass one.

windowed: every origin (stride 1) forecasts the next `horizon` rows seeing only the `lookback`
    rows up to it -- the Informer/S4 protocol.
one-pass: a causal model runs once over the whole history; its forecast at every origin comes
    from the full-history state -- what a streaming deployment sees.
MSE and MAE are computed on values scaled by the train rows' per-column standard scaler (the
protocol's); MAPE, sMAPE and MASE on the original values. With `coverage`, each forecast also
gets a prediction interval: windowed from the model's static calibration, one-pass with the
online recalibration a stream runs (`tsessm.intervals`), and the scores add coverage, mean
width (scaled), the pinball loss at the interval's two levels and the CRPS from a grid of
quantiles.
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
from tsessm.intervals import CoverageTracker, check_coverage, track_one_pass

MODES = ("windowed", "one-pass")
CRPS_LEVELS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # the quantile grid the CRPS is computed from


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
    naive_mae: np.ndarray | None = None  # (k,) MASE's scale: the train rows' one-step naive MAE
    coverage: float | None = None  # the nominal coverage of `intervals`
    intervals: np.ndarray | None = None  # (N, H, k, 2): lower, upper in original units
    quantiles: dict[float, np.ndarray] | None = None  # level -> (N, H, k): the CRPS grid

    def scaled(self, array: np.ndarray) -> np.ndarray:
        return (array - self.mean) / self.std

    @property
    def by_step(self) -> pd.DataFrame:
        """Tidy metrics on scaled values per (step, target), with coverage and width per step
        when there are intervals."""
        table = metrics.by_step(self.scaled(self.forecasts), self.scaled(self.actuals), self.targets)
        if self.intervals is not None:
            lo, hi, a = self.intervals[..., 0], self.intervals[..., 1], self.actuals
            table["coverage"] = ((a >= lo) & (a <= hi)).mean(axis=0).ravel()
            table["width"] = (self.scaled(hi) - self.scaled(lo)).mean(axis=0).ravel()
        return table

    @property
    def scores(self) -> dict[str, float]:
        f, a = self.scaled(self.forecasts), self.scaled(self.actuals)
        out = {"mse": metrics.mse(f, a), "mae": metrics.mae(f, a), "n_windows": len(f),
               "mape": metrics.mape(self.forecasts, self.actuals), "smape": metrics.smape(self.forecasts, self.actuals)}
        if self.naive_mae is not None:
            out["mase"] = metrics.mase(self.forecasts, self.actuals, self.naive_mae)
        if self.intervals is not None:
            lo, hi = self.scaled(self.intervals[..., 0]), self.scaled(self.intervals[..., 1])
            low_level, high_level = (1 - self.coverage) / 2, (1 + self.coverage) / 2
            out.update({"coverage": metrics.coverage(lo, hi, a), "width": metrics.width(lo, hi),
                        "pinball": (metrics.pinball(lo, a, low_level) + metrics.pinball(hi, a, high_level)) / 2})
        if self.quantiles:
            out["crps"] = metrics.crps({lv: self.scaled(q) for lv, q in self.quantiles.items()}, a)
        return out


def backtest(
    model: BaseForecaster,
    y: Any,
    X: Any = None,
    *,
    test_start: int,
    train_rows: int | None = None,
    lookback: int | None = None,
    mode: str = "windowed",
    coverage: float | None = None,
    online: bool = True,
) -> BacktestResult:
    """Evaluate a fitted `model` on the rows of `y` from `test_start` on.

    y: the history and the test stretch, with the columns the model was fitted on.
    X: its covariates as in `fit(y, X)` (past inputs and the future covariates, whose values
        the forecasts read at each origin's next `horizon` rows), or None when `y` holds them.
    test_start: first row forecast; origins run from test_start - 1 to len(y) - horizon - 1.
    train_rows: the scaler for the metrics is fitted on y[:train_rows]. The protocol fits it on
        the train split only: pass the train split's end (the default, test_start, also
        scales by the validation rows).
    lookback: rows a windowed forecast sees (default: the model's `lookback`).
    coverage: also make prediction intervals of this coverage (e.g. 0.9) and quantile forecasts
        (the CRPS grid), scored with the points.
    online: one-pass intervals recalibrate online as the values arrive, as a stream does
        (`BaseForecaster.track_coverage`); False keeps the static calibration.
    """
    check_is_fitted(model, "n_seen_")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    values, index = model.history_rows(y, X)
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
    result = BacktestResult(
        mode=mode,
        targets=list(model.target_columns_),
        origins=index[origins],
        forecasts=forecasts,
        actuals=np.ascontiguousarray(actuals),
        mean=mean,
        std=std,
        naive_mae=metrics.naive_scale(targets[:train_rows]) if train_rows > 1 else None,
    )
    if coverage is not None:
        _add_intervals(result, model, check_coverage(coverage), lookback if mode == "windowed" else None, online)
    return result


def _add_intervals(result: BacktestResult, model: BaseForecaster, coverage: float, lookback: int | None,
                   online: bool) -> None:
    """Intervals and the CRPS grid's quantiles for every origin (see the module docstring)."""
    half = model.static_half_width(coverage, lookback)  # (H, k)
    if lookback is None and online:
        half = track_one_pass(result.forecasts, result.actuals, CoverageTracker.start(coverage, half))
    result.coverage = coverage
    result.intervals = np.stack([result.forecasts - half, result.forecasts + half], axis=-1)
    offsets = model.quantile_offsets(CRPS_LEVELS, lookback)  # (A, H, k)
    result.quantiles = {float(level): result.forecasts + offsets[i] for i, level in enumerate(CRPS_LEVELS)}
