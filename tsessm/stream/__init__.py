"""Online runner: stream observations through a trained model, with checkpoints.

    tsessm stream --model model.tsm --input - --checkpoint ckpt/     (see `tsessm stream --help`)

Library use:

    from tsessm.stream import run_stream
    result = run_stream(model, [{"time": "2024-01-13T12:00:00", "load": 1.2, "temp": 0.3}, ...],
                        print, checkpoint="ckpt/")

Modules: `adapters` (the model protocol the runner talks to, `SingleSeriesAdapter`),
`sources` (dicts, CSV, JSON lines; files, stdin, --follow), `sinks` (callback, JSON lines),
`records` (one record's id, time and values, checked), `counters` (counts and the result),
`checkpoint` (model file + manifest, committed atomically), `reload` (hand-over to a newly
promoted model), `runner` (`run_stream`), `signals`, `grid` (steps between timestamps),
`cli` (`add_stream_parser`, `run_stream_command`). Importing this package stays light:
the heavy names load on first use.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from tsessm.stream.cli import add_stream_parser, run_stream_command

_LAZY = {
    "run_stream": "runner",
    "StreamResult": "counters",
    "StreamSetupError": "runner",
    "Counters": "counters",
    "StreamAdapter": "adapters",
    "SingleSeriesAdapter": "adapters",
    "RecordError": "adapters",
    "make_adapter": "adapters",
    "open_source": "sources",
    "open_sink": "sinks",
}

__all__ = ["add_stream_parser", "run_stream_command", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"tsessm.stream.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tsessm.stream' has no attribute {name!r}")
