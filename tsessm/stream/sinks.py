"""Where forecasts go: a callback (library use) or JSON lines to stdout or a file.

A sink has `write(line: dict)`, `sync()` (make what was written durable; the runner calls it
before each checkpoint, so a checkpoint never covers output that could still be lost) and
`close()`.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any, BinaryIO, Callable


def format_line(line: dict) -> str:
    """One output record as a JSON line (no newline): strict JSON, never a NaN or Infinity token."""
    return json.dumps(line, allow_nan=False)


class CallbackSink:
    def __init__(self, callback: Callable[[dict], Any]) -> None:
        self.callback = callback

    def write(self, line: dict) -> None:
        self.callback(line)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class ListSink(CallbackSink):
    """Collects the output lines in `self.lines`."""

    def __init__(self) -> None:
        self.lines: list[dict] = []
        super().__init__(self.lines.append)


class JsonLinesSink:
    """JSON lines to a binary stream, flushed after every line.

    A file is opened for appending (a restarted runner continues it). A torn last line, left
    by a process killed while writing it, is cut off first: the restarted runner emits that
    observation again, so nothing is lost and every line in the file stays valid JSON.
    """

    def __init__(self, stream: BinaryIO, *, closer: Callable[[], None] | None = None, fsync: bool = False) -> None:
        self.stream, self._closer, self._fsync = stream, closer, fsync

    @classmethod
    def open(cls, path: str | os.PathLike) -> "JsonLinesSink":
        if str(path) == "-":
            return cls(sys.stdout.buffer)
        path = os.fspath(path)
        _cut_torn_tail(path)
        f = open(path, "ab")
        # fsync makes a regular file durable; a device (/dev/null, /dev/stdout) or a pipe refuses it
        return cls(f, closer=f.close, fsync=stat.S_ISREG(os.fstat(f.fileno()).st_mode))

    def write(self, line: dict) -> None:
        self.stream.write(format_line(line).encode("utf-8") + b"\n")
        self.stream.flush()

    def sync(self) -> None:
        self.stream.flush()
        if self._fsync:
            os.fsync(self.stream.fileno())

    def close(self) -> None:
        try:
            self.stream.flush()
        finally:
            if self._closer is not None:
                self._closer()


def _cut_torn_tail(path: str) -> None:
    """Truncate a file after its last newline (drops a partly written last line)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:  # a device or a pipe has no tail to cut
        return
    size = info.st_size
    with open(path, "r+b") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        end, block = size, 65536
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            end = start
        f.truncate(0)


def open_sink(output: Any) -> Any:
    """A sink for `output`: "-" or a path (JSON lines), a callable, a sink, or None (a ListSink)."""
    if output is None:
        return ListSink()
    if isinstance(output, (str, os.PathLike)):
        return JsonLinesSink.open(output)
    if hasattr(output, "write") and hasattr(output, "sync"):
        return output
    if callable(output):
        return CallbackSink(output)
    if hasattr(output, "write"):  # a text or binary stream
        stream = getattr(output, "buffer", None)
        if stream is not None:
            return JsonLinesSink(stream)
        return CallbackSink(lambda line: (output.write(format_line(line) + "\n"), output.flush()))
    raise TypeError(f"output must be a path, '-', a callable or a stream, got {type(output).__name__}")
