"""The runner's view of a model: a small protocol, so one runner serves one series or a panel.

The runner never calls a forecaster directly. It asks an adapter:

    adapter.freq                      the step between observations (pd.Timedelta or pd.DateOffset)
    adapter.columns                   value fields every record must carry (list[str])
    adapter.targets                   the forecast's keys (list[str])
    adapter.tz                        the time zone of the model's timestamps (None = naive)
    adapter.last_time(series_id)      -> pd.Timestamp | None: the last observation absorbed
    adapter.apply(series_id, time, values: dict[str, float], future) -> None: absorb one observation
    adapter.forecast(series_id)       -> dict[str, list[float]]: the next H steps per target
    adapter.interval(series_id, coverage) -> {target: {"lo": [...], "hi": [...]}}: its interval
    adapter.track(coverage)           recalibrate that coverage's intervals online (--coverage)
    adapter.save(path)                -> dict: write the model and its state to `path` (one file),
                                         return small JSON-able extras kept in the checkpoint
    type(adapter).load(path, extras)  -> adapter: the inverse of save

The runner validates each record (fields, numbers, timestamp, order, gaps) before calling
`apply`, so `apply` only sees the observation that follows `last_time(series_id)` by one step.
An adapter raises `RecordError` for a problem that belongs to the record (e.g. a series id it
does not serve); the runner reports that record as bad, and the adapter must leave its state
as it was. Any other exception stops the stream.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from tsessm.data import as_offset
from tsessm.forecasters.base import BaseForecaster
from tsessm.forecasters.panel import PanelForecaster
from tsessm.registry import load_forecaster

SeriesId = Hashable  # None for a single unnamed series; a str or int from --id-col


class RecordError(ValueError):
    """A record the adapter cannot take (the runner reports it as a bad record)."""


@runtime_checkable
class StreamAdapter(Protocol):
    freq: Any
    columns: list[str]
    targets: list[str]
    tz: Any

    def last_time(self, series_id: SeriesId) -> pd.Timestamp | None: ...

    def apply(self, series_id: SeriesId, time: pd.Timestamp, values: dict[str, float]) -> None: ...

    def forecast(self, series_id: SeriesId) -> dict[str, list[float]]: ...

    def save(self, path: str | Path) -> dict: ...

    @classmethod
    def load(cls, path: str | Path, extras: dict) -> "StreamAdapter": ...


UNSET = object()  # a single-series adapter's `served` id before its first record


class SingleSeriesAdapter:
    """One fitted `BaseForecaster` over one series.

    Without --id-col every record's series id is None. With --id-col the first id seen is
    the series this model serves; a record with another id is a bad record naming that id.
    """

    def __init__(self, forecaster: Any) -> None:
        check_is_fitted(forecaster, "n_seen_")
        if not isinstance(forecaster.last_index_, pd.DatetimeIndex):
            raise ValueError(
                f"{type(forecaster).__name__} was fitted on integer steps, not timestamps; "
                "streaming needs a model fitted on a time-indexed series"
            )
        if not forecaster.can_stream:
            raise ValueError(
                f"{type(forecaster).__name__} cannot stream (a bidirectional model reads the future of every "
                "position); use one fitted with bidirectional=False"
            )
        self.model = forecaster
        self.horizon = forecaster.horizon
        self.freq = as_offset(forecaster.freq_)  # a Timedelta in files of tsessm 0.3 and older
        self.columns = forecaster.observed_columns  # calendar features come from the time
        self.known_ahead = forecaster.known_ahead_columns  # a record's "future" field carries these
        self.targets = list(forecaster.target_columns_)
        self.future: Any = None  # the last record's known-ahead values, (horizon, F)
        self.tz = forecaster.last_index_.tz
        self.index_name = forecaster.last_index_.name
        self.served: Any = UNSET  # the first series id seen (None without --id-col), UNSET before it

    @property
    def series_id(self) -> Any:
        """The series this model serves (None without --id-col, and before the first record)."""
        return None if self.served is UNSET else self.served

    def _check(self, series_id: SeriesId) -> None:
        if self.served is UNSET:
            self.served = series_id  # the first id seen names the series
        elif series_id != self.served or type(series_id) is not type(self.served):
            raise RecordError(
                f"series id {series_id!r} is not the one this single-series model serves "
                f"({self.served!r}, the first id seen)"
            )

    def last_time(self, series_id: SeriesId) -> pd.Timestamp:
        self._check(series_id)
        return self.model.last_index_[0]

    def apply(self, series_id: SeriesId, time: pd.Timestamp, values: dict[str, float], future: Any = None) -> None:
        self._check(series_id)
        try:  # `observe` validates before it changes anything (the fast one-row path)
            self.model.observe([values[c] for c in self.columns], time, future=future)
        except (ValueError, TypeError) as exc:
            raise RecordError(str(exc)) from None
        self.future = future

    def forecast(self, series_id: SeriesId) -> dict[str, list[float]]:
        self._check(series_id)
        out = self.model.current_forecast(self.future)  # predict() without the frame around it
        return {t: out[:, j].tolist() for j, t in enumerate(self.targets)}

    def track(self, coverage: float) -> None:
        """Recalibrate the intervals of `coverage` online (kept when a checkpoint already does)."""
        tracker = getattr(self.model, "interval_tracker_", None)
        if tracker is None or tracker.coverage != coverage:
            self.model.track_coverage(coverage)

    def interval(self, series_id: SeriesId, coverage: float) -> dict[str, dict[str, list[float]]]:
        """{target: {"lo": [...H], "hi": [...H]}}: the interval of `coverage` around the forecast."""
        self._check(series_id)
        try:
            bounds = self.model.current_interval(coverage, self.future)
        except ValueError:  # no calibration (a fit too short to hold rows out): no interval
            return None
        return {t: {"lo": bounds[:, j, 0].tolist(), "hi": bounds[:, j, 1].tolist()} for j, t in enumerate(self.targets)}

    def save(self, path: str | Path) -> dict:
        self.model.save(path)
        return {} if self.served is UNSET else {"series_id": self.served}

    @classmethod
    def load(cls, path: str | Path, extras: dict, allow_pickle: bool = False) -> "SingleSeriesAdapter":
        adapter = cls(BaseForecaster.load(path, allow_pickle=allow_pickle))
        if "series_id" in extras:
            adapter.served = extras["series_id"]
        return adapter


class PanelAdapter:
    """A fitted `PanelForecaster`: one recurrent state per series id (ids matched as text too,
    since CSV fields arrive as strings). A series the model has never seen is a bad record:
    it needs its history (`PanelForecaster.update`) before it can stream."""

    def __init__(self, panel: Any) -> None:
        check_is_fitted(panel, "model_")
        self.panel = panel
        self.horizon = panel.model_.horizon
        self.freq = as_offset(panel.freq_)
        self.columns = list(panel.columns_)
        self.known_ahead: list[str] = []  # a panel takes no future covariates
        self.targets = list(panel.target_columns_)
        self.tz = getattr(panel.last_time_[0], "tz", None)

    def row(self, series_id: SeriesId) -> int | None:
        """The panel's row for `series_id` (matched as text too), None for a series it does not know."""
        ids = self.panel.ids_
        if series_id in ids:
            return ids.index(series_id)
        as_text = [str(k) for k in ids]
        return as_text.index(str(series_id)) if str(series_id) in as_text else None

    def last_time(self, series_id: SeriesId) -> pd.Timestamp | None:
        row = self.row(series_id)
        return None if row is None else self.panel.last_time_[row]

    def apply(self, series_id: SeriesId, time: pd.Timestamp, values: dict[str, float], future: Any = None) -> None:
        row = self.row(series_id)
        if row is None:
            raise RecordError(f"series id {series_id!r} is unknown to this panel model; give it a history first")
        try:
            self.panel.observe([self.panel.ids_[row]], [time], np.array([[values[c] for c in self.columns]]))
        except (ValueError, TypeError) as exc:
            raise RecordError(str(exc)) from None

    def forecast(self, series_id: SeriesId) -> dict[str, list[float]]:
        row = self.row(series_id)
        frame = self.panel.predict(ids=[self.panel.ids_[row]])
        if not isinstance(frame, pd.DataFrame):
            frame = frame.to_pandas()
        return {t: frame[t].astype(float).tolist() for t in self.targets}

    def track(self, coverage: float) -> None:
        """A panel's intervals are its static split-conformal ones (no online recalibration yet)."""

    def interval(self, series_id: SeriesId, coverage: float) -> dict[str, dict[str, list[float]]]:
        row = self.row(series_id)
        try:
            frame = self.panel.predict_interval(ids=[self.panel.ids_[row]], coverage=coverage)
        except ValueError:  # no calibration (its series held out no rows): no interval
            return None
        if not isinstance(frame, pd.DataFrame):
            frame = frame.to_pandas()
        pct = f"{100 * coverage:g}"
        return {t: {"lo": frame[f"{t}-lo-{pct}"].astype(float).tolist(),
                    "hi": frame[f"{t}-hi-{pct}"].astype(float).tolist()} for t in self.targets}

    def save(self, path: str | Path) -> dict:
        self.panel.save(path)
        return {}

    @classmethod
    def load(cls, path: str | Path, extras: dict, allow_pickle: bool = False) -> "PanelAdapter":
        return cls(PanelForecaster.load(path, allow_pickle=allow_pickle))


def load_model(path: str | Path, allow_pickle: bool = False) -> Any:
    """Read what --model names: a file written by `save()` or an MLflow URI such as models:/NAME@champion."""
    return load_forecaster(path, allow_pickle=allow_pickle)


def make_adapter(model: Any) -> StreamAdapter:
    """The adapter for a loaded model (or the adapter itself, passed through).

    Extension point: a multi-series (panel) model gets its own adapter here.
    """
    if isinstance(model, StreamAdapter) and not hasattr(model, "fit"):
        return model
    return PanelAdapter(model) if isinstance(model, PanelForecaster) else SingleSeriesAdapter(model)


def class_path(adapter: Any) -> str:
    return f"{type(adapter).__module__}:{type(adapter).__qualname__}"


# The adapters a checkpoint may name: a manifest never makes the runner import anything else.
ADAPTERS = {class_path_: cls for cls in (SingleSeriesAdapter, PanelAdapter)
            for class_path_ in (f"{cls.__module__}:{cls.__qualname__}",)}


def load_adapter(path_of_class: str, model_file: str | Path, extras: dict, allow_pickle: bool = False) -> StreamAdapter:
    """Rebuild an adapter from a checkpoint: `module:Class` (one of ADAPTERS), its model file and extras."""
    cls = ADAPTERS.get(path_of_class) if isinstance(path_of_class, str) else None
    if cls is None:
        raise ValueError(f"adapter {path_of_class!r} is not one of tsessm's stream adapters ({sorted(ADAPTERS)})")
    return cls.load(model_file, extras, allow_pickle=allow_pickle)
