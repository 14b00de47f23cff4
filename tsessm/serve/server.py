"""Running the app under uvicorn: one worker, one process, a socket bound before the server starts
(so --port 0 picks a free port and the line announcing it is true), and a last checkpoint on
SIGINT/SIGTERM after uvicorn's graceful shutdown."""
from __future__ import annotations

import logging

import signal
import socket
import sys
import threading
from typing import Any, Callable

from tsessm.redact import mask


def stderr_log(message: str) -> None:
    print(mask(f"tsessm serve: {message}"), file=sys.stderr, flush=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_server(app: Any, sock: socket.socket, *, on_stop: Callable[[], None], access_log: bool = False,
               log: Callable[[str], None] = stderr_log) -> str | None:
    """Serve `app` on `sock` until SIGINT/SIGTERM, then call `on_stop` (the last checkpoint); returns
    the name of the signal that stopped it (None when the server stopped by itself)."""
    import uvicorn

    config = uvicorn.Config(app, workers=1, lifespan="off", access_log=access_log, log_level="warning",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    if access_log:  # log_level="warning" above would silence uvicorn's INFO request lines
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    received: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn catches the signal while it serves and raises it again after its shutdown; these
        # handlers take that second one, so the last checkpoint is written and the exit is clean.
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda number, frame: received.append(number))
    try:
        server.run(sockets=[sock])
    finally:
        try:
            on_stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
    return signal.Signals(received[0]).name if received else None
