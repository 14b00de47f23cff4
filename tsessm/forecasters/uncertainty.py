"""Uncertainty for every forecaster: prediction intervals, quantiles and their online recalibration.

`Uncertainty` is a mixin of `BaseForecaster`. After `_fit`, `_calibrate` keeps the residuals of
held-out forecasts per horizon step (`tsessm.intervals.Calibration`, one-pass and windowed);
`predict_interval` and `predict_quantiles` read them (a model that makes its own intervals, as
ARIMA does from its Kalman covariance, overrides `static_half_width` and `quantile_offsets`);
`track_coverage` starts the online recalibration that `observe` and one-row updates feed.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.utils.validation import check_is_fitted

from tsessm.data import future_index, to_output
from tsessm.intervals import Calibration, CoverageTracker, check_alpha, check_coverage


class Uncertainty:
    """Intervals and quantiles (see the module docstring); the host class is a BaseForecaster."""

    # Whether a windowed forecast changes with the window's length (the neural models' do; the
    # naive and linear ones read only their own last rows of any longer window).
    WINDOWS_DEPEND_ON_LOOKBACK = False

    # How the intervals are made: from held-out residuals ("conformal"), or by the model itself.
    INTERVALS = "conformal"

    # Of a fit without validation rows, the tail held out to calibrate the intervals on (in-sample
    # for models fitted on it: ARIMA's residuals there are a little optimistic).
    CALIBRATION_FRACTION = 0.3

    def _calibration_start(self, n_rows: int) -> int:
        """The first calibration origin of a fit on `n_rows` without validation rows."""
        return n_rows - max(int(n_rows * self.CALIBRATION_FRACTION), 1)

    def _calibrate(self, values: np.ndarray, target_idx: list[int], val_values: np.ndarray | None,
                   mode: str) -> Calibration | None:
        """The residuals of held-out forecasts (the validation rows, else the tail of the fit):
        one-pass (the state a stream has; what predict_interval uses) or windowed (the windowed
        backtest's). None when the model makes its own intervals, cannot forecast that way, or
        there are no held-out origins."""
        if self.INTERVALS != "conformal":
            return None
        history = values if val_values is None else np.vstack([values, val_values])
        first = len(values) - 1 if val_values is not None else self._calibration_start(len(values))
        lookback = getattr(self, "lookback", None) or self._min_length()  # the backtest's default window
        origins = np.arange(max(first, lookback - 1), len(history) - self.horizon)
        streams = self.can_stream and mode == "one-pass" and self._has_one_pass()
        if len(origins) == 0 or not (streams or self.can_forecast_windows):
            return None  # too short (predict_interval says so), or no such forecasts
        if streams:
            forecasts = self._forecast_one_pass(history, origins)
        else:  # windows (also what a model that cannot stream has for its live forecast)
            forecasts = self._forecast_windows(history, origins, lookback)
        actual = history[origins[:, None] + np.arange(1, self.horizon + 1)][..., target_idx]
        return Calibration.from_residuals(actual - forecasts)

    def predict_interval(self, fh: int | Sequence[int] | None = None, coverage: float = 0.9, X: Any = None) -> Any:
        """Prediction intervals of `coverage` for the steps `fh`, in the input's kind: pandas or
        polars columns "<target>-lo-<pct>" and "<target>-hi-<pct>" (e.g. "OT-lo-90", "OT-hi-90",
        NeuralForecast's names), numpy (len(fh), 2 n_targets) in that column order.

        Neural and naive models: split-conformal intervals from held-out residuals per horizon
        step (the validation rows), or the online recalibration's when `track_coverage(coverage)`
        is on. ARIMA: Gaussian, from its Kalman covariance.
        """
        check_is_fitted(self, "n_seen_")
        coverage = check_coverage(coverage)
        steps = self.resolve_fh(fh)
        index = future_index(self.last_index_, self.freq_, steps)
        point = self._predict()[steps - 1] + self._known_ahead_effect(steps, index, X)
        half = self._half_width(coverage)[steps - 1]
        pct = f"{100 * coverage:g}"
        columns = [f"{t}-{side}-{pct}" for t in self.target_columns_ for side in ("lo", "hi")]
        values = np.stack([point - half, point + half], axis=-1).reshape(len(steps), -1)
        return to_output(values, columns, index, self.input_kind_)

    def predict_quantiles(self, fh: int | Sequence[int] | None = None, alpha: Sequence[float] = (0.05, 0.5, 0.95),
                          X: Any = None) -> Any:
        """Forecast quantiles at levels `alpha` for the steps `fh`, in the input's kind: columns
        "<target>-q-<alpha>" (e.g. "OT-q-0.05"), numpy (len(fh), n_targets len(alpha)) in that order.
        Conformal models: the held-out residuals' quantiles per step; ARIMA: Gaussian."""
        check_is_fitted(self, "n_seen_")
        levels = check_alpha(alpha)
        steps = self.resolve_fh(fh)
        index = future_index(self.last_index_, self.freq_, steps)
        point = self._predict()[steps - 1] + self._known_ahead_effect(steps, index, X)
        offsets = self.quantile_offsets(levels)[:, steps - 1]  # (A, n, k)
        values = (point[None] + offsets).transpose(1, 2, 0).reshape(len(steps), -1)
        columns = [f"{t}-q-{a:g}" for t in self.target_columns_ for a in levels]
        return to_output(values, columns, index, self.input_kind_)

    def track_coverage(self, coverage: float = 0.9, rate: float = 0.05) -> "Uncertainty":
        """Recalibrate the intervals of `coverage` online from here on: every later observation
        (observe, one-row updates, the stream runner) checks the forecasts made for it and
        widens or narrows that coverage's interval per horizon step (`tsessm.intervals`). The
        state is saved with the model. rate: the change per miss, as a fraction of the static
        half-width. Returns self."""
        check_is_fitted(self, "n_seen_")
        coverage = check_coverage(coverage)
        if isinstance(rate, bool) or not (isinstance(rate, (int, float)) and 0 < rate <= 1):
            raise ValueError(f"rate must be in (0, 1], got {rate!r}")
        tracker = CoverageTracker.start(coverage, self.static_half_width(coverage), rate)
        tracker.made(None if self._n_user_future() else self.current_forecast())
        self.interval_tracker_ = tracker
        return self

    def _half_width(self, coverage: float) -> np.ndarray:
        """The half-width of the interval of `coverage` now: (H, k)."""
        tracker = getattr(self, "interval_tracker_", None)
        if tracker is not None and tracker.coverage == coverage:
            return tracker.half
        return self.static_half_width(coverage)

    def current_interval(self, coverage: float = 0.9, future: Any = None) -> np.ndarray:
        """The interval of `coverage` around `current_forecast(future)` as a plain array:
        (horizon, n_targets, 2), lower then upper (the online one when that coverage is tracked)."""
        return self._bounds(self.current_forecast(future), check_coverage(coverage))

    def _bounds(self, point: np.ndarray, coverage: float) -> np.ndarray:
        """point (H, k) -> (H, k, 2): point -+ the half-width of `coverage` now."""
        half = self._half_width(coverage)
        return np.stack([point - half, point + half], axis=-1)

    def static_half_width(self, coverage: float, lookback: int | None = None) -> np.ndarray:
        """The half-widths (H, k) of the static calibration: of the live (one-pass) forecasts or,
        lookback given, of windowed ones, as the backtests use them. Split-conformal here; ARIMA
        overrides it with its Gaussian widths."""
        return self._calibration(lookback).half_width(coverage)

    def quantile_offsets(self, alpha: np.ndarray, lookback: int | None = None) -> np.ndarray:
        """Quantile offsets from the point forecast at levels alpha: (A, H, k) (lookback: of
        windowed forecasts, as `static_half_width`)."""
        return self._calibration(lookback).offsets(alpha)

    def _calibration(self, lookback: int | None = None) -> Calibration:
        """The one-pass calibration (the live forecasts'), or the windowed one when `lookback` is
        given (it was made at the model's own lookback: another one is refused)."""
        if "calibration_" not in self.__dict__:
            raise ValueError(f"this {type(self).__name__} was saved by a tsessm without interval calibration "
                             f"(0.3 and older): refit it to get intervals")
        if lookback is not None and self.WINDOWS_DEPEND_ON_LOOKBACK and lookback != self.lookback:
            raise ValueError(f"the windowed intervals are calibrated on windows of the model's lookback="
                             f"{self.lookback}; a backtest with lookback={lookback} would be miscalibrated")
        windowed = lookback is not None or not self.can_stream
        calibration = getattr(self, "window_calibration_" if windowed else "calibration_", None)
        if calibration is None:
            raise ValueError(f"this {type(self).__name__} has no calibration for its intervals: its fit had no "
                             f"held-out rows after `lookback` + `horizon` (fit on a longer series, or give y_val)")
        return calibration

    def _track(self, values: np.ndarray, forecast: np.ndarray | None) -> None:
        """Feed the online recalibration the new rows' targets; `forecast` is the one made after
        the last row (None when unknown: a model with future covariates updated in a chunk)."""
        tracker = getattr(self, "interval_tracker_", None)
        if tracker is None:
            return
        targets = values[:, [self.columns_.index(t) for t in self.target_columns_]]
        for i, actual in enumerate(targets):
            tracker.observe(actual, forecast if i == len(targets) - 1 else None)
