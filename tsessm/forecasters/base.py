"""BaseForecaster: validation, conversion and persistence once, for every model.

Public `fit / predict / update / save / load` check and convert the input, then call the
subclass's private `_fit / _predict / _update` with plain float64 arrays. Subclasses only
learn and forecast.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from tsessm.checks import positive_int
from tsessm.data import Series, future_index, resolve_target, to_output, to_series, with_covariates

# 2: the eSSM layer with real read-in and read-out (tsessm 0.2.0). Files of format 1 load for
# every model but the eSSM, whose format-1 weights (complex B and C) the new layer cannot hold.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
LABEL_BLOCK = 256  # future labels `observe` builds at once


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write a file so that readers see the old content or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BaseForecaster(BaseEstimator):
    """Shared behaviour of every tsessm forecaster (scikit-learn estimator conventions).

    Subclasses implement:
      _fit(values, target_idx, val_values)  values: (T, C) float64, original units
      _predict() -> (horizon, n_targets) float64 forecast after the last row seen
      _update(values)                      absorb rows that follow the last one seen
      _min_length() -> int                 rows `fit` needs
    and may implement `_forecast_windows` / `_forecast_stream` for backtests.
    """

    # ----- parameter checks ---------------------------------------------------------------
    def _check_params(self) -> None:
        positive_int("horizon", self.horizon)

    def _min_length(self) -> int:
        return 1

    # ----- fit ---------------------------------------------------------------------------
    def _prepare(self, y: Any, X: Any, name: str, freq: Any = None) -> tuple[Series, list[str]]:
        """(y with the covariate columns of X appended, y's own columns)."""
        missing = getattr(self, "missing", "error")
        series = to_series(y, missing=missing, name=name, freq=freq)
        own = list(series.columns)
        if X is not None:
            x_name = "X" if name == "y" else name.replace("y", "X", 1)
            series = with_covariates(series, to_series(X, missing=missing, name=x_name, freq=series.freq))
        return series, own

    def _transaction(self, work, *args) -> None:
        """Run `work`; if it raises, restore every attribute so the estimator is unchanged."""
        saved = dict(self.__dict__)
        try:
            work(*args)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def fit(self, y: Any, X: Any = None, *, y_val: Any = None, X_val: Any = None) -> "BaseForecaster":
        """Fit on `y` (+ covariates `X`, used as inputs only). Returns self.

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
        self._transaction(self._fit, series.values, target_idx, val_values)
        self.columns_ = series.columns
        self.target_columns_ = targets
        self.freq_ = series.freq
        self.last_index_ = series.index[-1:]
        self.input_kind_ = replace(series, values=series.values[:0], index=series.index[:0], filled=None)
        self.n_seen_ = len(series)
        return self

    # ----- predict -----------------------------------------------------------------------
    def _resolve_fh(self, fh: int | Sequence[int] | None) -> np.ndarray:
        if fh is None:
            return np.arange(1, self.horizon + 1)
        steps = np.atleast_1d(np.asarray(fh))
        if steps.ndim != 1 or not np.issubdtype(steps.dtype, np.integer) or len(steps) == 0:
            raise ValueError(f"fh must be an integer or a list of integers in 1..{self.horizon}, got {fh!r}")
        if steps.min() < 1 or steps.max() > self.horizon:
            raise ValueError(f"fh must lie in 1..horizon={self.horizon}, got {steps.tolist()}")
        return steps

    def predict(self, fh: int | Sequence[int] | None = None) -> Any:
        """Forecast the steps `fh` (1-based, default 1..horizon) after the last observation seen.

        Returns the input's kind: pandas/polars with future timestamps, numpy (len(fh), n_targets).
        """
        check_is_fitted(self, "n_seen_")
        steps = self._resolve_fh(fh)
        forecast = self._predict()[steps - 1]
        index = future_index(self.last_index_, self.freq_, steps)
        return to_output(forecast, list(self.target_columns_), index, self.input_kind_)

    # ----- update ------------------------------------------------------------------------
    def update(self, y_new: Any, X_new: Any = None) -> "BaseForecaster":
        """Absorb observations that follow the last one seen, without refitting. Returns self."""
        check_is_fitted(self, "n_seen_")
        series, _ = self._prepare(y_new, X_new, "y_new", freq=self.freq_)
        if sorted(series.columns) != sorted(self.columns_):
            missing = sorted(set(self.columns_) - set(series.columns))
            extra = sorted(set(series.columns) - set(self.columns_))
            raise ValueError(
                f"y_new columns differ from the fitted ones: missing {missing}, unexpected {extra}"
            )
        values = series.values[:, [series.columns.index(c) for c in self.columns_]]
        self._check_continues(series.index)
        self._transaction(self._update, values)
        self.last_index_ = series.index[-1:]
        self.n_seen_ += len(values)
        return self

    # ----- observe: one row, the fast path of a stream -----------------------------------
    def observe(self, values: Any, time: Any = None) -> np.ndarray:
        """Absorb one new row and return the new forecast: `update(one row)` then `predict()`
        without the frames around them, the path a live stream takes.

        values: the row as a 1-D array or list, in the column order of the fit (`columns_`:
            the targets and inputs of `y`, then the covariates of `X`).
        time: its timestamp for a model fitted on timestamps (None: one step after the last
            observation); must be None for a model fitted on numpy (integer steps).
        Returns the forecast of steps 1..horizon, numpy (horizon, n_targets) in `target_columns_`
        order. The checks are `update`'s (shape, NaN and inf, time order); a refused row leaves
        the model unchanged.
        """
        if not hasattr(self, "n_seen_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first")
        row = self._check_row(values)
        label = self._next_label(time)
        self._transaction(self._update, row[None])
        self.last_index_ = label
        self.n_seen_ += 1
        return self._predict()

    def _check_row(self, values: Any) -> np.ndarray:
        columns = list(self.columns_)
        try:
            row = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"values must be numbers for the columns {columns}, got {values!r}") from exc
        if row.shape != (len(columns),):
            raise ValueError(f"values must be one row of {len(columns)} numbers for the columns {columns}, "
                             f"got shape {row.shape}")
        finite = np.isfinite(row)
        if not finite.all():
            bad = [f"{c!r} is {v}" for c, v, ok in zip(columns, row, finite) if not ok]
            raise ValueError(f"values: column {', column '.join(bad)}")
        return row

    def _next_label(self, time: Any) -> pd.Index:
        """The index label of the next row (checked against `time` when given)."""
        last = self.last_index_
        if not isinstance(last, pd.DatetimeIndex):
            if time is not None:
                raise ValueError("this model was fitted on integer steps (numpy): observe takes time=None")
            return last
        following = self._following_label(last)
        if time is None:
            return following
        expected = following[0]
        try:
            stamp = pd.Timestamp(time)
            if (stamp.tz is None) != (expected.tz is None):
                raise TypeError("one has a time zone, the other none")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"time {time!r} is not a timestamp comparable with the last observation "
                             f"{last[0]} ({exc})") from None
        if stamp != expected:
            what = "is not after" if stamp <= last[0] else "leaves a gap after"
            raise ValueError(f"time {stamp} {what} the last observation {last[0]}; expected {expected}")
        return following

    def _following_label(self, last: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """last + one step, as a one-label index. Labels are built LABEL_BLOCK at a time and sliced
        (a DatetimeIndex costs ~10 us to build, a slice ~2 us): while `last_index_` is still the
        label handed out before, the next one is the block's next."""
        anchor, block, position = self.__dict__.get("_label_block", (None, None, 0))
        if last is not anchor or position >= len(block):
            block, position = future_index(last, self.freq_, np.arange(1, LABEL_BLOCK + 1)), 0
        following = block[position:position + 1]
        self._label_block = (following, block, position + 1)
        return following

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
        """Everything learned, as picklable CPU objects (subclasses extend)."""
        return {k: v for k, v in self.__dict__.items() if k.endswith("_") and not k.startswith("__")}

    def _set_fitted_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to one file, atomically (a pickle: load only files you trust)."""
        check_is_fitted(self, "n_seen_")
        payload = {
            "format": FORMAT_VERSION,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": self.get_params(deep=False),
            "state": self._get_fitted_state(),
        }
        atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> "BaseForecaster":
        """Read a model written by `save`. `overrides` replace saved parameters (e.g. device)."""
        with open(path, "rb") as f:
            payload = _CPUUnpickler(f).load()
        if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{path} is not a tsessm model file (or was written by an incompatible version)")
        if payload["class"] == "PanelForecaster" and cls is BaseForecaster:  # `load any model file`
            from tsessm.forecasters.panel import PanelForecaster

            return PanelForecaster._from_payload(payload)
        saved = payload["class"].rsplit(".", 1)[-1]
        if cls is not BaseForecaster and saved != cls.__name__:
            raise TypeError(f"{path} holds a {saved}, not a {cls.__name__}")
        target_cls = cls if cls is not BaseForecaster else _class_by_path(payload["class"])
        model = target_cls(**{**target_cls._saved_defaults(payload["params"]), **overrides})
        model._set_fitted_state(payload["state"])
        return model

    # Parameters added after model files were first written, with the value that reproduces the
    # model such a file holds (a changed default must not change an old file's model).
    _LEGACY_DEFAULTS: dict[str, Any] = {}

    @classmethod
    def _saved_defaults(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A saved file's parameters, with the legacy value of any parameter it predates."""
        return {**cls._LEGACY_DEFAULTS, **params}

    # ----- backtest hooks ----------------------------------------------------------------
    def _forecast_windows(self, values: np.ndarray, origins: np.ndarray, lookback: int) -> np.ndarray:
        """Forecast at each origin t from rows [t-lookback+1, t] only: (N, horizon, n_targets)."""
        raise NotImplementedError(f"{type(self).__name__} has no windowed backtest")

    def _forecast_stream(self, values: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        """Forecasts at rows `origins` (default: every row) of one pass from the start of `values`:
        (len(origins), horizon, k)."""
        raise NotImplementedError(f"{type(self).__name__} has no one-pass backtest")


def _step(index: pd.Index, freq: Any) -> Any:
    """One step of a series: a Timedelta for timestamps, the integer step otherwise."""
    return pd.Timedelta(freq) if isinstance(index, pd.DatetimeIndex) else freq


def _class_by_path(path: str) -> type:
    import importlib

    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


class _CPUUnpickler(pickle.Unpickler):
    """Unpickles tensors saved on any device onto the CPU (a GPU-trained model loads anywhere)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.storage" and name == "_load_from_bytes":
            import io

            import torch

            return lambda b: torch.load(io.BytesIO(b), map_location="cpu", weights_only=False)
        return super().find_class(module, name)
