"""What a stream counts and returns: the counters (kept in checkpoints), per-series state, the result."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Counters:
    records: int = 0  # records read (not counting those skipped by the restart position)
    applied: int = 0  # observations from the input absorbed by the model
    filled: int = 0  # forward-filled steps absorbed (--gap ffill)
    duplicates: int = 0  # replays skipped: time not after the last applied one of the series
    bad: int = 0  # malformed records skipped (--on-bad-record skip)
    emitted: int = 0  # output lines written


@dataclass
class SeriesState:
    count: int = 0  # observations applied (input and filled), drives --emit-every
    last_values: list[float] | None = None  # for --gap ffill


def restored(manifest: dict, width: int) -> tuple[Counters, dict[Any, SeriesState]]:
    """The counters and per-series state a checkpoint manifest keeps, checked against a model of
    `width` columns; a ValueError names the damage."""
    fields = Counters.__dataclass_fields__
    counters = Counters(**{k: int(v) for k, v in manifest["counters"].items() if k in fields})
    series = {}
    for entry in manifest["series"]:
        last = entry.get("last_values")
        if last is not None and len(last) != width:
            raise ValueError(f"damaged checkpoint: series {entry['id']!r} keeps {len(last)} last values, "
                             f"the model has {width} columns")
        series[entry["id"]] = SeriesState(int(entry["count"]), last)
    return counters, series


@dataclass
class StreamResult:
    status: str  # "end", "stopped" (signal/stop event), "idle" (--idle-timeout), "bad_record", "output_closed"
    message: str | None  # why a stream stopped early (one line, names the input line)
    counters: Counters
    line: int  # input position: the last line consumed
    adapter: Any  # the adapter, holding the model in its final state
    resumed: bool  # started from a checkpoint
    lines: list[dict] | None = field(default=None, repr=False)  # the output, when no sink was given
    model_version: int | None = None  # the registry version serving at the end (models:/ sources)
    switches: list[dict] = field(default_factory=list)  # model hand-overs: from, to, time, line
    counters_at_start: Counters = field(default_factory=Counters)  # restored from the checkpoint

    @property
    def run_counters(self) -> Counters:
        """This run's own counts (`counters` are totals since the checkpoint folder began)."""
        start = asdict(self.counters_at_start)
        return Counters(**{k: v - start[k] for k, v in asdict(self.counters).items()})

    @property
    def exit_code(self) -> int:
        return 1 if self.status in ("bad_record", "output_closed") else 0
