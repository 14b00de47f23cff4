"""The serving benchmark: `tsessm serve` on 127.0.0.1 under N concurrent clients.

    python pipelines/benchmark_serve.py                         # 50 clients x 200 posts -> pipelines/results/serve.json
    python pipelines/benchmark_serve.py --clients 10 --per-client 50 --out /tmp/serve.json

A tiny eSSM panel model (one series per client) is trained and saved; the server starts as a
subprocess (`python -m tsessm serve --port 0`, one uvicorn worker); each client thread keeps one
HTTP/1.1 connection and posts its series' observations one per request, back to back (closed
loop), timing each round trip. Then the checks: every post answered 200 with one observation
applied, GET /forecast shows each series at its last time, /metrics counts N*M applied and no
duplicate, a re-post of every client's last observation is counted as a duplicate and applied
nowhere, and the checkpoint the server writes on SIGTERM holds M observations per series.

Also measured, so the figures can be read: the same run with one client (latency without
queueing), and in process, per observation, the model alone (`ForecastService.post`) against the
whole app without the network (ASGI call) -- the rest of a round trip is uvicorn, HTTP and the
client. The goal named in issue 22 is p99 <= 5 ms for one observation at 50 concurrent clients on
2 cores; with a closed loop a served request waits for the ones queued before it, so p99 is about
clients / throughput: the figures say how far from it and why.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = "2024-01-01T00:00:00"
HISTORY = 200


def build_model(path: Path, n_series: int, d_model: int) -> None:
    import numpy as np
    import pandas as pd

    from tsessm.forecasters.essm import ESSMForecaster
    from tsessm.forecasters.panel import PanelForecaster

    frames = []
    for k in range(n_series):
        t = np.arange(HISTORY)
        frames.append(pd.DataFrame({"unique_id": f"s{k}", "ds": pd.date_range(START, periods=HISTORY, freq="h"),
                                    "load": np.sin(t / 8 + k) + 0.01 * t}))
    model = ESSMForecaster(horizon=24, lookback=16, d_model=d_model, d_state=d_model, n_layers=1, epochs=1,
                           steps_per_epoch=2, verbose=0, random_state=0, device="cpu")
    PanelForecaster(model).fit(pd.concat(frames, ignore_index=True)).save(path)


def record(series: int, step: int) -> dict:
    """Observation `step` (0-based) after the history of series `series`."""
    import math

    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.mktime(time.strptime(START, "%Y-%m-%dT%H:%M:%S"))
                                                        - time.timezone + 3600 * (HISTORY + step)))
    return {"id": f"s{series}", "time": ts, "load": math.sin((HISTORY + step) / 8 + series) + 0.01 * (HISTORY + step)}


def start_server(model: Path, checkpoint: Path, every: int) -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tsessm", "serve", "--model", str(model), "--checkpoint",
                             str(checkpoint), "--port", "0", "--checkpoint-every", str(every)],
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"the server did not start: {''.join(lines)}")
        lines.append(line)
        found = re.search(r"listening on http://([\d.]+):(\d+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, found.group(1), int(found.group(2))


def request(conn: http.client.HTTPConnection, method: str, path: str, payload=None) -> tuple[int, dict | str]:
    body = json.dumps(payload).encode() if payload is not None else None
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    response = conn.getresponse()
    data = response.read()
    kind = response.getheader("content-type", "")
    return response.status, json.loads(data) if kind.startswith("application/json") else data.decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def run_load(model: Path, workdir: Path, clients: int, per_client: int, every: int) -> dict:
    """One server, `clients` threads posting `per_client` observations each; latencies and checks."""
    from tsessm.serve.metrics import parse

    checkpoint = workdir / f"ckpt-{clients}"
    proc, host, port = start_server(model, checkpoint, every)
    try:
        warm = http.client.HTTPConnection(host, port, timeout=60)
        assert request(warm, "GET", "/health")[0] == 200
        latencies: list[list[float]] = [[] for _ in range(clients)]
        failures: list[str] = []
        barrier = threading.Barrier(clients + 1)

        def client(k: int) -> None:
            conn = http.client.HTTPConnection(host, port, timeout=60)
            conn.connect()
            barrier.wait()
            for step in range(per_client):
                payload = {"records": [record(k, step)]}
                t0 = time.perf_counter()
                status, answer = request(conn, "POST", "/observations", payload)
                latencies[k].append(time.perf_counter() - t0)
                if status != 200 or answer.get("applied") != 1:
                    failures.append(f"client {k} step {step}: {status} {answer}")
            conn.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        flat = [x for per in latencies for x in per]

        # checks: nothing lost, nothing doubled (a new connection: the idle one met the keep-alive timeout)
        warm.close()
        warm = http.client.HTTPConnection(host, port, timeout=60)
        status, every_forecast = request(warm, "GET", "/forecast")
        last = {f["id"]: f["time"] for f in every_forecast["forecasts"]}
        want_last = {f"s{k}": record(k, per_client - 1)["time"] for k in range(clients)}
        samples = parse(request(warm, "GET", "/metrics")[1])
        applied = samples[("tsessm_serve_observations_total", (("result", "applied"),))]
        duplicates = samples[("tsessm_serve_observations_total", (("result", "duplicate"),))]
        status_re, answer_re = request(warm, "POST", "/observations",
                                       {"records": [record(k, per_client - 1) for k in range(clients)]})
        samples_after = parse(request(warm, "GET", "/metrics")[1])
        server_side = {key[1][1][1]: value for key, value in samples.items()
                       if key[0] == "tsessm_serve_request_duration_seconds_bucket" and key[1][0] == ("route", "/observations")}
        n_server = server_side.get("+Inf", 0)
        warm.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    manifest = json.loads((checkpoint / "checkpoint.json").read_text())
    counts = {e["id"]: e["count"] for e in manifest["series"]}
    checks = {
        "all_posts_200_and_applied": not failures,
        "failures": failures[:10],
        "last_time_per_series_as_posted": last == want_last,
        "applied_equals_posted": applied == clients * per_client,
        "no_duplicates_during_load": duplicates == 0,
        "repost_counted_as_duplicates_not_applied": (
            status_re == 200 and answer_re == {"applied": 0, "filled": 0, "duplicates": clients}
            and samples_after[("tsessm_serve_observations_total", (("result", "applied"),))] == applied),
        "checkpoint_counts_per_series": counts == {f"s{k}": per_client for k in range(clients)},
        "server_exit_code_after_sigterm": code,
    }
    return {
        "clients": clients, "per_client": per_client, "requests": len(flat), "seconds": round(elapsed, 3),
        "throughput_per_s": round(len(flat) / elapsed, 1),
        "latency_ms": {"p50": round(1e3 * percentile(flat, 50), 3), "p90": round(1e3 * percentile(flat, 90), 3),
                       "p99": round(1e3 * percentile(flat, 99), 3), "max": round(1e3 * max(flat), 3),
                       "mean": round(1e3 * statistics.fmean(flat), 3)},
        "server_side_share_le_5ms": round(server_side.get("0.005", 0) / n_server, 4) if n_server else None,
        "server_side_share_le_1ms": round(server_side.get("0.001", 0) / n_server, 4) if n_server else None,
        "checks": checks,
        "ok": all(v is True for k, v in checks.items() if k not in ("failures", "server_exit_code_after_sigterm"))
              and code == 0,
    }


def in_process_costs(model: Path, n: int = 300) -> dict:
    """Per observation, in this process: the model alone (ForecastService.post) and the whole app
    without a network (one ASGI call); single thread, no contention."""
    from tsessm.serve import ForecastService, build_app

    def timed(post) -> float:
        times = []
        for step in range(n):
            t0 = time.perf_counter()
            post(step)
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    service = ForecastService.open(str(model), None)
    model_ms = timed(lambda step: service.post([record(0, step)]))
    service = ForecastService.open(str(model), None)
    app = build_app(service)

    async def call(payload: bytes) -> None:
        sent = []
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/observations", "raw_path": b"/observations", "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"b"), (b"content-length", str(len(payload)).encode()),
                                              (b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 1), "server": ("b", 80)}
        messages = [{"type": "http.request", "body": payload, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    loop = asyncio.new_event_loop()
    app_ms = timed(lambda step: loop.run_until_complete(call(json.dumps({"records": [record(1, step)]}).encode())))
    loop.close()
    forecast_t = []
    for _ in range(100):
        service.cache.clear()
        t0 = time.perf_counter()
        service.forecast("s1")
        forecast_t.append(time.perf_counter() - t0)
    return {"model_apply_ms_median": round(model_ms, 3), "whole_app_in_process_ms_median": round(app_ms, 3),
            "framework_ms_median": round(app_ms - model_ms, 3),
            "forecast_computation_ms_median": round(1e3 * statistics.median(forecast_t), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-client", type=int, default=200)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--d-model", type=int, default=16, help="width of the tiny eSSM (default 16)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-client run")
    parser.add_argument("--out", default=str(ROOT / "pipelines" / "results" / "serve.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = workdir / "panel.tsm"
        build_model(model, max(args.clients, 1), args.d_model)
        load_before = os.getloadavg()
        runs = []
        if not args.no_baseline:
            runs.append(run_load(model, workdir, 1, args.per_client, args.checkpoint_every))
        runs.append(run_load(model, workdir, args.clients, args.per_client, args.checkpoint_every))
        costs = in_process_costs(model)
    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])]),
        "goal": "p99 <= 5 ms for one observation per request at 50 concurrent clients on 2 cores",
        "setup": {"model": f"eSSM panel, d_model={args.d_model}, 1 layer, horizon 24, one series per client",
                  "server": "tsessm serve, one uvicorn worker (h11, asyncio loop), 127.0.0.1, OMP_NUM_THREADS=1",
                  "clients": "threads in one process, one keep-alive HTTP/1.1 connection each, closed loop",
                  "checkpoint_every": args.checkpoint_every},
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                    "python": platform.python_version(), "platform": platform.platform()},
        "runs": runs,
        "in_process_per_observation": costs,
        "ok": all(r["ok"] for r in runs),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for r in runs:
        lat = r["latency_ms"]
        print(f"{r['clients']:>3} clients x {r['per_client']} posts: {r['throughput_per_s']:.0f} req/s, "
              f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.1f} ms; "
              f"server-side <= 5 ms: {r['server_side_share_le_5ms']}; checks {'ok' if r['ok'] else 'FAILED'}")
    print(f"in process per observation: model {costs['model_apply_ms_median']:.3f} ms, whole app "
          f"{costs['whole_app_in_process_ms_median']:.3f} ms (framework {costs['framework_ms_median']:.3f} ms); "
          f"a forecast {costs['forecast_computation_ms_median']:.3f} ms")
    print(f"-> {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
