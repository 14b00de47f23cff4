"""The state behind `tsessm serve`: one model (through a stream adapter), its per-series state and
the stream's checkpoint store, with the stream runner's semantics.

- Records are read and checked by `tsessm.stream.records` (fields, numbers, ISO timestamps, the
  known-ahead `future` field) and placed on the model's grid by `tsessm.stream.grid`, exactly as
  `tsessm stream` does; the adapter applies them.
- Idempotent by (series id, time): an observation whose time is not after the last one applied to
  its series is a duplicate, counted and not applied.
- A batch is checked whole before anything is applied: one malformed record, one off the grid, one
  after a gap (with gap="error"), or a series the model does not serve refuses the batch and
  leaves the state as it was. Only the model's own refusal while applying (rare: the same checks
  ran before) stops a batch part-way; the answer then says how many records were applied, and a
  client re-posting the whole batch loses nothing and doubles nothing.
- Checkpoints: the same store and manifest as `tsessm stream` (`tsessm.stream.checkpoint`), written
  every `checkpoint_every` observations applied and on `close()`; a service opened on a folder
  holding a checkpoint resumes from it (the --model is then not read). A stream checkpoint and a
  service checkpoint are interchangeable: the position is not positional.
- Thread safety: one lock around the model and every piece of state (the model is not thread-safe).
"""
from __future__ import annotations

import os
import threading
from dataclasses import asdict
from typing import Any, Callable

import pandas as pd

from tsessm.data import freq_name
from tsessm.mlflow_uri import is_model_uri
from tsessm.stream.adapters import RecordError, class_path, load_adapter, load_model, make_adapter
from tsessm.stream.checkpoint import CheckpointError, CheckpointStore
from tsessm.stream.counters import Counters, SeriesState, restored
from tsessm.stream.grid import steps_between
from tsessm.stream.records import BadRecord, convert, known_ahead

GAP_POLICIES = ("error", "ffill")
SOURCE_NAME = "http"  # the checkpoint's input name: not positional, a resumed stream goes by timestamps
_NOTHING = object()


class ServiceSetupError(ValueError):
    """The service cannot start: a missing model, an unusable checkpoint, a bad option."""


class Refused(Exception):
    """A request the service refuses: `status` (HTTP), a one-line message, and details for the body."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


class UnknownSeries(Refused):
    def __init__(self, series_id: Any) -> None:
        super().__init__(404, f"no series {series_id!r}: no observation of it was posted to this service")


class ForecastService:
    """One model serving online: `post(records)` applies observations, `forecast(id)` answers the
    latest forecast, `checkpoint()`/`close()` persist. Open one with `ForecastService.open`."""

    def __init__(self, adapter: Any, store: CheckpointStore | None = None, *, checkpoint_every: int = 100,
                 time_col: str = "time", id_col: str = "id", gap: str = "error", max_fill: int | None = None,
                 model_source: str | None = None, log: Callable[[str], None] | None = None) -> None:
        if gap not in GAP_POLICIES:
            raise ServiceSetupError(f"gap must be one of {GAP_POLICIES}, got {gap!r}")
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ServiceSetupError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
        if not id_col or id_col == time_col:
            raise ServiceSetupError(f"the id field must be named and differ from the time field ({time_col!r})")
        self.adapter, self.store = adapter, store
        self.checkpoint_every, self.time_col, self.id_col, self.gap = checkpoint_every, time_col, id_col, gap
        self.max_fill = max_fill if max_fill is not None else getattr(adapter, "horizon", None)
        self.model_source, self.model_version = model_source, None
        self.log = log or (lambda message: None)
        self.lock = threading.Lock()
        self.counters = Counters()
        self.series: dict[Any, SeriesState] = {}
        self.last_times: dict[Any, pd.Timestamp] = {}
        self.cache: dict[Any, dict] = {}  # series id -> its latest forecast answer (dropped when it moves)
        self.seq = 0
        self.since_checkpoint = 0
        self.checkpoints_written = 0
        self.resumed = False

    # ----- opening and closing ----------------------------------------------------------------
    @classmethod
    def open(cls, model: Any, checkpoint: str | os.PathLike | None, *, trust_pickle: bool = False,
             **options: Any) -> "ForecastService":
        """A service over `model` (a fitted forecaster, an adapter, a model file or models:/ URI),
        resuming from the checkpoint in `checkpoint` when there is one (which holds the folder's lock
        until `close()`). Raises ServiceSetupError when it cannot start."""
        try:
            store, manifest = CheckpointStore.open_locked(checkpoint)
        except CheckpointError as exc:
            raise ServiceSetupError(str(exc)) from None
        try:
            adapter, source = _open_adapter(model, manifest, trust_pickle)
            service = cls(adapter, store, model_source=source, **options)
            if manifest is not None:
                service.restore(manifest)
        except BaseException:
            if store is not None:
                store.unlock()
            raise
        return service

    def restore(self, manifest: dict) -> None:
        try:
            self.counters, series = restored(manifest, len(self.adapter.columns))
        except ValueError as exc:
            raise ServiceSetupError(str(exc)) from None
        self.series.update(series)
        for entry in manifest["series"]:
            try:
                last_time = self.adapter.last_time(entry["id"])
            except RecordError as exc:
                raise ServiceSetupError(f"damaged checkpoint: {exc}") from None
            if last_time is not None:
                self.last_times[entry["id"]] = last_time
        self.seq = int(manifest["seq"])
        self.model_version = manifest.get("model_version")
        self.model_source = manifest.get("model_source") or self.model_source
        self.resumed = True

    def checkpoint(self) -> None:
        """Commit the model, its state and the counters (call with the lock held)."""
        if self.store is None:
            return
        self.seq += 1
        state = {
            "position": {"line": 0, "positional": False, "input": SOURCE_NAME},
            "counters": asdict(self.counters),
            "series": [{"id": sid, "count": s.count, "last_values": s.last_values} for sid, s in self.series.items()],
            "model_source": self.model_source,
            "model_version": self.model_version,
        }
        self.store.write(self.adapter, class_path(self.adapter), state, self.seq)
        self.since_checkpoint = 0
        self.checkpoints_written += 1

    def close(self) -> None:
        """Write a last checkpoint (when anything changed since the last one) and release the folder."""
        with self.lock:
            try:
                if self.store is not None and (self.since_checkpoint or not self.store.exists()):
                    self.checkpoint()
            finally:
                if self.store is not None:
                    self.store.unlock()

    # ----- observations -------------------------------------------------------------------------
    def post(self, records: list, *, with_forecasts: bool = False) -> dict:
        """Apply `records` (dicts, in order); returns what happened. Raises Refused (422) for a batch
        with bad records, naming each (its index in the batch and why)."""
        with self.lock:
            served = getattr(self.adapter, "served", _NOTHING)  # a single-series model's first id
            try:
                plan, duplicates = self._plan(records)
            except Refused:
                if served is not _NOTHING:
                    self.adapter.served = served  # looking a series up must not claim it
                raise
            applied = filled = 0
            touched: dict[Any, None] = {}
            for index, sid, ts, values, fills, future in plan:
                try:
                    if fills:
                        previous = dict(zip(self.adapter.columns, self.series[sid].last_values))
                        for t in fills:
                            self._apply(sid, t, previous, future)
                            filled += 1
                    self._apply(sid, ts, values, future)
                except RecordError as exc:
                    self.counters.bad += 1
                    self.counters.duplicates += duplicates
                    self.counters.applied += applied
                    self.counters.filled += filled
                    self._maybe_checkpoint()
                    raise Refused(422, f"record {index}: {exc}".replace("\n", " "), applied=applied,
                                  errors=[{"index": index, "error": str(exc)}]) from None
                applied += 1
                touched[sid] = None
            self.counters.applied += applied
            self.counters.filled += filled
            self.counters.duplicates += duplicates
            self.counters.records += len(records)
            self._maybe_checkpoint()
            answer = {"applied": applied, "filled": filled, "duplicates": duplicates}
            if with_forecasts:
                answer["forecasts"] = [self._forecast(sid) for sid in touched]
            return answer

    def _maybe_checkpoint(self) -> None:
        if self.since_checkpoint >= self.checkpoint_every:
            self.checkpoint()

    def _apply(self, sid: Any, ts: pd.Timestamp, values: dict[str, float], future: Any) -> None:
        self.adapter.apply(sid, ts, values, future)
        series = self.series.get(sid)
        if series is None:
            series = self.series[sid] = SeriesState()
        series.count += 1
        series.last_values = [values[c] for c in self.adapter.columns]
        self.last_times[sid] = ts
        self.cache.pop(sid, None)
        self.since_checkpoint += 1

    def _plan(self, records: list) -> tuple[list, int]:
        """Every record checked and placed on its series' grid, following the records before it in
        the batch: [(index, id, time, values, times to forward-fill first, known-ahead values)] and the
        number of duplicates; raises Refused listing every bad record."""
        adapter = self.adapter
        plan, errors, duplicates = [], [], 0
        last: dict[Any, pd.Timestamp | None] = {}
        last_values: dict[Any, list[float] | None] = {}
        for index, fields in enumerate(records):
            try:
                if not isinstance(fields, dict):
                    raise BadRecord(f"a record must be a JSON object, got {type(fields).__name__}")
                sid, ts, values = convert(fields, time_col=self.time_col, id_col=self.id_col,
                                          columns=adapter.columns, tz=adapter.tz)
                future = known_ahead(fields, adapter.known_ahead, adapter.horizon)
                if sid not in last:
                    last[sid] = adapter.last_time(sid)
                    state = self.series.get(sid)
                    last_values[sid] = state.last_values if state is not None else None
                previous = last[sid]
                if previous is None and callable(getattr(adapter, "row", None)) and adapter.row(sid) is None:
                    raise BadRecord(f"series id {sid!r} is unknown to this panel model; give it a history first")
                fills: list[pd.Timestamp] = []
                if previous is not None:
                    if ts <= previous:
                        duplicates += 1
                        continue
                    fills = self._fills(previous, ts)
                    if fills and last_values[sid] is None:
                        raise BadRecord(f"a gap before {ts.isoformat()}, and no earlier observation of series "
                                        f"{sid!r} was posted here to forward-fill from")
            except (BadRecord, RecordError, OverflowError, ArithmeticError, ValueError, TypeError) as exc:
                errors.append({"index": index, "error": str(exc).replace("\n", " ")})
                continue
            plan.append((index, sid, ts, values, fills, future))
            last[sid] = ts
            last_values[sid] = [values[c] for c in adapter.columns]
        if errors:
            self.counters.bad += len(errors)
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise Refused(422, f"record {first['index']}: {first['error']}{more}; nothing was applied",
                          applied=0, errors=errors[:100])
        return plan, duplicates

    def _fills(self, last: pd.Timestamp, ts: pd.Timestamp) -> list[pd.Timestamp]:
        freq = self.adapter.freq
        k = steps_between(last, ts, freq)
        if k is None:
            raise BadRecord(f"time {ts.isoformat()} is off the model's grid: not a whole number of steps of "
                            f"{freq_name(freq)} after {last.isoformat()}")
        if k <= 1:
            return []
        where = (f"{ts.isoformat()} is {k} steps of {freq_name(freq)} after the last observation "
                 f"{last.isoformat()} (missing {(last + freq).isoformat()})")
        if self.gap == "error":
            raise BadRecord(f"gap: {where}; post the missing steps first (or serve with --gap ffill)")
        if self.max_fill is not None and k - 1 > self.max_fill:
            raise BadRecord(f"gap: {where}: {k - 1} missing steps exceed --max-fill {self.max_fill}")
        return [last + j * freq for j in range(1, k)]

    # ----- forecasts ----------------------------------------------------------------------------
    def find(self, text: str) -> Any:
        """The series id posted as `text` (ids are matched as text: a path holds no types)."""
        if text in self.series:
            return text
        for sid in self.series:
            if str(sid) == text:
                return sid
        raise UnknownSeries(text)

    def forecast(self, series: str, coverage: float | None = None) -> dict:
        with self.lock:
            return self._forecast(self.find(series), coverage)

    def forecasts(self, coverage: float | None = None) -> list[dict]:
        with self.lock:
            return [self._forecast(sid, coverage) for sid in self.series]

    def _forecast(self, sid: Any, coverage: float | None = None) -> dict:
        """{"id", "time" (the last observation absorbed), "forecast": {target: [v_1..v_H]}} -- the
        stream's output line -- plus "interval" when the adapter has one (see `interval_of`)."""
        key = (sid, coverage)
        cached = self.cache.get(sid)
        if cached is not None and cached.get("_key") == key:
            return cached["answer"]
        last = self.last_times.get(sid)
        answer = {"id": sid, "time": last.isoformat() if last is not None else None,
                  "forecast": self.adapter.forecast(sid)}
        interval = interval_of(self.adapter, sid, coverage)
        if interval is not None:
            answer["interval"] = interval
        self.cache[sid] = {"_key": key, "answer": answer}
        return answer

    # ----- what /health and /metrics show -------------------------------------------------------
    def health(self) -> dict:
        with self.lock:
            return {"status": "ok", "model": type(getattr(self.adapter, "model", getattr(self.adapter, "panel", None))).__name__,
                    "series": len(self.series), "horizon": getattr(self.adapter, "horizon", None),
                    "targets": list(self.adapter.targets), "columns": list(self.adapter.columns),
                    "applied": self.counters.applied, "duplicates": self.counters.duplicates,
                    "checkpoint_seq": self.seq if self.store is not None else None, "resumed": self.resumed}

    def metric_samples(self) -> dict:
        with self.lock:
            c = self.counters
            return {
                "tsessm_serve_observations_total": (
                    "counter", "observations by what became of them (totals kept in the checkpoint)",
                    [([("result", "applied")], c.applied), ([("result", "filled")], c.filled),
                     ([("result", "duplicate")], c.duplicates), ([("result", "bad")], c.bad)]),
                "tsessm_serve_series": ("gauge", "series with observations posted to this service",
                                        [([], len(self.series))]),
                "tsessm_serve_checkpoints_total": ("counter", "checkpoints written by this process",
                                                   [([], self.checkpoints_written)]),
                "tsessm_serve_checkpoint_seq": ("gauge", "sequence number of the last checkpoint committed",
                                                [([], self.seq)]),
            }


def interval_of(adapter: Any, sid: Any, coverage: float | None) -> Any:
    """The hook for prediction intervals: an adapter with `interval(series_id, coverage)` returning
    {target: {"lo": [...H], "hi": [...H]}} (JSON-able) adds them to every forecast answer;
    one without it (or answering None) adds nothing."""
    method = getattr(adapter, "interval", None)
    if not callable(method):
        return None
    return method(sid, 0.9 if coverage is None else coverage)


def _open_adapter(model: Any, manifest: dict | None, trust_pickle: bool) -> tuple[Any, str | None]:
    """The adapter (from the checkpoint when there is one) and where its model came from."""
    if manifest is not None:
        try:
            adapter = load_adapter(manifest["adapter"], manifest["model_path"], manifest.get("adapter_extras") or {},
                                   allow_pickle=trust_pickle)
        except Exception as exc:  # a damaged or foreign model file
            raise ServiceSetupError(f"unreadable checkpoint model {manifest['model_path']}: "
                                    f"{type(exc).__name__}: {exc}") from None
        return adapter, manifest.get("model_source")
    if model is None:
        raise ServiceSetupError("no model given and no checkpoint to resume from")
    source = None
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        if not (os.path.isfile(source) or is_model_uri(source)):
            raise ServiceSetupError(f"no such model file: {source}")
        try:
            model = load_model(source, allow_pickle=trust_pickle)
        except Exception as exc:
            raise ServiceSetupError(f"cannot load model {source}: {type(exc).__name__}: {exc}") from None
    try:
        return make_adapter(model), source
    except Exception as exc:  # not fitted, not streamable, integer steps
        raise ServiceSetupError(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)) \
            from None
