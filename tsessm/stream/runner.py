"""The online runner: read observations, update the model, emit forecasts, checkpoint.

Delivery is at-least-once, keyed by (series id, time): the state only moves forward (an
observation whose time is not after the last applied one of its series is skipped as a
replay), output is written and flushed before the checkpoint that covers it, and a restart
resumes from the last checkpoint -- so output lines after it may appear twice, identical.

With a registry alias as the model (`models:/NAME@champion`) and a reload interval, the runner
also hands over to a newly promoted version between records, without losing its position
(see `tsessm.stream.reload`): the new model absorbs the recent observations the runner kept,
takes over, and a checkpoint is written at once; the manifest records the version serving.

A record is read and checked by `records`, placed on the model's grid here (replays, gaps), then
applied through the adapter; `counters` holds what is counted and returned, `signals` the clean stop.
"""
from __future__ import annotations

import os
import sys
import time as _time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np
import pandas as pd

from tsessm.checks import positive_int
from tsessm.data import freq_name
from tsessm.intervals import check_coverage
from tsessm.mlflow_uri import is_model_uri
from tsessm.stream.adapters import RecordError, StreamAdapter, class_path, load_adapter, load_model, make_adapter
from tsessm.stream.checkpoint import CheckpointError, CheckpointStore
from tsessm.stream.counters import Counters, SeriesState, StreamResult, restored
from tsessm.stream.grid import steps_between
from tsessm.stream.records import BadRecord, convert, known_ahead
from tsessm.stream.reload import (DEFAULT_HISTORY_ROWS, History, Reloader, alias_of, parse_duration,
                                  resolve_model_uri)
from tsessm.stream.signals import install_signals
from tsessm.stream.sinks import open_sink
from tsessm.stream.sources import Record, open_source

__all__ = ["run_stream", "StreamSetupError", "StreamResult", "Counters", "GAP_POLICIES", "BAD_RECORD_POLICIES"]

GAP_POLICIES = ("error", "ffill")
BAD_RECORD_POLICIES = ("error", "skip")


class StreamSetupError(ValueError):
    """The stream cannot start: bad arguments, a missing model, an unusable checkpoint."""


class _Stop(Exception):
    """The stream must stop before this record (a bad record under --on-bad-record error, a gap)."""


class _Runner:
    """One stream's loop and state: position, counters, per-series state, checkpoints, hand-overs."""

    def __init__(self, adapter: StreamAdapter, source: Any, sink: Any, store: CheckpointStore | None, *,
                 checkpoint_every: int, time_col: str, id_col: str | None, gap: str, on_bad_record: str,
                 emit_every: int, log: Callable[[str], None], record_delay: float,
                 reloader: Reloader | None = None, max_fill: int | None = None,
                 coverage: float | None = None) -> None:
        self.adapter, self.source, self.sink, self.store = adapter, source, sink, store
        self.coverage = coverage
        self.checkpoint_every, self.time_col, self.id_col = checkpoint_every, time_col, id_col
        self.gap, self.on_bad_record, self.emit_every = gap, on_bad_record, emit_every
        self.max_fill = max_fill
        self.log, self.record_delay = log, record_delay
        self.counters = Counters()
        self.counters_at_start = Counters()
        self.series: dict[Any, SeriesState] = {}
        self.line = 0
        self.seq = 0
        self.since_checkpoint = 0
        self.model_source: str | None = None
        self.model_version: int | None = None
        self.reloader = reloader
        self.history: History | None = reloader.history if reloader is not None else None
        self.switches: list[dict] = []

    # ----- checkpoint -----------------------------------------------------------------------
    def restore(self, manifest: dict) -> None:
        try:
            self.counters, self.series = restored(manifest, len(self.adapter.columns))
        except ValueError as exc:
            raise StreamSetupError(str(exc)) from None
        self.counters_at_start = Counters(**asdict(self.counters))
        self.seq = int(manifest["seq"])
        self.model_source = manifest.get("model_source")
        self.model_version = manifest.get("model_version")
        history_file = (manifest.get("attachment_paths") or {}).get("history")
        if self.reloader is not None and history_file is not None:
            try:
                self.history = self.reloader.history = History.loads(history_file.read_bytes(), self.history.rows)
            except Exception as exc:  # the buffer only enables reloads: start an empty one
                self.log(f"unreadable history buffer {history_file} ({type(exc).__name__}: {exc}); starting empty")
        position = manifest["position"]
        if position.get("positional") and self.source.positional:
            if position.get("input") == self.source.name:
                self.line = int(position["line"])
                self.source.skip_until = self.line
            else:  # another file: its rows are new ones or replays, told apart by their timestamps
                self.log(f"input {self.source.name} is not the checkpoint's {position.get('input')}: "
                         "resuming by timestamp, not by line")

    def checkpoint(self) -> None:
        if self.store is None:
            return
        self.sink.sync()  # the output a checkpoint covers is durable before the commit
        self.seq += 1
        state = {
            "position": {"line": self.line, "positional": bool(self.source.positional), "input": self.source.name},
            "counters": asdict(self.counters),
            "series": [
                {"id": sid, "count": s.count, "last_values": s.last_values} for sid, s in self.series.items()
            ],
            "model_source": self.model_source,
            "model_version": self.model_version,
        }
        attachments = {"history": self.history.dumps()} if self.history is not None else None
        self.store.write(self.adapter, class_path(self.adapter), state, self.seq, attachments)
        self.since_checkpoint = 0
        commit = getattr(self.source, "commit", None)
        if commit is not None:  # a broker source: acknowledge what this checkpoint includes
            commit(self.line)

    # ----- records --------------------------------------------------------------------------
    def _bad(self, line: int, message: str) -> None:
        message = f"line {line}: {message}".replace("\n", " ")
        if self.on_bad_record == "error":
            raise _Stop(message)
        self.counters.bad += 1
        self.log(f"{message} (skipped)")

    def _apply(self, sid: Any, ts: pd.Timestamp, values: dict[str, float], filled: bool, future: Any = None) -> None:
        self.adapter.apply(sid, ts, values, future)
        if self.history is not None:
            self.history.add(sid, ts, values)
        series = self.series.get(sid)
        if series is None:
            series = self.series[sid] = SeriesState()
        series.count += 1
        series.last_values = [values[c] for c in self.adapter.columns]
        if filled:
            self.counters.filled += 1
        else:
            self.counters.applied += 1
        self.since_checkpoint += 1
        if series.count % self.emit_every == 0:
            line = {"id": sid, "time": ts.isoformat(), "forecast": self.adapter.forecast(sid)}
            if self.coverage is not None:
                line["interval"] = self.adapter.interval(sid, self.coverage)
            if filled:
                line["filled"] = True
            self.sink.write(line)
            self.counters.emitted += 1

    def process(self, record: Record) -> None:
        """Absorb one record; raises _Stop when the stream must stop before it. Whatever a single
        record makes fail while it is read and placed on the grid (dates out of range, values,
        arithmetic) makes it a bad record; once it is applied, only the model's refusal does."""
        try:
            plan = self._plan(record)
        except (OverflowError, ArithmeticError, RecursionError, ValueError, TypeError) as exc:
            return self._bad(record.line, f"{type(exc).__name__}: {exc}")
        if plan is None:
            return None
        sid, ts, values, fills, future = plan
        try:
            if fills:  # the filled steps stay applied even if the record itself is then refused
                previous = dict(zip(self.adapter.columns, self.series[sid].last_values))
                for i, t in enumerate(fills):
                    self._apply(sid, t, previous, filled=True, future=self._shifted(future, values, len(fills) - i))
            self._apply(sid, ts, values, filled=False, future=future)
        except RecordError as exc:
            return self._bad(record.line, str(exc))
        return None

    def _shifted(self, future: Any, values: dict[str, float], back: int) -> Any:
        """The known-ahead values of a filled step `back` steps before the record: the record's own
        values up to its time, then the first horizon - back of its "future" ones."""
        if future is None:
            return None
        own = np.array([[values[name] for name in self.adapter.known_ahead]])
        return np.vstack([np.repeat(own, back, axis=0), future[: len(future) - back]])

    def _plan(self, record: Record) -> tuple[Any, pd.Timestamp, dict[str, float], list[pd.Timestamp], Any] | None:
        """(series id, time, values, the timestamps to forward-fill first, the known-ahead values),
        or None when the record was handled here (bad, or a replay)."""
        if record.error is not None:
            return self._bad(record.line, record.error)
        try:
            sid, ts, values = convert(record.fields, time_col=self.time_col, id_col=self.id_col,
                                      columns=self.adapter.columns, tz=self.adapter.tz)
            future = known_ahead(record.fields, self.adapter.known_ahead, self.adapter.horizon)
        except BadRecord as exc:
            return self._bad(record.line, str(exc))
        try:
            last = self.adapter.last_time(sid)
        except RecordError as exc:
            return self._bad(record.line, str(exc))
        freq = self.adapter.freq
        fills: list[pd.Timestamp] = []
        if last is not None:
            if ts <= last:
                self.counters.duplicates += 1
                return None
            k = steps_between(last, ts, freq)
            if k is None:
                return self._bad(record.line, f"time {ts.isoformat()} is off the model's grid: not a whole "
                                              f"number of steps of {freq_name(freq)} after {last.isoformat()}")
            if k > 1:
                where = (f"{ts.isoformat()} is {k} steps of {freq_name(freq)} after the last observation "
                         f"{last.isoformat()} (missing {(last + freq).isoformat()})")
                if self.gap == "error":
                    raise _Stop(f"line {record.line}: gap: {where}; pass --gap ffill to fill it")
                if self.max_fill is not None and k - 1 > self.max_fill:
                    return self._bad(record.line, f"gap: {where}: {k - 1} missing steps exceed --max-fill "
                                                  f"{self.max_fill}; the record is not applied (a real outage "
                                                  "this long needs a larger --max-fill)")
                series = self.series.get(sid)
                if series is None or series.last_values is None:
                    return self._bad(record.line, f"gap: {where}, and this stream has no earlier observation "
                                                  "of the series to forward-fill from")
                fills = [last + j * freq for j in range(1, k)]
        return sid, ts, values, fills, future

    # ----- model hand-over ------------------------------------------------------------------
    def reload(self) -> None:
        """Switch to the version the alias names now, if it can take over at this position."""
        switch = self.reloader.check(self.adapter, self.model_version, list(self.series))
        if switch is None:
            return
        old, new = self.adapter, switch.adapter
        for series in self.series.values():  # --gap ffill values, in the new model's column order
            if series.last_values is not None:
                by_name = dict(zip(old.columns, series.last_values))
                series.last_values = [by_name[c] for c in new.columns]
        if self.coverage is not None:
            new.track(self.coverage)
        self.adapter = new  # the switch: every later record goes to the new model
        self.model_version = switch.new_version
        at = switch.time.isoformat() if switch.time is not None else "the start"
        self.switches.append({"from": switch.old_version, "to": switch.new_version, "time": at,
                              "line": self.line, "rows": switch.rows})
        self.checkpoint()  # a crash from here on resumes with the new model
        self.log(f"reload: {self.reloader.uri} version {switch.old_version} -> {switch.new_version} at {at} "
                 f"(input line {self.line}; {switch.rows} buffered observations applied to catch up)")

    # ----- the loop -------------------------------------------------------------------------
    def run(self) -> tuple[str, str | None]:
        stopper = self.source.stopper
        for record in self.source:
            if self.record_delay:
                _time.sleep(self.record_delay)  # test hook: slows the stream down (see cli.py)
            try:
                self.process(record)
            except _Stop as exc:
                return "bad_record", str(exc)
            except BrokenPipeError:
                return "output_closed", "the output was closed (broken pipe); the last checkpoint stands"
            self.counters.records += 1
            self.line = record.line
            if self.since_checkpoint >= self.checkpoint_every:
                self.checkpoint()
            if self.reloader is not None and self.reloader.due(self.counters.records):
                self.reload()
            if stopper.is_set():
                return "stopped", None
        if stopper.is_set():
            return "stopped", None
        return ("idle" if getattr(self.source, "idle", False) else "end"), None


def _stderr_log(message: str) -> None:
    print(f"tsessm stream: {message}", file=sys.stderr, flush=True)


def run_stream(
    model: Any,
    source: Any,
    sink: Any = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    time_col: str = "time",
    id_col: str | None = None,
    gap: str = "error",
    on_bad_record: str = "error",
    emit_every: int = 1,
    handle_signals: bool = False,
    stop_event: Any = None,
    log: Callable[[str], None] | None = None,
    record_delay: float = 0.0,
    reload_every: float | str | None = None,
    reload_every_records: int | None = None,
    history_rows: int = DEFAULT_HISTORY_ROWS,
    max_fill: int | None = None,
    trust_pickle: bool = False,
    coverage: float | None = None,
) -> StreamResult:
    """Stream observations through a model, emitting a forecast after each one.

    model: a fitted forecaster, a `StreamAdapter`, or the path of a file written by `save()`.
        Ignored when `checkpoint` holds a checkpoint: the run resumes from it.
    source: an iterable of dicts, "-" (stdin), a CSV / JSON-lines file path, or a source from
        `tsessm.stream.sources.open_source` (to follow a growing file, pick the format, ...).
    sink: a callable taking each output line (a dict), "-" or a path (JSON lines, appended),
        or None to collect the lines in `result.lines`.
    checkpoint: directory for checkpoints (None: none), written every `checkpoint_every`
        applied observations and when the stream ends or is stopped.
    coverage: add the prediction interval of this coverage (e.g. 0.9) to every output line,
        "interval": {target: {"lo": [...], "hi": [...]}}, recalibrated online as the values
        arrive (`BaseForecaster.track_coverage`; the state is in the checkpoint).
    gap: "error" stops at an observation more than one step after the last; "ffill" applies
        the last values for the missing steps first (their output lines carry "filled": true).
    on_bad_record: "error" stops at a malformed record; "skip" reports it (`log`) and goes on.
    emit_every: write the forecast after every N-th observation of each series.
    handle_signals: stop cleanly (checkpoint, status "stopped") on SIGINT/SIGTERM.
    stop_event: a threading.Event; setting it stops the stream cleanly between records.
    record_delay: seconds to sleep before each record (a testing aid).
    reload_every: with `model` a registry alias (models:/NAME@champion), look every this many
        seconds (or a duration: "30s", "5m", "1h") whether the alias names another version and
        hand over to it at the current position (see `tsessm.stream.reload`). Checked between
        records. When resuming, the alias is the one the checkpoint's model came from.
    reload_every_records: the same check after every N-th record (deterministic; for tests).
    history_rows: observations kept per series for that hand-over (default 1000): a new version
        whose data ends more than this many steps before the stream position is refused.
    max_fill: with gap="ffill", the most missing steps one gap may fill (default: the model's
        horizon); a longer gap is a bad record (a mistyped timestamp must not fill a year).
    trust_pickle: also read model files that are pickles (tsessm 0.2 and older); a pickle runs
        the code it holds while it loads: only for files you trust.

    Returns a StreamResult; `exit_code` is 0 for a stream that ended or was stopped cleanly,
    1 for one stopped by a bad record. Raises StreamSetupError when it cannot start.
    """
    if gap not in GAP_POLICIES:
        raise StreamSetupError(f"gap must be one of {GAP_POLICIES}, got {gap!r}")
    if on_bad_record not in BAD_RECORD_POLICIES:
        raise StreamSetupError(f"on_bad_record must be one of {BAD_RECORD_POLICIES}, got {on_bad_record!r}")
    for name, value in (("checkpoint_every", checkpoint_every), ("emit_every", emit_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StreamSetupError(f"{name} must be a positive integer, got {value!r}")
    if id_col is not None and id_col == time_col:
        raise StreamSetupError(f"the id column and the time column are both {id_col!r}")
    reloading = reload_every is not None or reload_every_records is not None
    if reload_every is not None:
        try:
            reload_every = parse_duration(reload_every)
        except ValueError as exc:
            raise StreamSetupError(f"reload_every: {exc}") from None
    for name, value in (("reload_every_records", reload_every_records), ("history_rows", history_rows),
                        ("max_fill", max_fill)):
        if value is not None:
            try:
                positive_int(name, value)
            except ValueError as exc:
                raise StreamSetupError(str(exc)) from None
    log = log or _stderr_log

    try:
        store, manifest = CheckpointStore.open_locked(checkpoint)
    except CheckpointError as exc:
        raise StreamSetupError(str(exc)) from None
    try:
        adapter, model_source, model_version = _open_adapter(model, manifest, trust_pickle)
        if coverage is not None:  # online recalibration of that coverage (kept from a checkpoint)
            try:
                adapter.track(check_coverage(coverage))
            except ValueError as exc:
                raise StreamSetupError(str(exc)) from None
        reloader = None
        if reloading:
            if alias_of(model_source) is None:
                where = "the checkpoint's model came from" if manifest is not None else "--model is"
                raise StreamSetupError(f"reloading needs a registry alias such as models:/NAME@champion as the "
                                       f"model; {where} {model_source or 'an in-memory model'}")
            reloader = Reloader(model_source, every_seconds=reload_every, every_records=reload_every_records,
                                history=History(history_rows, adapter.columns), log=log)
        try:
            src = open_source(source)
            out = open_sink(sink)
        except (OSError, ValueError, TypeError) as exc:
            raise StreamSetupError(str(exc)) from None
        if store is None and getattr(src, "commit", None) is not None:
            raise StreamSetupError("a broker source needs a checkpoint: its entries are acknowledged only "
                                   "after a checkpoint includes them")
    except BaseException:
        if store is not None:
            store.unlock()
        raise

    runner = _Runner(adapter, src, out, store, checkpoint_every=checkpoint_every, time_col=time_col,
                     id_col=id_col, gap=gap, on_bad_record=on_bad_record, emit_every=emit_every,
                     log=log, record_delay=record_delay, reloader=reloader,
                     max_fill=max_fill if max_fill is not None else getattr(adapter, "horizon", None),
                     coverage=coverage)
    runner.model_source, runner.model_version = model_source, model_version
    if manifest is not None:
        try:
            runner.restore(manifest)
        except BaseException:  # a checkpoint that does not fit the model: release what was opened
            out.close()
            store.unlock()
            raise
    src.stopper.event = stop_event
    restore_signals = install_signals(src.stopper) if handle_signals else None
    status, message = "end", None
    try:
        status, message = runner.run()
        if status != "output_closed":
            runner.checkpoint()
    finally:
        if restore_signals is not None:
            restore_signals()
        try:
            out.close()
        except BrokenPipeError:
            status, message = "output_closed", "the output was closed (broken pipe); the last checkpoint stands"
        finally:
            try:
                if hasattr(src, "close"):  # a broker source releases its partitions
                    src.close()
            finally:
                if store is not None:
                    store.unlock()
    return StreamResult(status=status, message=message, counters=runner.counters, line=runner.line,
                        adapter=runner.adapter, resumed=manifest is not None, lines=getattr(out, "lines", None),
                        model_version=runner.model_version, switches=runner.switches,
                        counters_at_start=runner.counters_at_start)


def _open_adapter(model: Any, manifest: dict | None,
                  trust_pickle: bool = False) -> tuple[StreamAdapter, str | None, int | None]:
    """The adapter, where its model came from (a path or URI) and its registry version."""
    if manifest is not None:
        try:
            adapter = load_adapter(manifest["adapter"], manifest["model_path"], manifest.get("adapter_extras") or {},
                                   allow_pickle=trust_pickle)
        except Exception as exc:  # a damaged or foreign model file
            raise StreamSetupError(
                f"unreadable checkpoint model {manifest['model_path']}: {type(exc).__name__}: {exc}"
            ) from None
        return adapter, manifest.get("model_source"), manifest.get("model_version")
    if model is None:
        raise StreamSetupError("no model given and no checkpoint to resume from")
    source, version = None, None
    if isinstance(model, (str, os.PathLike)):
        source = os.fspath(model)
        if not (os.path.isfile(source) or is_model_uri(source)):
            raise StreamSetupError(f"no such model file: {source}")
        try:
            # An alias is resolved first, so the version loaded is the version recorded.
            uri, version = resolve_model_uri(source) if is_model_uri(source) else (source, None)
            model = load_model(uri, allow_pickle=trust_pickle)
        except Exception as exc:
            raise StreamSetupError(f"cannot load model {source}: {type(exc).__name__}: {exc}") from None
    try:
        return make_adapter(model), source, version
    except (ValueError, TypeError) as exc:
        raise StreamSetupError(str(exc)) from None
    except Exception as exc:  # e.g. sklearn's NotFittedError
        raise StreamSetupError(f"{type(exc).__name__}: {exc}") from None

