"""Known-ahead inputs for every forecaster: future covariates and calendar features.

`KnownAhead` is a mixin of `BaseForecaster`. The columns of X named in `future_covariates` and
the calendar features made from the timestamps (`tsessm.calendar`) are known for the forecast
steps; `_known_ahead_effect` turns their values at those steps into what they add to the point
forecast, through the model's `_future_effect`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from tsessm.calendar import calendar_columns, calendar_features, parse_calendar
from tsessm.data import to_series


class KnownAhead:
    """Future covariates and calendar features (see the module docstring); the host class is a
    BaseForecaster."""

    def _future_columns(self, columns: list[str], own: list[str]) -> list[str]:
        """The columns known ahead: the `future_covariates` of X, then the calendar features."""
        declared = list(getattr(self, "future_covariates", None) or [])
        from_x = [c for c in columns if c not in own and c not in calendar_columns(self._calendar())]
        absent = [c for c in declared if c not in from_x]
        if absent:
            raise ValueError(f"future_covariates {absent} are not columns of X (X has {from_x})")
        return declared + calendar_columns(self._calendar())

    def _calendar(self) -> dict[str, str]:
        return parse_calendar(getattr(self, "calendar", None))

    def _n_user_future(self) -> int:
        """How many columns of X the model needs ahead (its `future_covariates`)."""
        return len(getattr(self, "future_columns_", ())) - len(getattr(self, "calendar_columns_", ()))

    @property
    def observed_columns(self) -> list[str]:
        """The columns a new row carries (`observe`, a stream record): `columns_` without the
        calendar features, which come from the timestamps."""
        check_is_fitted(self, "n_seen_")
        return list(self.columns_[: len(self.columns_) - len(getattr(self, "calendar_columns_", ()))])

    @property
    def known_ahead_columns(self) -> list[str]:
        """The `future_covariates` whose next `horizon` values a forecast needs (not the calendar
        features, which come from the timestamps)."""
        check_is_fitted(self, "n_seen_")
        return list(getattr(self, "future_columns_", [])[: self._n_user_future()])

    def _known_ahead_effect(self, steps: np.ndarray, index: pd.Index, X: Any) -> np.ndarray:
        """What the known-ahead values at the forecast steps add to the forecast: (len(steps), k)."""
        columns = getattr(self, "future_columns_", [])
        if not columns:
            if X is not None:
                raise ValueError(f"predict got X, but this {type(self).__name__} has no future_covariates")
            return np.zeros((len(steps), len(self.target_columns_)))
        user = self._future_from_x(X, steps, index)
        calendar = calendar_features(index, self._calendar()) if self.calendar_columns_ else np.empty((len(steps), 0))
        return self._future_effect(np.hstack([user, calendar]), steps)

    def _future_from_x(self, X: Any, steps: np.ndarray, index: pd.Index) -> np.ndarray:
        """The future covariates' values at the forecast steps, from predict's X: (len(steps), F)."""
        names = self.future_columns_[: self._n_user_future()]
        if not names:
            return np.empty((len(steps), 0))
        if X is None:
            raise ValueError(f"this model has future_covariates {names}: pass their values at the forecast steps "
                             f"{steps.tolist()} as predict(X=...)")
        if isinstance(X, (np.ndarray, list, tuple)):  # plain rows, one per forecast step
            values = np.asarray(X, dtype=np.float64)
            values = values[:, None] if values.ndim == 1 and len(names) == 1 else values
            if values.shape != (len(steps), len(names)):
                raise ValueError(f"X must hold {len(steps)} rows (one per forecast step {steps.tolist()}) of the "
                                 f"future covariates {names}, got shape {values.shape}")
        else:
            frame = to_series(X, name="X", freq=self.freq_)
            absent = [c for c in names if c not in frame.columns]
            if absent:
                raise ValueError(f"X lacks the future covariate column(s) {absent}")
            rows = frame.index.get_indexer(index)
            if (rows < 0).any():
                lacking = [f"step {s} ({t})" for s, t, r in zip(steps, index, rows) if r < 0]
                raise ValueError(f"X lacks the future covariates {names} at {', '.join(lacking)}")
            values = frame.values[rows][:, [frame.columns.index(c) for c in names]]
        if not np.isfinite(values).all():
            raise ValueError(f"X: the future covariates {names} hold NaN or inf at the forecast steps")
        return values

    def _future_effect(self, future: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """What known-ahead values add to the forecast at `steps`: future (len(steps), F) in
        original units (the future covariates, then the calendar features) -> (len(steps), k)."""
        raise NotImplementedError(f"{type(self).__name__} does not use future covariates")
