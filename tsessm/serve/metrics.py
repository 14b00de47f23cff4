"""Prometheus-style metrics of the service, by hand (no client library): counters, a latency
histogram, and the exposition in the plain-text format 0.0.4 (`name{label="value"} number`)."""
from __future__ import annotations

import bisect
import threading
from typing import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# request latency buckets, seconds: the goal (5 ms) sits on one
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + text + "}" if text else ""


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """Requests by (method, route, status) and their latency; the service's own counters come from
    `observations()` when the text is rendered (they live with the model state, in checkpoints)."""

    def __init__(self, observations: Callable[[], dict[str, float]] | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        # route -> [bucket counts..., +Inf count], sum
        self.latency: dict[str, tuple[list[int], float]] = {}
        self.observations = observations or (lambda: {})

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            counts, total = self.latency.get(route) or ([0] * (len(BUCKETS) + 1), 0.0)
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency[route] = (counts, total + seconds)

    def render(self) -> str:
        lines: list[str] = []
        service = self.observations()
        for name, (kind, text, samples) in service.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in samples:
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
        with self._lock:
            requests = sorted(self.requests.items())
            latency = {route: (list(counts), total) for route, (counts, total) in sorted(self.latency.items())}
        lines += ["# HELP tsessm_serve_requests_total HTTP requests answered, by method, route and status",
                  "# TYPE tsessm_serve_requests_total counter"]
        for (method, route, status), count in requests:
            lines.append(f"tsessm_serve_requests_total"
                         f"{_labels([('method', method), ('route', route), ('status', status)])} {count}")
        name = "tsessm_serve_request_duration_seconds"
        lines += [f"# HELP {name} time from the request's arrival to its response's last byte, by route",
                  f"# TYPE {name} histogram"]
        for route, (counts, total) in latency.items():
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts):
                running += count
                lines.append(f"{name}_bucket{_labels([('route', route), ('le', _number(float(bound)))])} {running}")
            lines.append(f"{name}_sum{_labels([('route', route)])} {total!r}")
            lines.append(f"{name}_count{_labels([('route', route)])} {running}")
        return "\n".join(lines) + "\n"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of an exposition: {(name, ((label, value), ...)): value}; raises ValueError on a
    line that is not `name{labels} value` (a test and bench helper: simple label values only)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if "{" in head:
            name, _, rest = head.partition("{")
            if not rest.endswith("}"):
                raise ValueError(f"not a sample line: {line!r}")
            labels = []
            for pair in filter(None, rest[:-1].split(",")):
                key, eq, quoted = pair.partition("=")
                if not eq or len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
                    raise ValueError(f"bad label in {line!r}")
                labels.append((key, quoted[1:-1]))
        else:
            name, labels = head, []
        if not name or not (name[0].isalpha() or name[0] in "_:") or not all(c.isalnum() or c in "_:" for c in name):
            raise ValueError(f"bad metric name in {line!r}")
        out[(name, tuple(labels))] = float(value)
    return out
