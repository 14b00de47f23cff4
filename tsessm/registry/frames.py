"""The pyfunc's input and output: new observations in, one tidy row per forecast step out."""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from tsessm.columns import TIME_COLUMNS
from tsessm.forecasters.base import BaseForecaster
from tsessm.forecasters.panel import PanelForecaster


def forecast_frame(model: Any, new_rows: Any = None, fh: int | Sequence[int] | None = None) -> pd.DataFrame:
    """The pyfunc's predict, usable directly: absorb `new_rows` in a copy of `model`, forecast.

    `model` is never changed. Returns the long frame described in `tsessm.registry`.
    """
    frame = as_frame(new_rows)
    fh = _steps_asked(frame, fh)
    if "fh" in frame.columns:
        frame = frame.drop(columns="fh")
    if isinstance(model, PanelForecaster):
        return _panel_forecast(model, frame, fh)
    observations = _observations(model, frame)
    if observations is not None:
        model = copy.deepcopy(model)
        model.update(observations)
    return _tidy(model, model.predict(fh=fh), fh)


def default_input_example(model: Any) -> pd.DataFrame:
    """An input example with no rows (= forecast from the logged state), typed like real input."""
    if isinstance(model, PanelForecaster):
        columns = {model.id_col: pd.Series([], dtype="object"), "time": pd.Series([], dtype="datetime64[ns]")}
    elif model.input_kind_.kind.startswith("numpy"):
        columns = {}
    else:
        columns = {"time": pd.Series([], dtype="datetime64[ns]")}
    for name in model.columns_:
        columns[str(name)] = pd.Series([], dtype="float64")
    return pd.DataFrame(columns)


def as_frame(new_rows: Any) -> pd.DataFrame:
    """New observations as a pandas DataFrame (None: no rows)."""
    if new_rows is None:
        return pd.DataFrame()
    if isinstance(new_rows, pd.Series):
        return new_rows.to_frame()
    if type(new_rows).__module__.startswith("polars"):
        return new_rows.to_pandas()
    if isinstance(new_rows, dict):
        return pd.DataFrame(new_rows)
    if not isinstance(new_rows, pd.DataFrame):
        raise TypeError(f"new observations must be a pandas DataFrame, got {type(new_rows).__name__}")
    return new_rows


def _steps_asked(frame: pd.DataFrame, fh: Any) -> list[int] | None:
    """Steps asked for by `fh` (params) or an `fh` column; None = every step."""
    column = None
    if "fh" in frame.columns:
        values = pd.to_numeric(frame["fh"], errors="coerce").dropna()
        if len(values):
            if not np.allclose(values, np.round(values)):
                raise ValueError(f"fh column must hold integers, got {values.tolist()}")
            column = sorted({int(v) for v in values})
    if fh is not None and not isinstance(fh, (int, np.integer)):
        fh = [int(v) for v in fh] or None  # [] (the params default) = every step
    if isinstance(fh, (int, np.integer)):
        fh = [int(fh)]
    if fh is not None and column is not None and sorted(fh) != column:
        raise ValueError(f"fh given twice and differently: params {fh}, column {column}")
    return fh if fh is not None else column


def _time_column(frame: pd.DataFrame, extra: Sequence[str | None] = ()) -> str | None:
    for name in (*extra, *TIME_COLUMNS):
        if name is not None and name in frame.columns:
            return name
    return None


def _observations(model: BaseForecaster, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The rows to absorb, as a frame the model's `update` takes; None when there are none."""
    if not hasattr(model, "columns_"):
        raise NotFittedError(f"{type(model).__name__} is not fitted")
    columns = list(model.columns_)
    fitted_name = getattr(getattr(model, "last_index_", None), "name", None)
    time_col = _time_column(frame, [fitted_name] if isinstance(fitted_name, str) else [])
    present = [c for c in frame.columns if c != time_col]
    if len(frame) == 0 or (not present and time_col is None):
        return None
    data = frame.dropna(how="all")  # rows that carried only fh
    if len(data) == 0:
        return None
    unknown = [c for c in present if c not in columns]
    missing = [c for c in columns if c not in present]
    if unknown or missing:
        raise ValueError(
            f"new observations need the model's columns {columns} and a time column "
            f"({', '.join(TIME_COLUMNS)}): missing {missing}, unexpected {unknown}"
        )
    values = data[columns].apply(pd.to_numeric, errors="raise").astype("float64")
    if model.input_kind_.kind.startswith("numpy"):
        return values.to_numpy()  # integer steps: rows follow by definition
    if time_col is not None:
        try:
            index = pd.DatetimeIndex(pd.to_datetime(data[time_col]), name=model.last_index_.name)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {time_col!r} does not parse as timestamps ({exc})") from None
    elif isinstance(data.index, pd.DatetimeIndex):
        index = data.index.rename(model.last_index_.name)
    else:
        raise ValueError(f"new observations need a time column ({', '.join(TIME_COLUMNS)}) or a DatetimeIndex")
    if index.tz is not None and model.last_index_.tz is None:
        index = index.tz_convert(None)
    return values.set_axis(index)


def _time_strings(index: Any) -> list[str]:
    if isinstance(index, pd.DatetimeIndex):
        return [t.isoformat() for t in index]
    return [str(int(t)) if isinstance(t, (int, np.integer)) else str(t) for t in index]


def _tidy(model: BaseForecaster, forecast: Any, fh: list[int] | None) -> pd.DataFrame:
    targets = [str(t) for t in model.target_columns_]
    clash = [t for t in targets if t in ("time", "step")]
    if clash:
        raise ValueError(f"a target named {clash[0]!r} clashes with the output's own columns (time, step)")
    steps = np.asarray(model.resolve_fh(fh), dtype="int64")
    if isinstance(forecast, np.ndarray):  # integer steps: 0-based position in everything seen so far
        values, times = forecast, pd.Index(model.n_seen_ - 1 + steps)
    elif type(forecast).__module__.startswith("polars"):
        time_col = model.input_kind_.time_col
        pdf = forecast.to_pandas()
        values, times = pdf[targets].to_numpy(), pd.DatetimeIndex(pdf[time_col])
    else:
        if isinstance(forecast, pd.Series):
            forecast = forecast.to_frame(targets[0])
        values, times = forecast[targets].to_numpy(), forecast.index
    out = pd.DataFrame({"time": _time_strings(times), "step": steps})
    for j, name in enumerate(targets):
        out[name] = np.asarray(values[:, j], dtype="float64")
    return out


def _panel_forecast(panel: PanelForecaster, frame: pd.DataFrame, fh: list[int] | None) -> pd.DataFrame:
    time_col = _time_column(frame, [panel.time_col])
    data = frame.dropna(how="all")  # rows that carried only fh
    if len(data):
        if panel.id_col not in data.columns or time_col is None:
            raise ValueError(f"panel observations need the columns {panel.id_col!r} and a time column")
        data = data.rename(columns={time_col: panel.time_col})
        try:
            data[panel.time_col] = pd.to_datetime(data[panel.time_col])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {time_col!r} does not parse as timestamps ({exc})") from None
        panel = copy.deepcopy(panel)
        panel.update(data)
    forecast = panel.predict(fh=fh)
    if type(forecast).__module__.startswith("polars"):
        forecast = forecast.to_pandas()
    steps = np.asarray(panel.model_.resolve_fh(fh), dtype="int64")
    out = pd.DataFrame({
        panel.id_col: forecast[panel.id_col].to_numpy(),
        "time": _time_strings(pd.DatetimeIndex(forecast[panel.time_col])),
        "step": np.tile(steps, len(forecast) // len(steps)),  # predict: one block of steps per series
    })
    for name in (str(t) for t in panel.target_columns_):
        out[name] = forecast[name].to_numpy(dtype="float64")
    return out
