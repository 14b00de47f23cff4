"""SIGINT and SIGTERM stop a stream cleanly: the handler asks the source to stop between records."""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable


def install_signals(stopper: Any) -> Callable[[], None] | None:
    """Route SIGINT/SIGTERM to `stopper.request`; returns a function restoring the previous handlers
    (None off the main thread, where Python allows no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {sig: signal.signal(sig, stopper.request) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
