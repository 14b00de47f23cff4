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


FREQ_EXAMPLES = "'h', '15min', 'D', 'B', 'W-SUN', 'MS', 'ME', 'QS-OCT'"


def as_offset(freq: Any, name: str = "freq") -> Any:
    """`freq` as a pandas offset: an alias ('MS', 'QS-OCT', 'B', 'h', '15min', ...), an offset, or a
    Timedelta (model files of tsessm 0.3 and older hold one). An int (integer steps) is returned as
    it is. ValueError naming `name` when pandas does not know it."""
    if freq is None or isinstance(freq, pd.offsets.BaseOffset):
        return freq
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, (bool, np.bool_)):
        return int(freq)
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}={freq!r} is not a pandas frequency (an offset alias such as {FREQ_EXAMPLES}): "
                         f"{exc}") from None
    if offset is None or offset.n <= 0:
        raise ValueError(f"{name}={freq!r} is not a positive step (an offset alias such as {FREQ_EXAMPLES})")
    return offset


def freq_name(freq: Any) -> str:
    """How messages and files name a frequency: the offset alias ('MS', 'h', '15min')."""
    return freq.freqstr if isinstance(freq, pd.offsets.BaseOffset) else str(freq)


def same_freq(a: Any, b: Any) -> bool:
    """Whether two frequencies step on the same grid: equal offsets, equal fixed durations, or
    quarters anchored in months a multiple of 3 apart ('QS-JAN' and 'QS-OCT' are one grid)."""
    a, b = as_offset(a), as_offset(b)
    if a == b:
        return True
    if isinstance(a, pd.offsets.BaseOffset) and isinstance(b, pd.offsets.BaseOffset):
        na, nb = fixed_nanos(a), fixed_nanos(b)
        if na is not None or nb is not None:
            return na == nb
        quarters = (pd.offsets.QuarterBegin, pd.offsets.QuarterEnd, pd.offsets.BQuarterBegin, pd.offsets.BQuarterEnd)
        if type(a) is type(b) and isinstance(a, quarters) and a.n == b.n == 1:
            return (a.startingMonth - b.startingMonth) % 3 == 0
    return False


def fixed_nanos(freq: Any, tz: Any = None) -> int | None:
    """The step in nanoseconds when `freq` is a fixed duration (hours, minutes, and days of a
    zone-free index); None for calendar steps (months, quarters, business days, weeks, days
    across a daylight-saving change)."""
    offset = as_offset(freq)
    if isinstance(offset, pd.offsets.Tick):
        return int(offset.nanos)
    if isinstance(offset, pd.offsets.Day) and tz is None:
        return int(offset.n) * 86_400_000_000_000
    return None


def _pandas_infer(index: pd.DatetimeIndex) -> Any:
    """pandas' own inference as an offset (None when it finds no frequency)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the future-behaviour notice of pandas 3
            alias = pd.infer_freq(index)
    except (TypeError, ValueError):
        return None
    return None if alias is None else pd.tseries.frequencies.to_offset(alias)


def _grid(index: pd.DatetimeIndex, offset: Any) -> pd.DatetimeIndex | None:
    """Every step of `offset` from the first label to the last (None when the first is off it)."""
    if not offset.is_on_offset(index[0]):
        return None
    full = pd.date_range(index[0], index[-1], freq=offset, name=index.name)
    return full.as_unit(index.unit) if len(full) and full[0] == index[0] else None


def _fallback_freq(index: pd.DatetimeIndex) -> Any:
    """The frequency of an index pandas cannot name (a gap, or too short): the offset with the
    fewest steps whose grid holds every label, among the ones pandas infers on short gap-free
    stretches and the most common step (when every step is a multiple of it). With none, the
    most common step: the caller then reports the first row off its grid."""
    deltas = np.diff(_positions(index))
    values, counts = np.unique(deltas, return_counts=True)
    common = int(values[np.argmax(counts)])
    fallback = pd.tseries.frequencies.to_offset(pd.Timedelta(common, unit="ns"))
    candidates: dict[str, Any] = {}
    if len(index) >= 3:
        for width in (3, 5, 8):
            if width > len(index):
                break
            for start in np.unique(np.linspace(0, len(index) - width, num=min(16, len(index) - width + 1)).astype(int)):
                offset = _pandas_infer(index[start:start + width])
                if offset is not None:
                    candidates.setdefault(offset.freqstr, offset)
    if (deltas % common == 0).all():
        candidates.setdefault(fallback.freqstr, fallback)
    best, best_steps = None, None
    for offset in candidates.values():
        nanos = fixed_nanos(offset, index.tz)
        if nanos is not None:
            if (deltas % nanos).any():
                continue
            steps = int((deltas // nanos).sum()) + 1
        else:
            full = _grid(index, offset)
            if full is None or len(full) > 100 * len(index) or (full.get_indexer(index) < 0).any():
                continue
            steps = len(full)
        if best_steps is None or steps < best_steps:
            best, best_steps = offset, steps
    return best if best is not None else fallback


def infer_freq(index: pd.Index) -> Any:
    """The step of an index: a pandas offset for timestamps (pandas' `infer_freq`; for an index it
    cannot name, such as one with a gap, see `_fallback_freq`), 1 for integer steps, None for
    a single timestamp with no frequency."""
    if not isinstance(index, pd.DatetimeIndex):
        return 1
    if index.freq is not None:
        return as_offset(index.freq)
    if len(index) < 2:
        return None
    if len(index) == 2:  # too short for pandas: a calendar step if one joins the two, else their distance
        first, last = index[0], index[1]
        for offset in (pd.offsets.MonthBegin(), pd.offsets.MonthEnd(), pd.offsets.QuarterBegin(startingMonth=first.month),
                       pd.offsets.QuarterEnd(startingMonth=first.month), pd.offsets.YearBegin(), pd.offsets.YearEnd(),
                       pd.offsets.BusinessDay()):
            if offset.is_on_offset(first) and first + offset == last and (last - first) != pd.Timedelta(days=1):
                return offset
        return _fallback_freq(index)
    offset = _pandas_infer(index)
    return offset if offset is not None else _fallback_freq(index)


def _check_freq(freq: Any, index: pd.Index, name: str) -> Any:
    if not isinstance(index, pd.DatetimeIndex):
        if freq is not None and not (isinstance(freq, (int, np.integer)) and freq == 1):
            raise ValueError(f"freq={freq!r} applies to timestamps; {name} is indexed by integer steps")
        return 1
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, (bool, np.bool_)):
        raise ValueError(f"freq={freq!r} is an integer step; {name} is indexed by timestamps (pass an offset "
                         f"alias such as {FREQ_EXAMPLES})")
    return as_offset(freq)


def _regularise(frame: pd.DataFrame, freq: Any, missing: str, name: str,
                inferred: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Check the rows against the grid of `freq` for gaps (or fill them, with
    missing=ffill/interpolate); returns the filled-row mask."""
    index = frame.index
    if freq is None or len(index) < 1:
        return frame, np.zeros(len(frame), bool)
    hint = f" (inferred from the data; pass freq= to set it, e.g. {FREQ_EXAMPLES})" if inferred else ""
    is_time = isinstance(index, pd.DatetimeIndex)
    nanos = fixed_nanos(freq, index.tz) if is_time else 1
    if nanos is None:  # a calendar step: compare with the grid itself
        full = _grid(index, freq)
        if full is None:
            raise ValueError(f"{name}: irregular timestamps: {_row_label(index, 0)} is off the "
                             f"{freq_name(freq)} grid{hint}")
        where = full.get_indexer(index)
        if (where < 0).any():
            row = int(np.argmax(where < 0))
            raise ValueError(f"{name}: irregular timestamps: {_row_label(index, row)} is off the "
                             f"{freq_name(freq)} grid{hint}")
        if len(full) == len(index):
            return frame, np.zeros(len(frame), bool)
        row = int(np.argmax(np.diff(where) != 1))
        expected = full[where[row] + 1]
    else:
        if len(index) < 2:
            return frame, np.zeros(len(frame), bool)
        raw = _positions(index)
        deltas = np.diff(raw)
        if (deltas % nanos).any():
            row = int(np.argmax(deltas % nanos != 0)) + 1
            raise ValueError(f"{name}: irregular timestamps: {_row_label(index, row)} is off the "
                             f"{freq_name(freq)} grid{hint}")
        if (deltas == nanos).all():
            return frame, np.zeros(len(frame), bool)
        row = int(np.argmax(deltas != nanos))
        if is_time:
            expected = index[row] + pd.Timedelta(nanos, unit="ns")
            full = pd.date_range(index[0], index[-1], freq=pd.Timedelta(nanos, unit="ns"), name=index.name)
            full = full.as_unit(index.unit)
        else:
            expected = index[row] + 1
            full = pd.RangeIndex(raw[0], raw[-1] + 1, name=index.name)
    if missing == "error":
        raise ValueError(
            f"{name}: gap after {_row_label(index, row)}: the next observation is {index[row + 1]}, "
            f"expected {expected} (a step of {freq_name(freq)}){hint}; "
            "pass missing='ffill' or 'interpolate' to fill it"
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
    inferred = freq is None
    freq = _check_freq(freq, frame.index, name)
    if freq is None:
        freq = infer_freq(frame.index)
    frame, filled = _regularise(frame, freq, missing, name, inferred=inferred)
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
    """Index labels for `steps` (1-based) steps of `freq` after the last label of `index`:
    `last + k * freq`, by the calendar for months, quarters, business days and weeks."""
    steps = np.asarray(steps, dtype=np.int64)
    if isinstance(index, pd.DatetimeIndex):
        nanos = fixed_nanos(freq, index.tz)
        if nanos is not None:
            # int64 nanoseconds since the epoch (UTC for an aware index): much cheaper than
            # Timestamp + TimedeltaIndex, which matters once per forecast of a stream.
            ns = _positions(index[-1:])[0] + steps * nanos
            out = pd.DatetimeIndex(ns.astype("datetime64[ns]"), name=index.name)
            return out if index.tz is None else out.tz_localize("UTC").tz_convert(index.tz)
        offset, last = as_offset(freq), index[-1]
        if len(steps) == 0:
            return index[:0].as_unit("ns")
        grid = pd.date_range(last, periods=int(steps.max()) + 1, freq=offset, name=index.name)
        if grid[0] != last:  # a label off the offset (only a caller's own index): step from it
            return pd.DatetimeIndex([last + int(k) * offset for k in steps], name=index.name).as_unit("ns")
        return grid[steps].as_unit("ns")
    return pd.Index(index[-1] + steps * (freq if isinstance(freq, (int, np.integer)) else 1), name=index.name)


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
