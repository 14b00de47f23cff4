"""BaseForecaster: validation, conversion and persistence once, for every model.

Public `fit / predict / update / observe / save / load` and the backtest forecasts
(`forecast_windows`, `forecast_one_pass`) check and convert the input, then call the
subclass's private `_fit / _predict / _update` (abstract) with plain float64 arrays.
Subclasses only learn and forecast. Mixed in: `SavedModel` (model-file registration,
all-or-nothing changes, save and load; the panel shares it), `KnownAhead` (future covariates and
calendar features) and `Uncertainty` (intervals, quantiles, online recalibration).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from tsessm.calendar import calendar_columns, calendar_features, parse_calendar
from tsessm.checks import positive_int
from tsessm.data import (Series, as_offset, check_magnitudes, future_index, resolve_target, standard_stats, to_output,
                         to_series, with_covariates, within_bounds)
from tsessm.errors import StreamingNotSupported
from tsessm.forecasters.known_ahead import KnownAhead
from tsessm.forecasters.saved import SavedModel, model_class_key
from tsessm.forecasters.uncertainty import Uncertainty
from tsessm.intervals import check_coverage

LABEL_BLOCK = 256  # future labels `observe` builds at once


class BaseForecaster(SavedModel, KnownAhead, Uncertainty, ABC):
    """Shared behaviour of every tsessm forecaster (scikit-learn estimator conventions).

    Subclasses implement:
      _fit(values, target_idx, val_values)  values: (T, C) float64, original units
      _predict() -> (horizon, n_targets) float64 forecast after the last row seen
      _update(values)                      absorb rows that follow the last one seen
    and may implement
      _min_length() -> int                 rows `fit` needs (default 1)
      _forecast_windows / _forecast_one_pass, the backtest forecasts (see the public methods)

    Capability flags: `can_stream` (update, observe and the one-pass forecasts exist) and
    `can_forecast_windows` (the windowed backtest exists).
    """

    can_stream: bool = True
    _READS_ANY_MODEL = True  # BaseForecaster.load reads any tsessm model file, a panel included
    _TAKES_OVERRIDES = True

    @property
    def can_forecast_windows(self) -> bool:
        return type(self)._forecast_windows is not BaseForecaster._forecast_windows

    def _has_one_pass(self) -> bool:
        return type(self)._forecast_one_pass is not BaseForecaster._forecast_one_pass

    @abstractmethod
    def _fit(self, values: np.ndarray, target_idx: list[int], val_values: np.ndarray | None) -> None:
        """Learn from values (T, C) float64; target_idx: the target columns; val_values: rows
        that follow, for early stopping (or None)."""

    @abstractmethod
    def _predict(self) -> np.ndarray:
        """The forecast after the last row seen: (horizon, n_targets) float64, original units."""

    @abstractmethod
    def _update(self, values: np.ndarray) -> None:
        """Absorb rows (T, C) float64 that follow the last one seen."""

    def _require_stream(self, what: str) -> None:
        if not self.can_stream:
            raise StreamingNotSupported(
                f"{what} needs the recurrent form, which this {type(self).__name__} does not have: it reads "
                f"the future of every position (bidirectional=True); refit with bidirectional=False"
            )

    # ----- parameter checks ---------------------------------------------------------------
    def check_params(self) -> None:
        """Check every parameter, as `fit` does first: a ValueError or TypeError names the bad one."""
        self._check_params()

    def min_rows(self) -> int:
        """Rows `fit` needs with these parameters."""
        return self._min_length()

    def _check_params(self) -> None:
        positive_int("horizon", self.horizon)
        future = getattr(self, "future_covariates", None)
        if future is not None and not (isinstance(future, (list, tuple)) and all(isinstance(c, str) for c in future)):
            raise TypeError(f"future_covariates must be a list of column names of X, got {future!r}")
        parse_calendar(getattr(self, "calendar", None))

    def _min_length(self) -> int:
        return 1

    # ----- fit ---------------------------------------------------------------------------
    def _prepare(self, y: Any, X: Any, name: str, freq: Any = None) -> tuple[Series, list[str]]:
        """(y with the covariate columns of X and then the calendar features appended, y's own columns)."""
        missing = getattr(self, "missing", "error")
        if freq is None:  # fit: the freq parameter (None: inferred from y)
            freq = getattr(self, "freq", None)
        series = to_series(y, missing=missing, name=name, freq=freq)
        own = list(series.columns)
        if X is not None:
            x_name = "X" if name == "y" else name.replace("y", "X", 1)
            series = with_covariates(series, to_series(X, missing=missing, name=x_name, freq=series.freq))
        spec = self._calendar()
        if spec:
            names = calendar_columns(spec)
            clash = sorted(set(names) & set(series.columns))
            if clash:
                raise ValueError(f"{name}: column {clash[0]!r} has the name of a calendar feature; rename it")
            values = np.hstack([series.values, calendar_features(series.index, spec)])
            series = replace(series, values=values, columns=series.columns + names)
        return series, own

    def fit(self, y: Any, X: Any = None, *, y_val: Any = None, X_val: Any = None) -> "BaseForecaster":
        """Fit on `y` (+ covariates `X`: past inputs, and the `future_covariates` known ahead). Returns self.

        y_val / X_val: an optional validation stretch that follows `y` (rows at or before the
        end of `y` are ignored), used by models with early stopping. The fitted state covers
        `y` only; `update(y_val)` continues it to the end of the validation rows.
        """
        self._check_params()
        series, own_columns = self._prepare(y, X, "y")
        targets = resolve_target(own_columns, self.target)  # covariates are inputs, never targets
        need = self._min_length()
        if len(series) < need:
            raise ValueError(
                f"y has {len(series)} rows; {type(self).__name__} with these settings needs at least {need}"
            )
        val_values = None
        if y_val is not None:
            val, _ = self._prepare(y_val, X_val, "y_val", freq=series.freq)
            if val.columns != series.columns:
                raise ValueError(f"y_val columns {val.columns} differ from y's {series.columns}")
            # numpy steps carry no labels: a numpy y_val follows y by definition
            keep = (np.ones(len(val), bool) if series.kind.startswith("numpy")
                    else np.asarray(val.index > series.index[-1]))
            val_values = val.values[keep]
            if len(val_values) == 0:
                raise ValueError("y_val has no rows after the end of y")
            if not series.kind.startswith("numpy"):
                first, expected = val.index[keep][0], series.index[-1] + _step(series.index, series.freq)
                if first != expected:
                    raise ValueError(f"y_val must continue y: its first new row is {first}, expected {expected}")
        target_idx = [series.columns.index(t) for t in targets]
        future = self._future_columns(series.columns, own_columns)
        center, scale = standard_stats(series.values, series.columns)  # the bound on later values
        if val_values is not None:
            check_magnitudes(val_values, center, scale, series.columns, np.arange(len(val_values)), "y_val")
        self._transaction(self._fit_with_future, series.values, target_idx, val_values,
                          [series.columns.index(c) for c in future])
        self.future_columns_ = future
        self.calendar_columns_ = calendar_columns(self._calendar())
        self.value_center_, self.value_scale_ = center, scale
        self.columns_ = series.columns
        self.target_columns_ = targets
        self.freq_ = series.freq
        self.last_index_ = series.index[-1:]
        self.input_kind_ = replace(series, values=series.values[:0], index=series.index[:0], filled=None)
        self.n_seen_ = len(series)
        return self

    def _fit_with_future(self, values: np.ndarray, target_idx: list[int], val_values: np.ndarray | None,
                         future_idx: list[int]) -> None:
        self.future_idx_ = future_idx  # the known-ahead columns, for `_fit` to use
        self._fit(values, target_idx, val_values)
        self.calibration_ = self._calibrate(values, target_idx, val_values, "one-pass")
        self.window_calibration_ = self._calibrate(values, target_idx, val_values, "windowed")
        self.interval_tracker_ = None

    # ----- predict -----------------------------------------------------------------------
    def resolve_fh(self, fh: int | Sequence[int] | None) -> np.ndarray:
        """The 1-based forecast steps `fh` names (None: 1..horizon), checked: int64 (len(fh),)."""
        if fh is None:
            return np.arange(1, self.horizon + 1)
        steps = np.atleast_1d(np.asarray(fh))
        if steps.ndim != 1 or not np.issubdtype(steps.dtype, np.integer) or len(steps) == 0:
            raise ValueError(f"fh must be an integer or a list of integers in 1..{self.horizon}, got {fh!r}")
        if steps.min() < 1 or steps.max() > self.horizon:
            raise ValueError(f"fh must lie in 1..horizon={self.horizon}, got {steps.tolist()}")
        return steps

    def predict(self, fh: int | Sequence[int] | None = None, X: Any = None) -> Any:
        """Forecast the steps `fh` (1-based, default 1..horizon) after the last observation seen.

        X: the values of the `future_covariates` at the forecast steps, indexed by their
            timestamps (pandas; polars with the time column), or for a model fitted on numpy a
            (len(fh), n_future_covariates) array. Needed only when the model has future
            covariates; calendar features are made from the timestamps.
        Returns the input's kind: pandas/polars with future timestamps, numpy (len(fh), n_targets).
        """
        check_is_fitted(self, "n_seen_")
        steps = self.resolve_fh(fh)
        index = future_index(self.last_index_, self.freq_, steps)
        forecast = self._predict()[steps - 1] + self._known_ahead_effect(steps, index, X)
        return to_output(forecast, list(self.target_columns_), index, self.input_kind_)

    def current_forecast(self, future: Any = None) -> np.ndarray:
        """The forecast of steps 1..horizon after the last observation as a plain array:
        (horizon, n_targets) float64 in `target_columns_` order (`predict()` without the frame).
        future: for a model with `future_covariates`, their values at those steps, (horizon, F)."""
        if not hasattr(self, "n_seen_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first")
        forecast = np.array(self._predict(), dtype=np.float64)
        if not getattr(self, "future_columns_", None) and future is None:  # the stream's fast path
            return forecast
        steps = np.arange(1, self.horizon + 1)
        return forecast + self._known_ahead_effect(steps, future_index(self.last_index_, self.freq_, steps), future)

    # ----- update ------------------------------------------------------------------------
    def update(self, y_new: Any, X_new: Any = None) -> "BaseForecaster":
        """Absorb observations that follow the last one seen, without refitting. Returns self."""
        check_is_fitted(self, "n_seen_")
        self._require_stream("update()")
        series, _ = self._prepare(y_new, X_new, "y_new", freq=self.freq_)
        if sorted(series.columns) != sorted(self.columns_):
            missing = sorted(set(self.columns_) - set(series.columns))
            extra = sorted(set(series.columns) - set(self.columns_))
            raise ValueError(
                f"y_new columns differ from the fitted ones: missing {missing}, unexpected {extra}"
            )
        values = series.values[:, [series.columns.index(c) for c in self.columns_]]
        self._check_continues(series.index)
        self._check_magnitudes(values, series.index, "y_new")
        self._transaction(self._absorb, values)
        self.last_index_ = series.index[-1:]
        self.n_seen_ += len(values)
        if getattr(self, "interval_tracker_", None) is not None:
            self._track(values, None if self._n_user_future() else self.current_forecast())
        return self

    # ----- observe: one row, the fast path of a stream -----------------------------------
    def observe(self, values: Any, time: Any = None, future: Any = None,
                coverage: float | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Absorb one new row and return the new forecast: `update(one row)` then `predict()`
        without the frames around them, the path a live stream takes.

        values: the row as a 1-D array or list, in the column order of the fit (`columns_`:
            the targets and inputs of `y`, then the covariates of `X`; not the calendar features,
            which come from the time).
        time: its timestamp for a model fitted on timestamps (None: one step after the last
            observation); must be None for a model fitted on numpy (integer steps).
        future: for a model with `future_covariates`, their values at the next `horizon` steps,
            (horizon, n_future_covariates).
        coverage: also return the prediction interval of this coverage (the online one when
            `track_coverage(coverage)` is on).
        Returns the forecast of steps 1..horizon, numpy (horizon, n_targets) in `target_columns_`
        order; with `coverage`, (forecast, interval (horizon, n_targets, 2): lower, upper). The
        checks are `update`'s (shape, NaN and inf, time order); a refused row leaves the model
        unchanged.
        """
        if not hasattr(self, "n_seen_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first")
        self._require_stream("observe()")
        coverage = None if coverage is None else check_coverage(coverage)  # before anything changes
        row = self._check_row(values)
        label = self._next_label(time)
        calendar = getattr(self, "calendar_columns_", None)
        if calendar:
            row = np.concatenate([row, calendar_features(label, self._calendar())[0]])
        if not self._within_bounds(row):  # also false for NaN and inf: one check on the fast path
            self._check_finite(row)
            self._check_magnitudes(row[None], label, "values")
        if getattr(self, "future_columns_", None) or future is not None:  # checked before the state moves
            steps = np.arange(1, self.horizon + 1)
            known = self._known_ahead_effect(steps, future_index(label, self.freq_, steps), future)
        else:
            known = 0.0
        forecast = self._transaction(self._absorb, row[None]) + known
        self.last_index_ = label
        self.n_seen_ += 1
        self._track(row[None], forecast)
        if coverage is None:
            return forecast
        return forecast, self._bounds(forecast, coverage)

    def _absorb(self, values: np.ndarray) -> np.ndarray:
        """`_update`, then a guard: a forecast that is not finite is never kept (the caller's
        transaction restores the model). Returns the new forecast, `_predict()`."""
        self._update(values)
        forecast = self._predict()
        if not np.isfinite(forecast).all():
            raise ValueError("the forecast after these rows is not finite (NaN or inf); the rows are refused "
                             "and the model is unchanged")
        return forecast

    def _within_bounds(self, row: np.ndarray) -> bool:
        center = getattr(self, "value_center_", None)
        if center is None:
            return bool(np.isfinite(row).all())
        return within_bounds(row, center, self.value_scale_)

    def _check_magnitudes(self, values: np.ndarray, labels: Any, name: str) -> None:
        center = getattr(self, "value_center_", None)  # absent in files of tsessm 0.2 and older
        if center is not None:
            check_magnitudes(values, center, self.value_scale_, self.columns_, labels, name)

    def _check_row(self, values: Any) -> np.ndarray:
        columns = self._observed()
        try:
            row = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"values must be numbers for the columns {columns}, got {values!r}") from exc
        if row.shape != (len(columns),):
            raise ValueError(f"values must be one row of {len(columns)} numbers for the columns {columns}, "
                             f"got shape {row.shape}")
        return row

    def _check_finite(self, row: np.ndarray) -> None:
        finite = np.isfinite(row)
        if not finite.all():
            bad = [f"{c!r} is {v}" for c, v, ok in zip(self.columns_, row, finite) if not ok]
            raise ValueError(f"values: column {', column '.join(bad)}")

    def _next_label(self, time: Any) -> pd.Index:
        """The index label of the next row (checked against `time` when given)."""
        last = self.last_index_
        if self.input_kind_.kind.startswith("numpy"):  # integer steps carry no labels
            if time is not None:
                raise ValueError("this model was fitted on integer steps (numpy): observe takes time=None")
            return last
        if not isinstance(last, pd.DatetimeIndex):  # a pandas frame indexed by integer steps
            following = last + self.freq_
            if time is not None and time != following[0]:
                what = "is not after" if time <= last[0] else "leaves a gap after"
                raise ValueError(f"time {time!r} {what} the last observation {last[0]}; expected {following[0]}")
            return following
        following, expected_ns = self._following_label(last)
        if time is None:
            return following
        try:
            stamp = time if isinstance(time, pd.Timestamp) else pd.Timestamp(time)
            if (stamp.tz is None) != (last.tz is None):
                raise TypeError("one has a time zone, the other none")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"time {time!r} is not a timestamp comparable with the last observation "
                             f"{last[0]} ({exc})") from None
        if stamp.value != expected_ns:  # int64 nanoseconds (UTC when aware): no Timestamp built
            what = "is not after" if stamp <= last[0] else "leaves a gap after"
            raise ValueError(f"time {stamp} {what} the last observation {last[0]}; expected {following[0]}")
        return following

    def _following_label(self, last: pd.DatetimeIndex) -> tuple[pd.DatetimeIndex, int]:
        """(last + one step as a one-label index, that label in int64 nanoseconds). Labels are
        built LABEL_BLOCK at a time and sliced (a DatetimeIndex costs ~10 us to build, a slice
        ~2 us): while `last_index_` is still the label handed out before, the next one is the
        block's next."""
        anchor, block, nanoseconds, position = self.__dict__.get("_label_block", (None, None, None, 0))
        if last is not anchor or position >= len(block):
            block = future_index(last, self.freq_, np.arange(1, LABEL_BLOCK + 1))
            nanoseconds, position = block.as_unit("ns").asi8, 0
        following = block[position:position + 1]
        self._label_block = (following, block, nanoseconds, position + 1)
        return following, int(nanoseconds[position])

    def _check_continues(self, index: pd.Index) -> None:
        last = self.last_index_[0]
        if self.input_kind_.kind.startswith("numpy"):
            return  # integer steps carry no labels: a numpy chunk follows by definition
        expected = last + _step(index, self.freq_)
        if index[0] != expected:
            what = "is not after" if index[0] <= last else "leaves a gap after"
            raise ValueError(
                f"y_new starts at {index[0]}, which {what} the last observation {last}; "
                f"expected {expected}"
            )

    # ----- persistence -------------------------------------------------------------------
    def _get_fitted_state(self) -> dict:
        """Everything learned, as values a model file holds (`tsessm.persist`; subclasses extend)."""
        return {k: v for k, v in self.__dict__.items() if k.endswith("_") and not k.startswith("__")}

    def _set_fitted_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def _document(self) -> dict:
        """The fitted model as a model-file document (see `tsessm.persist`)."""
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in self._UNSAVED_PARAMS}
        return {"class": model_class_key(type(self)), "params": params,
                "state": self._get_fitted_state()}

    @classmethod
    def _from_document(cls, document: dict, **overrides: Any) -> "BaseForecaster":
        model = cls(**{**cls._saved_defaults(document["params"]), **overrides})
        model._set_fitted_state(document["state"])
        return model

    # Parameters a model file does not keep (code, such as callbacks): a loaded model has their default.
    _UNSAVED_PARAMS: tuple[str, ...] = ()

    # Parameters added after model files were first written, with the value that reproduces the
    # model such a file holds (a changed default must not change an old file's model).
    _LEGACY_DEFAULTS: dict[str, Any] = {}

    @classmethod
    def _saved_defaults(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A saved file's parameters, with the legacy value of any parameter it predates."""
        return {**cls._LEGACY_DEFAULTS, **params}

    # ----- backtest forecasts ------------------------------------------------------------
    def history_rows(self, y: Any, X: Any = None) -> tuple[np.ndarray, pd.Index]:
        """A stretch of history as the backtest forecasts read it: (rows (T, C) in `columns_`
        order, with the calendar features made from the timestamps; the T index labels).
        y (and X) hold the fitted columns, any extra ones are ignored."""
        check_is_fitted(self, "n_seen_")
        series, _ = self._prepare(y, X, "y", freq=self.freq_)
        absent = [c for c in self.columns_ if c not in series.columns]
        if absent:
            raise ValueError(f"y lacks column(s) {absent} the model was fitted on")
        return series.values[:, [series.columns.index(c) for c in self.columns_]], series.index

    def forecast_windows(self, values: np.ndarray, origins: Sequence[int], lookback: int) -> np.ndarray:
        """The windowed protocol's forecasts: at each origin row t, from rows [t-lookback+1, t] only.

        values: (T, C) rows in `columns_` order, original units; origins: row numbers in
        [lookback-1, T-1]. Returns (len(origins), horizon, n_targets) float64. The fitted state is
        neither used nor changed.
        """
        values, origins = self._check_history(values, origins, lookback)
        if not self.can_forecast_windows:
            raise NotImplementedError(f"{type(self).__name__} has no windowed forecasts")
        return self._forecast_windows(values, origins, lookback)

    def forecast_one_pass(self, values: np.ndarray, origins: Sequence[int] | None = None) -> np.ndarray:
        """The one-pass (streaming) forecasts: one causal pass over `values` from the start; the
        forecast at each origin row comes from the state after that row (full history).

        values: (T, C) rows in `columns_` order, original units; origins: row numbers in [0, T-1]
        (None: every row). Returns (len(origins), horizon, n_targets) float64. The fitted state is
        neither used nor changed.
        """
        self._require_stream("a one-pass forecast")
        if origins is None:  # every row that has the known-ahead inputs of its forecast steps
            ahead = self.horizon if getattr(self, "future_columns_", None) else 0
            origins = np.arange(max(len(values) - ahead, 0))
        values, origins = self._check_history(values, origins, 1)
        return self._forecast_one_pass(values, origins)

    def _check_history(self, values: Any, origins: Any, lookback: int) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "n_seen_")
        positive_int("lookback", lookback)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.columns_):
            raise ValueError(f"values must be (rows, {len(self.columns_)}) for the columns {list(self.columns_)}, "
                             f"got shape {values.shape}")
        origins = np.asarray(origins)
        if origins.ndim != 1 or (len(origins) and not np.issubdtype(origins.dtype, np.integer)):
            raise ValueError(f"origins must be a 1-D list of row numbers, got {origins!r}")
        last = len(values) - (self.horizon if getattr(self, "future_columns_", None) else 0)
        if len(origins) and (origins.min() < lookback - 1 or origins.max() >= last):
            after = f", and horizon={self.horizon} rows of the known-ahead inputs after each" if last < len(values) else ""
            raise ValueError(f"forecast rows (origins) must lie in [{lookback - 1}, {last - 1}] "
                             f"(lookback={lookback}, {len(values)} rows{after}), got {int(origins.min())}..{int(origins.max())}")
        bad = ~np.isfinite(values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"values: row {r}, column {self.columns_[c]!r} is {values[r, c]}")
        return values, origins

    def _forecast_windows(self, values: np.ndarray, origins: np.ndarray, lookback: int) -> np.ndarray:
        raise NotImplementedError

    def _forecast_one_pass(self, values: np.ndarray, origins: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no one-pass forecasts")


def _step(index: pd.Index, freq: Any) -> Any:
    """One step of a series: a pandas offset for timestamps (`last + step` follows the calendar;
    a Timedelta from an old model file becomes its offset), the integer step otherwise."""
    return as_offset(freq) if isinstance(index, pd.DatetimeIndex) else freq
