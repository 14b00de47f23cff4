"""Input validation and conversion, in one place.

Every forecaster turns what the user gave (pandas, polars or numpy) into a `Series` here,
before anything about the estimator changes, and turns forecasts back into the same kind.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tsessm.columns import TIME_COLUMNS

MISSING_POLICIES = ("error", "ffill", "interpolate")


@dataclass
class Series:
    """A validated, regular multivariate series.

    values: (T, C) float64. `index` holds the timestamps (DatetimeIndex) or integer steps
    (int64 Index). `kind` records the input type so outputs come back in the same form.
    """

    values: np.ndarray
    columns: list[str]
    index: pd.Index
    freq: Any  # pd.DateOffset / Timedelta for timestamps, int 1 for integer steps, None if unknown
    kind: str  # "pandas", "pandas-series", "polars", "numpy-1d", "numpy-2d"
    time_col: str | None = None  # the polars time column's name
    time_dtype: Any = None  # and its polars dtype, so outputs keep the unit
    filled: np.ndarray = field(default=None)  # (T,) bool: rows created by a missing= policy

    def __len__(self) -> int:
        return len(self.values)


def _positions(index: pd.Index) -> np.ndarray:
    """Index labels as int64: nanoseconds for timestamps, the steps themselves otherwise."""
    if not isinstance(index, pd.DatetimeIndex):
        return index.to_numpy(np.int64)
    return index.asi8 if index.unit == "ns" else index.as_unit("ns").asi8


def _row_label(index: pd.Index, row: int) -> str:
    return f"row {row} ({index[row]})" if isinstance(index, pd.DatetimeIndex) else f"row {row}"


def _from_pandas(y: pd.DataFrame | pd.Series, name: str) -> tuple[pd.DataFrame, str]:
    if isinstance(y, pd.Series):
        return y.to_frame(name=str(y.name) if y.name is not None else "y"), "pandas-series"
    return y, "pandas"


def _from_polars(y: Any, name: str) -> tuple[pd.DataFrame, str, str, Any]:
    import polars as pl

    time_cols = [c for c, t in y.schema.items() if isinstance(t, pl.Datetime) or t == pl.Date]
    if len(time_cols) != 1:
        raise ValueError(
            f"{name}: a polars frame needs exactly one Datetime column, found {len(time_cols)}"
            + (f" ({', '.join(time_cols)})" if time_cols else "")
        )
    time_col = time_cols[0]
    frame = y.drop(time_col).to_pandas()
    frame.index = pd.DatetimeIndex(y[time_col].to_pandas(), name=time_col)
    return frame, "polars", time_col, y.schema[time_col]


def _from_numpy(y: np.ndarray, name: str) -> tuple[pd.DataFrame, str]:
    if y.ndim not in (1, 2):
        raise ValueError(f"{name}: a numpy array must be 1-D or 2-D, got shape {y.shape}")
    kind = f"numpy-{y.ndim}d"
    if y.size == 0:
        raise ValueError(f"{name} is empty (shape {y.shape})")
    arr = y.reshape(len(y), -1)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: the array's dtype {arr.dtype} is not a real number type")
    return pd.DataFrame(arr, columns=[str(i) for i in range(arr.shape[1])]), kind


def _check_index(frame: pd.DataFrame, name: str, kind: str) -> None:
    index = frame.index
    if kind.startswith("pandas") and not isinstance(index, pd.DatetimeIndex):
        if not pd.api.types.is_integer_dtype(index):
            raise TypeError(
                f"{name}: the index must be a DatetimeIndex (or integer steps), got {type(index).__name__}"
            )
    if index.hasnans:
        raise ValueError(f"{name}: missing timestamp at {_row_label(index, int(np.argmax(index.isna())))}")
    deltas = np.diff(_positions(index))
    if (deltas == 0).any():
        row = int(np.argmax(deltas == 0)) + 1
        raise ValueError(f"{name}: duplicate timestamp at {_row_label(index, row)}")
    if (deltas < 0).any():
        row = int(np.argmax(deltas < 0)) + 1
        raise ValueError(f"{name}: timestamps are not increasing at {_row_label(index, row)}")


def _check_columns(frame: pd.DataFrame, name: str) -> None:
    if frame.columns.has_duplicates:
        dup = frame.columns[frame.columns.duplicated()][0]
        raise ValueError(f"{name}: column {dup!r} appears more than once")
    for col, dtype in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            raise TypeError(f"{name}: column {col!r} is not numeric (dtype {dtype})")


def infer_freq(index: pd.Index) -> Any:
    """The regular step of an index: the smallest positive difference (a gap is a larger one)."""
    if not isinstance(index, pd.DatetimeIndex):
        return 1
    if len(index) < 2:
        return index.freq
    return pd.Timedelta(int(np.diff(_positions(index)).min()), unit="ns")


def _regularise(frame: pd.DataFrame, freq: Any, missing: str, name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Check for gaps (or fill them, with missing=ffill/interpolate); returns the filled-row mask."""
    index = frame.index
    if freq is None or len(index) < 2:
        return frame, np.zeros(len(frame), bool)
    step = pd.Timedelta(freq).value if isinstance(index, pd.DatetimeIndex) else 1
    raw = _positions(index)
    deltas = np.diff(raw)
    if (deltas % step).any():
        row = int(np.argmax(deltas % step != 0)) + 1
        raise ValueError(f"{name}: irregular timestamps: {_row_label(index, row)} is off the {freq} grid")
    if (deltas == step).all():
        return frame, np.zeros(len(frame), bool)
    if missing == "error":
        row = int(np.argmax(deltas != step))
        raise ValueError(
            f"{name}: gap after {_row_label(index, row)}: the next observation is {index[row + 1]}, "
            f"expected a step of {freq}; pass missing='ffill' or 'interpolate' to fill it"
        )
    full = (
        pd.date_range(index[0], index[-1], freq=pd.Timedelta(freq), name=index.name)
        if isinstance(index, pd.DatetimeIndex)
        else pd.RangeIndex(raw[0], raw[-1] + 1, name=index.name)
    )
    return frame.reindex(full), ~full.isin(index)


def _check_values(frame: pd.DataFrame, missing: str, name: str) -> pd.DataFrame:
    values = frame.to_numpy(dtype=np.float64)
    if np.isinf(values).any():
        row, col = np.argwhere(np.isinf(values))[0]
        raise ValueError(f"{name}: column {frame.columns[col]!r} is infinite at {_row_label(frame.index, row)}")
    nan = np.isnan(values)
    if nan.any():
        if missing == "error":
            row, col = np.argwhere(nan)[0]
            raise ValueError(
                f"{name}: column {frame.columns[col]!r} is NaN at {_row_label(frame.index, row)}; "
                "pass missing='ffill' or 'interpolate' to fill it"
            )
        frame = frame.astype(np.float64).ffill() if missing == "ffill" else frame.astype(np.float64).interpolate()
        still = np.isnan(frame.to_numpy())
        if still.any():
            row, col = np.argwhere(still)[0]
            raise ValueError(
                f"{name}: column {frame.columns[col]!r} is NaN at {_row_label(frame.index, row)} "
                "with no earlier value to fill from"
            )
    return frame


def to_series(y: Any, *, missing: str = "error", name: str = "y", freq: Any = None) -> Series:
    """Validate `y` and convert it to a `Series`. Raises TypeError/ValueError naming the problem.

    `freq`: the expected step (used for `update`, where the chunk may be one row long).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
    time_col = time_dtype = None
    if isinstance(y, (pd.DataFrame, pd.Series)):
        frame, kind = _from_pandas(y, name)
    elif type(y).__module__.startswith("polars") and type(y).__name__ == "DataFrame":
        frame, kind, time_col, time_dtype = _from_polars(y, name)
    elif isinstance(y, np.ndarray):
        frame, kind = _from_numpy(y, name)
    elif isinstance(y, (list, tuple)):
        frame, kind = _from_numpy(np.asarray(y), name)
    else:
        raise TypeError(
            f"{name} must be a pandas DataFrame/Series, a polars DataFrame or a numpy array, "
            f"got {type(y).__name__}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {frame.shape})")
    # inferred_type is cached on the Index, which a stream's rows share; a missing label
    # (None, NaN, NA) still infers as "string" and is renamed like any other non-string
    if frame.columns.inferred_type != "string" or frame.columns.hasnans:
        frame = frame.rename(columns=str)
    _check_columns(frame, name)
    _check_index(frame, name, kind)
    freq = freq if freq is not None else infer_freq(frame.index)
    frame, filled = _regularise(frame, freq, missing, name)
    frame = _check_values(frame, missing, name)
    return Series(
        values=frame.to_numpy(dtype=np.float64),
        columns=frame.columns.tolist(),
        index=frame.index,
        freq=freq,
        kind=kind,
        time_col=time_col,
        time_dtype=time_dtype,
        filled=filled,
    )


def with_covariates(y: Series, X: Series) -> Series:
    """Append covariate columns X (same rows as y) to y."""
    if len(X) != len(y) or not X.index.equals(y.index):
        raise ValueError(f"X must have the same timestamps as y ({len(X)} rows vs {len(y)})")
    clash = sorted(set(X.columns) & set(y.columns))
    if clash:
        raise ValueError(f"X column {clash[0]!r} is also a column of y")
    return replace(y, values=np.hstack([y.values, X.values]), columns=y.columns + X.columns)


def resolve_target(columns: Sequence[str], target: str | Sequence[str] | None) -> list[str]:
    """The target columns: all of them when target is None; unknown names raise ValueError."""
    if target is None:
        return list(columns)
    names = [target] if isinstance(target, (str, int)) else list(target)
    names = [str(t) for t in names]
    if not names:
        raise ValueError("target is an empty list; pass None to forecast every column")
    for t in names:
        if t not in columns:
            raise ValueError(f"target column {t!r} is not in the data (columns: {', '.join(columns)})")
    if len(set(names)) != len(names):
        raise ValueError(f"target names a column twice: {names}")
    return names


def future_index(index: pd.Index, freq: Any, steps: np.ndarray) -> pd.Index:
    """Index labels for `steps` (1-based) steps after the last label of `index`."""
    if isinstance(index, pd.DatetimeIndex):
        # int64 nanoseconds since the epoch (UTC for an aware index): much cheaper than
        # Timestamp + TimedeltaIndex, which matters once per forecast of a stream.
        ns = _positions(index[-1:])[0] + np.asarray(steps, dtype=np.int64) * pd.Timedelta(freq).value
        out = pd.DatetimeIndex(ns.astype("datetime64[ns]"), name=index.name)
        return out if index.tz is None else out.tz_localize("UTC").tz_convert(index.tz)
    return pd.Index(index[-1] + np.asarray(steps), name=index.name)


@functools.lru_cache(maxsize=256)
def _column_index(columns: tuple[str, ...]) -> pd.Index:
    """The columns as a pandas Index, built once: inferring its string dtype costs ~0.2 ms a time."""
    return pd.Index(columns)


def to_output(values: np.ndarray, columns: list[str], index: pd.Index, like: Series) -> Any:
    """Forecast values (len(index), k) in the same kind as the series the model was fitted on."""
    if like.kind.startswith("numpy"):
        return values
    # a shallow copy: callers may rename their frame's columns Index in place
    frame = pd.DataFrame(values, index=index, columns=_column_index(tuple(columns)).copy(deep=False))
    if like.kind == "pandas-series" and len(columns) == 1:
        return frame[columns[0]]
    if like.kind == "polars":
        import polars as pl

        out = pl.from_pandas(frame.reset_index(names=like.time_col))
        return out.with_columns(pl.col(like.time_col).cast(like.time_dtype)) if like.time_dtype is not None else out
    return frame


# A new value more than this many standard deviations (of the fit's data) from the fit's mean is
# refused like NaN: scaled, it would take float32 states (max ~3.4e38) towards overflow within a
# few products, after which every forecast is NaN. No real series moves a million deviations.
MAX_DEVIATIONS = 1e6


def within_bounds(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> bool:
    """Every value within MAX_DEVIATIONS standard deviations of `mean` (False for NaN and inf too)."""
    return bool((np.abs(values - mean) <= MAX_DEVIATIONS * std).all())


def check_magnitudes(values: np.ndarray, mean: np.ndarray, std: np.ndarray, columns: Sequence[str],
                     labels: Sequence[Any], name: str) -> None:
    """Refuse values (T, C) beyond MAX_DEVIATIONS standard deviations from `mean`, naming the
    row (its label) and the column."""
    if within_bounds(values, mean, std):  # the common case: four numpy calls
        return
    with np.errstate(over="ignore", invalid="ignore"):
        deviations = np.abs((values - mean) / std)
    bad = ~(deviations <= MAX_DEVIATIONS)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: row {labels[row]}, column {columns[col]!r}: {values[row, col]:.6g} lies "
            f"{deviations[row, col]:.3g} standard deviations from the fit's mean; values beyond "
            f"{MAX_DEVIATIONS:.0e} would overflow the model's state and are refused"
        )


def standard_stats(values: np.ndarray, columns: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of (T, C) values; a constant column gets std 1.

    Raises ValueError (naming the column) when a column is too large to scale.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, naming the column
        mean, std = values.mean(axis=0), values.std(axis=0)
    bad = ~(np.isfinite(mean) & np.isfinite(std))
    if bad.any():
        col = int(np.argmax(bad))
        name = columns[col] if columns is not None else col
        raise ValueError(f"column {name!r} is too large to scale (its standard deviation overflows)")
    return mean, np.where(std > 1e-12, std, 1.0)


def read_table(path: str, time_col: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame indexed by its time column.

    time_col: the timestamp column; default the first of `TIME_COLUMNS` present ("time", "date",
    "timestamp", "ds").
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path}")
    if path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    elif path.endswith((".csv", ".csv.gz", ".txt")):
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported file type; use .csv, .csv.gz or .parquet")
    candidates = [time_col] if time_col else [c for c in TIME_COLUMNS if c in frame]
    if not candidates or candidates[0] not in frame:
        raise ValueError(
            f"{path}: no time column found (looked for {time_col or ', '.join(TIME_COLUMNS)}); "
            f"columns are {', '.join(map(str, frame.columns[:10]))}"
        )
    col = candidates[0]
    try:
        index = pd.DatetimeIndex(pd.to_datetime(frame[col]), name=col)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: column {col!r} does not parse as timestamps ({exc})") from None
    return frame.drop(columns=col).set_axis(index)
