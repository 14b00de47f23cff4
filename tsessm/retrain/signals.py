"""Signals during a retrain: SIGINT/SIGTERM stop the run cleanly (`Interrupted`), but never in the
middle of a promotion. Light on purpose: the command installs the handlers before the heavy imports."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

log = logging.getLogger("tsessm.retrain")


class Interrupted(BaseException):
    """SIGTERM/SIGINT during a run (a BaseException, so library code does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


_critical = threading.Event()
_pending: list[int] = []
_interrupted: list[int] = []


def _on_signal(signum: int, frame: Any) -> None:
    if _interrupted:
        return  # already stopping (SIGINT from the terminal and SIGTERM from a scheduler, say)
    if _critical.is_set():
        _pending.append(signum)  # raised when the promotion is done
        return
    _interrupted.append(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def promotion_section() -> Iterator[None]:
    """From the first registry write of a promotion on, signals wait: the promotion and its report
    complete (a few registry and tracking calls), then the process exits as it would have."""
    _critical.set()
    yield


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """SIGINT/SIGTERM end the run as failed ("interrupted"), the MLflow run marked FAILED and the
    lock released; a promotion under way completes first. Main thread only (else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending.clear()
    _interrupted.clear()
    _critical.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _critical.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if _pending:
            log.warning("%s arrived during the promotion; it completed first", signal.Signals(_pending[0]).name)
