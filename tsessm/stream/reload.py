"""Hand-over from scheduled retraining to a running stream: pick up a newly promoted model.

    tsessm stream --model models:/NAME@champion --reload-every 5m --checkpoint ckpt/ ...

Every reload interval (checked between records) the runner resolves the alias to a version
(`tsessm.registry.get_version`). When it moved, the new version is loaded and brought to the
stream's position *before* it replaces the serving model: the runner keeps the last
`history_rows` observations it applied per series (`History`), and the new model absorbs,
with `update`, the buffered rows after the last time it saw. A version that cannot be brought
exactly to the stream position is refused (one warning line) and the serving model stays:

- its data ends at or after the stream position (it would skip or repeat observations); this
  is retried at later checks, since the stream may move past it;
- the buffer does not reach back to the end of its data (its state would have a gap), or it
  does not fit the stream (other columns, step, time zone, series); not retried.

Series of a panel model that this stream has not seen yet start from the new model's own state.
"""
from __future__ import annotations

import collections
import json
import math
import re
import time as _time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from tsessm import registry
from tsessm.data import freq_name, same_freq
from tsessm.forecasters.panel import PanelForecaster
from tsessm.stream.adapters import PanelAdapter, SingleSeriesAdapter, load_model
from tsessm.stream.grid import steps_between

DEFAULT_HISTORY_ROWS = 1000

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration: 30s, 5m, 1h, 1h30m, 250ms, 2d (any `pandas.Timedelta` string, units
    in any case), or a bare number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        try:
            seconds = float(raw)
        except ValueError:
            try:  # pandas spells the day unit "D" ("d" is deprecated there)
                duration = pd.Timedelta(re.sub(r"(?<=[\d.])d(?![a-z])", "D", raw))
            except ValueError:
                duration = pd.NaT
            if duration is pd.NaT:
                raise ValueError(f"expected a duration such as 30s, 5m, 1h or 1h30m, got {text!r}") from None
            seconds = duration.total_seconds()
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"expected a positive duration, got {text!r}")
    return seconds


def alias_of(uri: str | None) -> tuple[str, str] | None:
    """(name, alias) of `models:/NAME@alias`, else None."""
    match = _ALIAS_URI.match(str(uri or ""))
    return (match["name"], match["alias"]) if match else None


def resolve_model_uri(uri: str) -> tuple[str, int | None]:
    """(the URI to load, the registry version): an alias is resolved to its current version, so
    the version loaded is the version recorded; a file or another URI has no version."""
    found = alias_of(uri)
    if found is not None:
        name, alias = found
        version = registry.get_version(name, alias)
        if version is None:
            raise LookupError(f"registered model {name!r} has no alias {alias!r}")
        return f"models:/{name}/{version}", version
    match = _VERSION_URI.match(str(uri))
    return uri, (int(match["version"]) if match else None)


# ----- the buffer of recent observations ---------------------------------------------------
class History:
    """The last `rows` observations applied per series: (time, values in `columns` order)."""

    def __init__(self, rows: int, columns: Iterable[str]) -> None:
        self.rows = int(rows)
        self.columns = list(columns)
        self.series: dict[Any, collections.deque] = {}

    def add(self, series_id: Any, time: pd.Timestamp, values: dict[str, float]) -> None:
        buffer = self.series.get(series_id)
        if buffer is None:
            buffer = self.series[series_id] = collections.deque(maxlen=self.rows)
        buffer.append((time, tuple(float(values[c]) for c in self.columns)))

    def after(self, series_id: Any, time: pd.Timestamp) -> list[tuple[pd.Timestamp, tuple]]:
        return [row for row in self.series.get(series_id, ()) if row[0] > time]

    def first_time(self, series_id: Any) -> pd.Timestamp | None:
        buffer = self.series.get(series_id)
        return buffer[0][0] if buffer else None

    def last_time(self, series_id: Any) -> pd.Timestamp | None:
        buffer = self.series.get(series_id)
        return buffer[-1][0] if buffer else None

    def dumps(self) -> bytes:
        """JSON (times in ISO 8601), so a checkpoint holds no code."""
        payload = {"format": 2, "columns": self.columns,
                   "series": [[sid, [[t.isoformat(), list(v)] for t, v in buffer]]
                              for sid, buffer in self.series.items()]}
        return json.dumps(payload, allow_nan=False).encode("utf-8")

    @classmethod
    def loads(cls, data: bytes, rows: int) -> "History":
        try:
            payload = json.loads(data)
            if not isinstance(payload, dict) or payload.get("format") != 2:
                raise ValueError("no format 2 header")
            history = cls(rows, payload["columns"])
            for sid, entries in payload["series"]:
                history.series[sid] = collections.deque(
                    ((pd.Timestamp(t), tuple(float(x) for x in v)) for t, v in entries), maxlen=history.rows)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a tsessm stream history (format 2: {exc})") from None
        return history


# ----- bringing a new model to the stream position ------------------------------------------
class SwitchRefused(Exception):
    """The new model cannot take over here; `retry`: it may at a later check."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def _same_step(a: Any, b: Any) -> bool:
    return same_freq(a, b)


def _check_fits(old: Any, new: Any, history: History) -> None:
    if sorted(new.columns) != sorted(old.columns):
        raise SwitchRefused(f"its columns {list(new.columns)} differ from the stream's {list(old.columns)}")
    missing = [c for c in new.columns if c not in history.columns]
    if missing:
        raise SwitchRefused(f"the buffered observations lack its columns {missing}")
    if not _same_step(old.freq, new.freq):
        raise SwitchRefused(f"its step {freq_name(new.freq)} differs from the stream's {freq_name(old.freq)}")
    if str(old.tz) != str(new.tz):
        raise SwitchRefused(f"its time zone {new.tz} differs from the stream's {old.tz}")


def _rows_to_catch_up(history: History, series_id: Any, model_last: pd.Timestamp, stream_last: pd.Timestamp,
                      freq: Any, label: str) -> list[tuple[pd.Timestamp, tuple]]:
    """The buffered rows after `model_last`, exactly the steps up to `stream_last`, or SwitchRefused."""
    if model_last >= stream_last:
        raise SwitchRefused(
            f"{label}its data ends at {model_last.isoformat()}, not before the stream position "
            f"{stream_last.isoformat()} (switching would skip or repeat observations)", retry=True)
    k = steps_between(model_last, stream_last, freq)
    if k is None:
        raise SwitchRefused(f"{label}its last time {model_last.isoformat()} is off the stream's grid")
    rows = history.after(series_id, model_last)
    first = history.first_time(series_id)
    covered = (len(rows) == k and rows[0][0] == model_last + freq and rows[-1][0] == stream_last)
    if not covered:
        kept = f"the buffer starts at {first.isoformat()}" if first is not None else "the buffer is empty"
        raise SwitchRefused(
            f"{label}its data ends at {model_last.isoformat()}, {k} steps before the stream position "
            f"{stream_last.isoformat()}, but {kept} (--history-rows {history.rows}); its state would have a gap")
    return rows


def _catch_up_single(old: Any, model: Any, history: History, touched: Iterable[Any]) -> tuple[Any, int]:
    try:
        new = SingleSeriesAdapter(model)
    except Exception as exc:  # not fitted on timestamps, bidirectional, not fitted at all
        raise SwitchRefused(f"{type(exc).__name__}: {exc}") from None
    _check_fits(old, new, history)
    new.served = old.served
    series_id = old.series_id
    rows = _rows_to_catch_up(history, series_id, model.last_index_[0], old.model.last_index_[0], new.freq, "")
    frame = pd.DataFrame(np.array([values for _, values in rows], dtype=np.float64), columns=history.columns,
                         index=pd.DatetimeIndex([t for t, _ in rows], name=new.index_name))
    try:
        model.update(frame[list(new.columns)])
    except ValueError as exc:
        raise SwitchRefused(f"it does not take the buffered observations: {exc}") from None
    return new, len(rows)


def _catch_up_panel(old: Any, panel: Any, history: History, touched: Iterable[Any]) -> tuple[Any, int]:
    try:
        new = PanelAdapter(panel)
    except Exception as exc:
        raise SwitchRefused(f"{type(exc).__name__}: {exc}") from None
    _check_fits(old, new, history)
    frames = []
    for sid in touched:
        old_row, new_row = old.row(sid), new.row(sid)
        if old_row is None:
            continue  # never applied (bad records only)
        if new_row is None:
            raise SwitchRefused(f"it does not know series {sid!r}, which this stream serves")
        label = f"series {sid!r}: "
        stream_last, model_last = old.panel.last_time_[old_row], panel.last_time_[new_row]
        rows = _rows_to_catch_up(history, sid, model_last, stream_last, new.freq, label)
        frame = pd.DataFrame(np.array([values for _, values in rows], dtype=np.float64), columns=history.columns)
        frame = frame[list(new.columns)]
        frame.insert(0, panel.time_col, pd.DatetimeIndex([t for t, _ in rows]))
        frame.insert(0, panel.id_col, [panel.ids_[new_row]] * len(rows))
        frames.append(frame)
    n = sum(len(f) for f in frames)
    if frames:
        try:
            panel.update(pd.concat(frames, ignore_index=True))
        except ValueError as exc:
            raise SwitchRefused(f"it does not take the buffered observations: {exc}") from None
    return new, n


def catch_up(old: Any, model: Any, history: History, touched: Iterable[Any]) -> tuple[Any, int]:
    """An adapter for `model` brought to the position of the serving adapter `old` with the
    buffered observations, and how many rows it absorbed; raises SwitchRefused (and leaves
    `old` alone) when that cannot be done exactly."""
    if isinstance(old, SingleSeriesAdapter) and not isinstance(model, PanelForecaster):
        return _catch_up_single(old, model, history, touched)
    if isinstance(old, PanelAdapter) and isinstance(model, PanelForecaster):
        return _catch_up_panel(old, model, history, touched)
    raise SwitchRefused(f"a {type(model).__name__} cannot take over from a {type(old).__name__} stream")


# ----- the periodic check ------------------------------------------------------------------
@dataclass
class Switch:
    adapter: Any  # the new adapter, at the stream position
    old_version: int | None
    new_version: int
    time: pd.Timestamp | None  # the stream position (last applied time) at the switch
    rows: int  # buffered rows the new model absorbed to get there


class Reloader:
    """Decides when to look at the registry, and prepares a switch when the alias moved."""

    def __init__(self, uri: str, *, every_seconds: float | None, every_records: int | None,
                 history: History, log: Callable[[str], None],
                 clock: Callable[[], float] = _time.monotonic) -> None:
        found = alias_of(uri)
        if found is None:
            raise ValueError(f"reloading needs a model given as models:/NAME@alias, got {uri!r}")
        self.uri = uri
        self.name, self.alias = found
        self.every_seconds, self.every_records = every_seconds, every_records
        self.history, self.log, self.clock = history, log, clock
        self.next_at = clock() + every_seconds if every_seconds else None
        self.refused: set[int] = set()  # versions that can never take over here
        self._warned: set[tuple] = set()
        self._pending: tuple[int, Any] | None = None  # a loaded version waiting for the stream

    def due(self, records: int) -> bool:
        due = bool(self.every_records) and records > 0 and records % self.every_records == 0
        if self.next_at is not None and self.clock() >= self.next_at:
            self.next_at = self.clock() + self.every_seconds
            due = True
        return due

    def _warn(self, key: tuple, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log(message.replace("\n", " "))

    def check(self, adapter: Any, current: int | None, touched: Iterable[Any]) -> Switch | None:
        """A prepared switch when the alias names another version that can take over, else None."""
        keep = f"version {current} keeps serving"
        try:
            version = registry.get_version(self.name, self.alias)
        except Exception as exc:
            self._warn(("registry",), f"reload: cannot resolve {self.uri}: {type(exc).__name__}: {exc}; {keep}")
            return None
        self._warned.discard(("registry",))
        if version is None:
            self._warn(("no-alias",), f"reload: {self.uri} names no version (alias {self.alias!r} gone); {keep}")
            return None
        self._warned.discard(("no-alias",))
        if version == current or version in self.refused:
            return None
        refuse = f"reload: not switching {self.uri} from version {current} to {version}"
        if self._pending is not None and self._pending[0] == version:
            model = self._pending[1]
        else:
            self._pending = None
            try:
                model = load_model(f"models:/{self.name}/{version}")
            except Exception as exc:
                self._warn((version, "load"), f"{refuse}: cannot load it: {type(exc).__name__}: {exc}; {keep}")
                return None
        try:
            new_adapter, rows = catch_up(adapter, model, self.history, touched)
        except SwitchRefused as exc:
            if exc.retry:
                self._pending = (version, model)
                self._warn((version, "retry"), f"{refuse}: {exc}; {keep} (retried at the next checks)")
            else:
                self._pending = None
                self.refused.add(version)
                self._warn((version, "refused"), f"{refuse}: {exc}; {keep}")
            return None
        except Exception as exc:  # a model that fails while catching up never takes over
            self._pending = None
            self.refused.add(version)
            self._warn((version, "refused"), f"{refuse}: {type(exc).__name__}: {exc}; {keep}")
            return None
        self._pending = None
        times = [t for t in (self.history.last_time(sid) for sid in touched) if t is not None]
        return Switch(adapter=new_adapter, old_version=current, new_version=version,
                      time=max(times) if times else None, rows=rows)
