"""Where observations come from: Python dicts, CSV with a header, JSON lines; files or stdin.

Every source yields `Record`s: the input line number, the raw fields (a dict of what the line
said, unconverted) or, when the line could not even be split into fields, an error. The runner
converts and checks the fields; a source only reads.

File sources are positional: `skip_until = N` makes them skip records on lines <= N (the
restart position of a checkpoint). Stdin and iterables are not: after a restart the runner
skips their replayed records by timestamp instead. Broker sources (Redis Streams consumer
groups) live in `tsessm.stream.broker`; `open_source` passes them through.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Iterator

FORMATS = ("auto", "csv", "jsonl")


@dataclass
class Record:
    line: int  # 1-based input line (for an iterable of dicts: the item's position)
    fields: dict | None  # None when the line could not be parsed
    error: str | None = None


class StopRequested(Exception):
    """Raised out of a blocking read when a stop (SIGINT/SIGTERM) arrives."""


class Stopper:
    """A stop flag shared by the runner and its source (set by a signal or by the caller).

    While a source is blocked reading a pipe, `request()` raises StopRequested from the signal
    handler so the read returns; otherwise it only sets the flag, checked between records.
    """

    def __init__(self, event: Any = None) -> None:
        self.event = event  # optional threading.Event-like with is_set()
        self.requested = False
        self.blocking = False

    def request(self, *_: Any) -> None:
        self.requested = True
        if self.blocking:
            self.blocking = False
            raise StopRequested

    def is_set(self) -> bool:
        return self.requested or (self.event is not None and self.event.is_set())

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))


class DictSource:
    """Records from an iterable of dicts (library use); not positional."""

    positional = False

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items
        self.skip_until = 0
        self.stopper = Stopper()
        self.idle = False
        self.name = "<iterable>"

    def __iter__(self) -> Iterator[Record]:
        for line, item in enumerate(self.items, start=1):
            if line <= self.skip_until:
                continue
            if isinstance(item, dict):
                yield Record(line, item)
            else:
                yield Record(line, None, f"record is a {type(item).__name__}, not a mapping")


class LineSource:
    """Records from a text stream of CSV (with a header) or JSON lines.

    fmt: "csv", "jsonl" or "auto" (the first non-blank line decides: `{` means JSON lines).
    follow: at the end of a file, wait for more lines (polling) until a stop or `idle_timeout`
    seconds without a new line. A last line without its newline is read as complete only when
    not following (a writer may still be appending to it).
    """

    def __init__(self, stream: BinaryIO, name: str, *, fmt: str = "auto", positional: bool,
                 follow: bool = False, idle_timeout: float | None = None, poll: float = 0.1,
                 closer: Any = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.stream, self.name, self.fmt = stream, name, fmt
        self.positional = positional
        self.follow, self.idle_timeout, self.poll = follow, idle_timeout, poll
        self.skip_until = 0
        self.stopper = Stopper()
        self.idle = False  # set when following stopped after idle_timeout
        self.header: list[str] | None = None
        self._closer = closer

    # ----- raw lines ------------------------------------------------------------------------
    def _read(self) -> bytes:
        if self.positional:  # a regular file: reads return at once
            return self.stream.readline()
        self.stopper.blocking = True
        try:
            if self.stopper.is_set():
                raise StopRequested
            return self.stream.readline()
        finally:
            self.stopper.blocking = False

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        lineno, pending, last_data = 0, b"", time.monotonic()
        while True:
            try:
                chunk = self._read()
            except StopRequested:
                return
            if isinstance(chunk, str):  # a text stream (e.g. io.StringIO)
                chunk = chunk.encode("utf-8")
            if chunk:
                pending += chunk
                last_data = time.monotonic()
                if pending.endswith(b"\n"):
                    lineno += 1
                    yield lineno, pending
                    pending = b""
                continue
            if not self.follow:
                if pending:
                    yield lineno + 1, pending
                return
            if self.stopper.is_set():
                return
            if self.idle_timeout is not None and time.monotonic() - last_data >= self.idle_timeout:
                self.idle = True
                return
            self.stopper.sleep(self.poll)

    # ----- records --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Record]:
        fmt = self.fmt
        try:
            for lineno, raw in self._lines():
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if lineno > self.skip_until:
                        yield Record(lineno, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                    continue
                if lineno == 1:
                    text = text.lstrip("\ufeff")
                text = text.rstrip("\r\n")
                if not text.strip():
                    continue
                if fmt == "auto":
                    fmt = "jsonl" if text.lstrip().startswith("{") else "csv"
                if fmt == "csv" and self.header is None:
                    self.header = [h.strip() for h in next(csv.reader([text]))]
                    continue
                if lineno <= self.skip_until:
                    continue
                yield _parse_json(lineno, text) if fmt == "jsonl" else _parse_csv(lineno, text, self.header)
        finally:
            if self._closer is not None:
                self._closer()


def _parse_json(lineno: int, text: str) -> Record:
    try:
        fields = json.loads(text)
    except ValueError as exc:
        return Record(lineno, None, f"bad JSON ({exc})")
    except RecursionError:  # nesting deeper than the parser's recursion limit
        return Record(lineno, None, "bad JSON (nested too deeply)")
    if not isinstance(fields, dict):
        return Record(lineno, None, f"bad JSON: expected an object, got {type(fields).__name__}")
    return Record(lineno, fields)


def _parse_csv(lineno: int, text: str, header: list[str]) -> Record:
    try:
        values = next(csv.reader([text]))
    except csv.Error as exc:
        return Record(lineno, None, f"bad CSV ({exc})")
    if len(values) != len(header):
        return Record(lineno, None, f"bad CSV: {len(values)} fields, the header has {len(header)}")
    return Record(lineno, dict(zip(header, values)))


def open_source(input: Any, *, fmt: str = "auto", follow: bool = False,
                idle_timeout: float | None = None, poll: float = 0.1) -> Any:
    """A source for `input`: "-" (stdin), a file path, a binary stream or an iterable of dicts."""
    if isinstance(input, (DictSource, LineSource)) or callable(getattr(input, "commit", None)):
        return input  # a source already (a broker source: tsessm.stream.broker)
    if isinstance(input, (str, os.PathLike)):
        if str(input) == "-":
            if follow:
                raise ValueError("--follow needs a file --input, not stdin")
            return LineSource(sys.stdin.buffer, "<stdin>", fmt=fmt, positional=False)
        path = os.fspath(input)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such input file: {path}")
        if fmt == "auto" and path.endswith((".jsonl", ".ndjson", ".json")):
            fmt = "jsonl"
        elif fmt == "auto" and path.endswith((".csv", ".txt")):
            fmt = "csv"
        f = open(path, "rb")
        return LineSource(f, path, fmt=fmt, positional=True, follow=follow,
                          idle_timeout=idle_timeout, poll=poll, closer=f.close)
    if hasattr(input, "readline"):
        stream = getattr(input, "buffer", input)
        return LineSource(stream, getattr(input, "name", "<stream>"), fmt=fmt, positional=False)
    return DictSource(input)
