"""`tsessm serve`: a stateful HTTP service for online forecasting, with the stream's checkpoints.

The parser is light (argparse only); FastAPI, uvicorn, pandas and torch load when the command runs.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from tsessm.checks import positive_int_arg
from tsessm.commands import options
from tsessm.commands.errors import UsageError

NAME = "serve"
HELP = "serve a trained model over HTTP: post observations, get the latest forecasts (stateful, checkpointed)"

DESCRIPTION = """\
Serve a trained model online over HTTP. Clients POST observations (one or many series, the
stream's record format) and GET the latest forecast of each series; the model's state moves with
every observation and is checkpointed to --checkpoint like `tsessm stream` (every N observations
and on SIGINT/SIGTERM); a server restarted with the same --checkpoint resumes. Observations are
idempotent by (id, time): a re-posted one is counted as a duplicate, not applied twice, so after a
crash clients re-post from the last checkpoint (GET /forecast shows each series' last time).

  POST /observations    {"records": [{"id": "a", "time": "2024-01-13T12:00:00", "load": 1.27, "temp": 0.31}]}
  GET  /forecast/ID     {"id": "a", "time": "2024-01-13T12:00:00", "forecast": {"load": [v_1, ..., v_H]}}
  GET  /forecast        {"forecasts": [...]} for every series
  GET  /health          liveness (no token needed)
  GET  /metrics         Prometheus text: observations, duplicates, bad records, requests, latency"""

EPILOG = """\
example:
  tsessm serve --model model.tsm --checkpoint ckpt/
  curl -s -X POST localhost:8000/observations -H 'Content-Type: application/json' \\
       -d '{"records": [{"id": "a", "time": "2024-01-13T12:00:00", "load": 1.27, "temp": 0.31}]}'
  curl -s localhost:8000/forecast/a

with a token (read from the environment variable named, never printed):
  export TSESSM_TOKEN=$(openssl rand -hex 16)
  tsessm serve --model model.tsm --checkpoint ckpt/ --token-env TSESSM_TOKEN
  curl -s -H "Authorization: Bearer $TSESSM_TOKEN" localhost:8000/forecast

exit status: 0 after a clean stop (SIGINT/SIGTERM, last checkpoint written), 2 for bad arguments,
a missing model, an unusable or busy checkpoint, or a port in use."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a model file written by `tsessm train` / save(), or models:/NAME@alias "
                        "(not read when resuming from --checkpoint)")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="checkpoint directory (the stream's format); an existing checkpoint there is resumed")
    p.add_argument("--checkpoint-every", type=positive_int_arg, default=100, metavar="N",
                   help="checkpoint after every N observations applied (default 100), and on SIGINT/SIGTERM")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one, announced on stderr)")
    p.add_argument("--time-col", default="time", metavar="NAME", help="the time field, ISO 8601 (default: time)")
    p.add_argument("--id-col", default="id", metavar="NAME", help="the series id field (default: id)")
    p.add_argument("--gap", choices=["error", "ffill"], default="error",
                   help="a time more than one step after the series' last: refuse the record (error, default) "
                        "or apply the last values for the missing steps first (ffill)")
    p.add_argument("--max-fill", type=positive_int_arg, metavar="N",
                   help="with --gap ffill: the most missing steps one gap may fill (default: the model's horizon)")
    p.add_argument("--max-body-bytes", type=positive_int_arg, default=1 << 20, metavar="N",
                   help="largest request body accepted, bytes (default 1048576); larger ones get 413")
    p.add_argument("--max-records", type=positive_int_arg, default=10_000, metavar="N",
                   help="most records in one POST (default 10000); more get 413")
    p.add_argument("--token-env", metavar="NAME",
                   help="require 'Authorization: Bearer <token>' on every route but /health, the token being "
                        "the value of this environment variable (never printed or logged)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr (off by default: it costs latency)")
    options.add_trust_pickle_arg(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 after a clean stop. Setup problems are UsageErrors (exit 2)."""
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise UsageError(f"--token-env {args.token_env}: that environment variable is not set or empty")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    from tsessm.serve.app import build_app  # FastAPI, pandas and torch: only when the command runs
    from tsessm.serve.server import bind, run_server, stderr_log
    from tsessm.serve.service import ForecastService, ServiceSetupError

    try:
        service = ForecastService.open(args.model, args.checkpoint, trust_pickle=args.trust_pickle,
                                       checkpoint_every=args.checkpoint_every, time_col=args.time_col,
                                       id_col=args.id_col, gap=args.gap, max_fill=args.max_fill, log=stderr_log)
    except ServiceSetupError as exc:
        raise UsageError(str(exc)) from exc
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        service.close()
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    app = build_app(service, token=token, max_body_bytes=args.max_body_bytes, max_records=args.max_records,
                    log=stderr_log)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    stderr_log(f"listening on http://{shown}:{port} ({'resumed from' if service.resumed else 'checkpoints to'} "
               f"{args.checkpoint}, {len(service.series)} series{', token required' if token else ''})")
    stopped_by = run_server(app, sock, on_stop=service.close, access_log=args.access_log, log=stderr_log)
    c = service.counters
    stderr_log(f"stopped{f' by {stopped_by}' if stopped_by else ''}: {c.applied} applied, {c.duplicates} duplicates, "
               f"{c.bad} bad records in total; checkpoint {service.seq} in {args.checkpoint}")
    return 0
