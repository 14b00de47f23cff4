"""Known-ahead inputs for every forecaster: future covariates and calendar features.

`KnownAhead` is a mixin of `BaseForecaster`. The columns of X named in `future_covariates` and
the calendar features made from the timestamps (`tsessm.calendar`) are known for the forecast
steps; `_known_ahead_effect` turns their values at those steps into what they add to the point
forecast, through the model's `_future_effect`.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from tsessm.calendar import calendar_columns, calendar_features, parse_calendar
from tsessm.data import check_magnitudes


class KnownAhead:
    """Future covariates and calendar features (see the module docstring); the host class is a
    BaseForecaster."""

    # Whether the model uses known-ahead values; one that does not (naive, linear) ignores
    # them with a warning at fit and never asks for them.
    USES_KNOWN_AHEAD = True

    def _future_columns(self, columns: list[str], own: list[str]) -> list[str]:
        """The columns known ahead: the `future_covariates` of X, then the calendar features."""
        declared = list(getattr(self, "future_covariates", None) or [])
        calendar = calendar_columns(self._calendar())
        from_x = [c for c in columns if c not in own and c not in calendar]
        absent = [c for c in declared if c not in from_x]
        if absent:
            raise ValueError(f"future_covariates {absent} are not columns of X (X has {from_x})")
        if not self.USES_KNOWN_AHEAD and (declared or calendar):
            warnings.warn(f"{type(self).__name__} ignores future_covariates and calendar features: it forecasts "
                          f"from past values only", UserWarning, stacklevel=4)
            return []
        return declared + calendar

    def _calendar(self) -> dict[str, str]:
        """The `calendar` parameter, parsed once per value (observe asks for it every row)."""
        spec = getattr(self, "calendar", None)
        cached = self.__dict__.get("_calendar_cache")
        if cached is None or cached[0] != repr(spec):
            cached = self._calendar_cache = (repr(spec), parse_calendar(spec))
        return cached[1]

    def _n_user_future(self) -> int:
        """How many columns of X the model needs ahead (its `future_covariates`)."""
        return len(getattr(self, "future_columns_", ())) - len(getattr(self, "calendar_columns_", ()))

    @property
    def observed_columns(self) -> list[str]:
        """The columns a new row carries (`observe`, a stream record): `columns_` without the
        calendar features, which come from the timestamps."""
        check_is_fitted(self, "n_seen_")
        return list(self._observed())

    def _observed(self) -> list[str]:
        return self.columns_[: len(self.columns_) - len(getattr(self, "calendar_columns_", ()))]

    @property
    def known_ahead_columns(self) -> list[str]:
        """The `future_covariates` whose next `horizon` values a forecast needs (not the calendar
        features, which come from the timestamps)."""
        check_is_fitted(self, "n_seen_")
        return list(getattr(self, "future_columns_", [])[: self._n_user_future()])

    def _known_ahead_effect(self, steps: np.ndarray, index: pd.Index, X: Any) -> np.ndarray | float:
        """What the known-ahead values at the forecast steps add to the forecast: (len(steps), k),
        or 0.0 for a model without them. Refuses values outside the fit's range (they could
        overflow the forecast) and a result that is not finite."""
        columns = getattr(self, "future_columns_", None)
        if X is not None and not self._n_user_future() and not getattr(self, "future_covariates", None):
            raise ValueError(f"got future covariate values (X / future), but this {type(self).__name__} has "
                             f"no future_covariates")
        if not columns:
            return 0.0
        user = self._future_from_x(X, steps, index)
        calendar = calendar_features(index, self._calendar()) if self.calendar_columns_ else np.empty((len(steps), 0))
        known = np.hstack([user, calendar])
        center = getattr(self, "value_center_", None)
        if center is not None:
            idx = [self.columns_.index(c) for c in columns]
            check_magnitudes(known, center[idx], self.value_scale_[idx], columns, index, "future covariates")
        effect = self._future_effect(known, steps)
        if not np.isfinite(effect).all():
            raise ValueError("the future covariates give a forecast that is not finite (NaN or inf)")
        return effect

    def _future_from_x(self, X: Any, steps: np.ndarray, index: pd.Index) -> np.ndarray:
        """The future covariates' values at the forecast steps: (len(steps), F). X: a pandas frame
        indexed by timestamps (or a polars frame with the model's time column) holding at least
        those steps, or plain rows, one per step."""
        names = self.future_columns_[: self._n_user_future()]
        if not names:
            return np.empty((len(steps), 0))
        if X is None:
            raise ValueError(f"this model has future_covariates {names}: pass their values at the forecast steps "
                             f"{steps.tolist()} (predict(X=...), observe(future=...))")
        if isinstance(X, (np.ndarray, list, tuple)):  # plain rows, one per forecast step
            values = np.asarray(X, dtype=np.float64)
            values = values[:, None] if values.ndim == 1 and len(names) == 1 else values
            if values.shape != (len(steps), len(names)):
                raise ValueError(f"the future covariates must be {len(steps)} rows (one per forecast step "
                                 f"{steps.tolist()}) of {names}, got shape {values.shape}")
        else:
            frame = _as_frame(X, getattr(self.input_kind_, "time_col", None))
            absent = [c for c in names if c not in frame.columns]
            if absent:
                raise ValueError(f"X lacks the future covariate column(s) {absent}")
            rows = frame.index.get_indexer(index) if frame.index.is_unique else np.full(len(index), -2)
            if (rows == -2).all():
                raise ValueError("X has repeated timestamps")
            if (rows < 0).any():
                lacking = [f"step {s} ({t})" for s, t, r in zip(steps, index, rows) if r < 0]
                raise ValueError(f"X lacks the future covariates {names} at {', '.join(lacking)}")
            try:
                values = frame[names].to_numpy(dtype=np.float64)[rows]
            except (TypeError, ValueError) as exc:
                raise TypeError(f"X: the future covariates {names} must be numbers ({exc})") from None
        bad = ~np.isfinite(values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"the future covariate {names[c]!r} is {values[r, c]} at forecast step {steps[r]}")
        return values

    def _future_effect(self, future: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """What known-ahead values add to the forecast at `steps`: future (len(steps), F) in
        original units (the future covariates, then the calendar features) -> (len(steps), k)."""
        raise NotImplementedError(f"{type(self).__name__} does not use future covariates")


def _as_frame(X: Any, time_col: str | None) -> pd.DataFrame:
    """predict's X as a pandas frame indexed by its timestamps (only the rows asked for are read,
    so X may hold more rows, gaps or other columns)."""
    if type(X).__module__.startswith("polars"):
        X = X.to_pandas()
        column = time_col if time_col in X.columns else next(
            (c for c in X.columns if pd.api.types.is_datetime64_any_dtype(X[c])), None)
        if column is None:
            raise ValueError("X (polars) has no time column to match the forecast steps by")
        X = X.set_index(column)
    if isinstance(X, pd.Series):
        X = X.to_frame()
    if not isinstance(X, pd.DataFrame) or not isinstance(X.index, pd.DatetimeIndex):
        raise TypeError("X must be a pandas DataFrame indexed by timestamps, a polars DataFrame with a time "
                        f"column, or plain rows (one per forecast step); got {type(X).__name__}")
    return X
