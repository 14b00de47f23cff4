"""`tsessm serve`: round trips equal update-then-predict, idempotence by (id, time), bad records,
the token, size limits, metrics, checkpoints and a kill -9 of a real server."""
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tsessm.forecasters.base import BaseForecaster
from tsessm.serve import ForecastService, build_app
from tsessm.serve.metrics import parse
from tsessm.stream import run_stream
from stream_data import N_FIT, fitted_model_file, hourly

ROOT = Path(__file__).resolve().parents[1]
N_NEW = 40


@pytest.fixture(scope="module")
def data():
    return hourly(N_NEW)


@pytest.fixture(scope="module")
def model_path(data, tmp_path_factory):
    return fitted_model_file(data, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def new(data):
    return data.iloc[N_FIT:]


def records(frame, sid="a"):
    return [{"id": sid, "time": ts.isoformat(), **{c: float(v) for c, v in row.items()}} for ts, row in frame.iterrows()]


def call(app, method, path, payload=None, *, body=None, headers=None):
    """One request through the ASGI app in process: (status, headers, decoded body)."""
    if payload is not None:
        body = json.dumps(payload).encode()
    body = body or b""
    path, _, query = path.partition("?")
    raw_headers = [(b"host", b"test"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": raw_headers, "client": ("127.0.0.1", 1), "server": ("test", 80)}
    sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    text = data.decode()
    return start["status"], head, (json.loads(text) if head.get("content-type", "").startswith("application/json") else text)


def open_app(model_path, checkpoint=None, token=None, **options):
    service = ForecastService.open(str(model_path), checkpoint, **options)
    return service, build_app(service, token=token, **{k: v for k, v in options.items() if k.startswith("max_")} or {})


@pytest.fixture
def served(model_path, tmp_path):
    service = ForecastService.open(str(model_path), tmp_path / "ckpt")
    yield service, build_app(service, max_body_bytes=4096, max_records=50)
    service.close()


def assert_forecast_equals(answer, model):
    expected = model.predict()
    assert list(answer["forecast"]) == ["load", "temp"]
    for col in ("load", "temp"):
        np.testing.assert_allclose(answer["forecast"][col], expected[col].to_numpy(), atol=1e-5, rtol=0)


# ----- round trips --------------------------------------------------------------------------------
def test_post_then_get_equals_update_then_predict(served, model_path, new):
    service, app = served
    model = BaseForecaster.load(model_path)
    rows = records(new)
    for i, record in enumerate(rows[:10]):  # one observation per request
        status, _, answer = call(app, "POST", "/observations", {"records": [record]})
        assert status == 200 and answer == {"applied": 1, "filled": 0, "duplicates": 0}
        model.update(new.iloc[[i]])
        status, _, got = call(app, "GET", "/forecast/a")
        assert status == 200 and got["id"] == "a" and got["time"] == record["time"]
        assert_forecast_equals(got, model)
    status, _, answer = call(app, "POST", "/observations?forecast=true", rows[10:])  # a bare list, many at once
    assert status == 200 and answer["applied"] == N_NEW - 10
    model.update(new.iloc[10:])
    assert_forecast_equals(answer["forecasts"][0], model)
    status, _, every = call(app, "GET", "/forecast")
    assert status == 200 and [f["id"] for f in every["forecasts"]] == ["a"]
    assert_forecast_equals(every["forecasts"][0], model)
    interval = every["forecasts"][0]["interval"]  # 90 % by default, the model's calibrated one
    for target, values in every["forecasts"][0]["forecast"].items():
        assert all(lo < v < hi for lo, v, hi in zip(interval[target]["lo"], values, interval[target]["hi"]))
    # the same answer as the stream runner's last line
    line = run_stream(str(model_path), rows, id_col="id").lines[-1]
    assert json.loads(json.dumps(line)) == {k: every["forecasts"][0][k] for k in ("id", "time", "forecast")}


def test_a_reposted_observation_is_a_duplicate_not_applied_twice(served, new):
    service, app = served
    rows = records(new.iloc[:5])
    assert call(app, "POST", "/observations", {"records": rows})[2]["applied"] == 5
    before = call(app, "GET", "/forecast/a")[2]
    status, _, answer = call(app, "POST", "/observations", {"records": rows + rows[2:]})
    assert status == 200 and answer == {"applied": 0, "filled": 0, "duplicates": 8}
    assert call(app, "GET", "/forecast/a")[2] == before
    # a batch mixing replays and new rows applies only the new ones, in order
    more = records(new.iloc[3:8])
    assert call(app, "POST", "/observations", {"records": more})[2] == {"applied": 3, "filled": 0, "duplicates": 2}
    assert service.counters.applied == 8 and service.counters.duplicates == 10


def test_an_interval_hook_adds_intervals(served, new):
    service, app = served
    service.adapter.interval = lambda sid, coverage: {"load": {"lower": [coverage], "upper": [1.0]}}
    call(app, "POST", "/observations", {"records": records(new.iloc[:1])})
    status, _, got = call(app, "GET", "/forecast/a?coverage=0.8")
    assert status == 200 and got["interval"] == {"load": {"lower": [0.8], "upper": [1.0]}}
    assert call(app, "GET", "/forecast/a?coverage=2")[0] == 422


# ----- refusals: 4xx, a message, no traceback, state unchanged -----------------------------------
def _no_traceback(answer):
    text = json.dumps(answer)
    assert "Traceback" not in text and "File \"" not in text and ".py" not in text, text


@pytest.mark.parametrize("mutate, words", [
    (lambda r: r.pop("load"), "missing field 'load'"),
    (lambda r: r.update(load="lots"), "field 'load' is not a number"),
    (lambda r: r.update(load=None), "field 'load' is null"),
    (lambda r: r.update(time="yesterday"), "not an ISO 8601 timestamp"),
    (lambda r: r.update(time="2024-01-13T15:30:00"), "off the model's grid"),
    (lambda r: r.update(time="2024-01-14T12:00:00"), "gap:"),
    (lambda r: r.update(id=["x"]), "field 'id' must be a non-empty string"),
])
def test_bad_records_are_422_and_change_nothing(served, new, mutate, words):
    service, app = served
    call(app, "POST", "/observations", {"records": records(new.iloc[:2])})
    before = call(app, "GET", "/forecast/a")[2]
    bad = records(new.iloc[2:4])
    mutate(bad[1])
    status, _, answer = call(app, "POST", "/observations", {"records": bad})  # one good, one bad: none applied
    assert status == 422 and words in answer["error"] and answer["applied"] == 0, answer
    assert answer["errors"][0]["index"] == 1
    _no_traceback(answer)
    assert call(app, "GET", "/forecast/a")[2] == before and service.counters.applied == 2
    assert service.counters.bad == 1


def test_other_refusals(served, new):
    service, app = served
    call(app, "POST", "/observations", {"records": records(new.iloc[:1])})
    cases = [
        (call(app, "POST", "/observations", body=b"{not json"), 400, "not JSON"),
        (call(app, "POST", "/observations", {"rows": []}), 422, '{"records"'),
        (call(app, "POST", "/observations", {"records": [1]}), 422, "must be a JSON object"),
        (call(app, "POST", "/observations", {"records": records(new.iloc[1:2], sid="b")}), 422,
         "not the one this single-series model serves"),
        (call(app, "GET", "/forecast/nope"), 404, "no series 'nope'"),
        (call(app, "GET", "/nowhere"), 404, "Not Found"),
        (call(app, "DELETE", "/forecast"), 405, "Method Not Allowed"),
        (call(app, "POST", "/observations", body=b"x" * 5000), 413, "--max-body-bytes"),
        (call(app, "POST", "/observations", {"records": [{}] * 51}), 413, "--max-records"),
    ]
    for (status, _, answer), want, words in cases:
        assert status == want and words in answer["error"], (want, answer)
        _no_traceback(answer)
    assert service.counters.applied == 1


def test_a_body_sent_without_length_is_limited_too(served):
    service, app = served
    scope_body = b"[" + b" " * 5000 + b"]"

    async def run():
        sent = []
        chunks = [{"type": "http.request", "body": scope_body[i:i + 1000], "more_body": i + 1000 < len(scope_body)}
                  for i in range(0, len(scope_body), 1000)]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/observations", "raw_path": b"/observations", "query_string": b"",
                 "root_path": "", "headers": [(b"host", b"t"), (b"transfer-encoding", b"chunked")],
                 "client": ("127.0.0.1", 1), "server": ("t", 80)}

        async def receive():
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 413


def test_an_internal_error_is_a_json_500_without_traceback(served, new):
    service, app = served

    def broken(*args, **kwargs):
        raise RuntimeError("/secret/path/model.py line 3")

    service.post = broken
    status, _, answer = call(app, "POST", "/observations", {"records": []})
    assert status == 500 and answer == {"error": "internal error (RuntimeError); see the server log"}


def test_the_token_is_required_when_set(model_path, new, tmp_path):
    service = ForecastService.open(str(model_path), tmp_path / "ckpt")
    app = build_app(service, token="s3cret-token")
    try:
        post = {"records": records(new.iloc[:1])}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                        {"Authorization": "Bearer s3cret-token2"}):
            for method, path, payload in (("POST", "/observations", post), ("GET", "/forecast", None),
                                          ("GET", "/metrics", None)):
                status, head, answer = call(app, method, path, payload, headers=headers)
                assert status == 401 and head["www-authenticate"] == "Bearer" and "bearer token" in answer["error"]
                assert "s3cret" not in json.dumps(answer)
        assert service.counters.applied == 0
        status, _, health = call(app, "GET", "/health")
        assert status == 200 and health == {"status": "ok"}  # liveness needs no token, and tells no more
        for made_up in ("FOO1", "ZZZ"):  # unknown methods never add a metrics series
            call(app, made_up, "/", None)
        metrics = call(app, "GET", "/metrics", headers={"Authorization": "Bearer s3cret-token"})[2]
        assert "FOO1" not in str(metrics) and "ZZZ" not in str(metrics)
        good = {"Authorization": "Bearer s3cret-token"}
        assert call(app, "POST", "/observations", post, headers=good)[0] == 200
        assert call(app, "GET", "/forecast/a", headers=good)[0] == 200
    finally:
        service.close()


def test_metrics_parse(served, new):
    service, app = served
    rows = records(new.iloc[:3])
    call(app, "POST", "/observations", {"records": rows})
    call(app, "POST", "/observations", {"records": rows[:1]})
    call(app, "POST", "/observations", {"records": [{"id": "a"}]})
    call(app, "GET", "/forecast/a")
    status, head, text = call(app, "GET", "/metrics")
    assert status == 200 and head["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(text)  # every line is `name{labels} value` or a comment
    assert samples[("tsessm_serve_observations_total", (("result", "applied"),))] == 3
    assert samples[("tsessm_serve_observations_total", (("result", "duplicate"),))] == 1
    assert samples[("tsessm_serve_observations_total", (("result", "bad"),))] == 1
    requests = ("tsessm_serve_requests_total", (("method", "POST"), ("route", "/observations"), ("status", "200")))
    assert samples[requests] == 2
    assert samples[("tsessm_serve_requests_total", (("method", "POST"), ("route", "/observations"), ("status", "422")))] == 1
    hist = "tsessm_serve_request_duration_seconds"
    assert samples[(hist + "_count", (("route", "/observations"),))] == 3
    assert samples[(hist + "_bucket", (("route", "/observations"), ("le", "+Inf")))] == 3
    assert samples[(hist + "_sum", (("route", "/observations"),))] > 0
    with pytest.raises(ValueError):
        parse("bad line{ 1")


# ----- checkpoints ---------------------------------------------------------------------------------
def test_a_closed_service_resumes_from_its_checkpoint(model_path, new, tmp_path):
    rows = records(new)
    service, app = open_app(model_path, tmp_path / "ckpt", checkpoint_every=7)
    call(app, "POST", "/observations", {"records": rows[:20]})
    service.close()
    manifest = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert manifest["format"] == "tsessm-stream-checkpoint/2" and manifest["counters"]["applied"] == 20
    service, app = open_app(model_path, tmp_path / "ckpt", checkpoint_every=7)
    try:
        assert service.resumed and service.counters.applied == 20
        assert call(app, "POST", "/observations", {"records": rows})[2] == {"applied": N_NEW - 20, "filled": 0,
                                                                          "duplicates": 20}
        model = BaseForecaster.load(model_path).update(new)
        assert_forecast_equals(call(app, "GET", "/forecast/a")[2], model)
        # the folder is held while the service runs
        with pytest.raises(ValueError, match="in use"):
            ForecastService.open(str(model_path), tmp_path / "ckpt")
    finally:
        service.close()
    # a stream checkpoint and a service checkpoint are the same thing
    result = run_stream(None, rows, checkpoint=tmp_path / "ckpt", id_col="id")
    assert result.resumed and result.run_counters.duplicates == N_NEW and result.run_counters.applied == 0


def test_gap_ffill(model_path, new, tmp_path):
    service, app = open_app(model_path, None, gap="ffill")
    rows = records(new.iloc[:6])
    call(app, "POST", "/observations", {"records": rows[:2]})
    status, _, answer = call(app, "POST", "/observations", {"records": [rows[4]]})
    assert status == 200 and answer == {"applied": 1, "filled": 2, "duplicates": 0}
    assert call(app, "GET", "/forecast/a")[2]["time"] == rows[4]["time"]


# ----- a real server: SIGTERM, kill -9, restart -----------------------------------------------------
def env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def start_server(model_path, checkpoint, *extra, environ=None):
    proc = subprocess.Popen([sys.executable, "-m", "tsessm", "serve", "--model", str(model_path),
                             "--checkpoint", str(checkpoint), "--port", "0", *extra],
                            stderr=subprocess.PIPE, text=True, env=environ or env())
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"server exited: {''.join(lines)}")
        lines.append(line)
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            return proc, found.group(1)
    raise AssertionError("the server did not start")


def http(base, method, path, payload=None, headers=None):
    request = urllib.request.Request(base + path, method=method, headers={"Content-Type": "application/json",
                                                                          **(headers or {})},
                                     data=json.dumps(payload).encode() if payload is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_kill_9_then_restart_and_repost_equals_an_uninterrupted_run(model_path, new, tmp_path):
    rows = records(new)
    proc, base = start_server(model_path, tmp_path / "ckpt", "--checkpoint-every", "7")
    try:
        assert base.startswith("http://127.0.0.1:")
        for record in rows[:24]:
            assert http(base, "POST", "/observations", {"records": [record]})[0] == 200
    finally:
        proc.kill()  # SIGKILL: no last checkpoint
        proc.wait(timeout=30)
    assert json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["counters"]["applied"] == 21
    proc, base = start_server(model_path, tmp_path / "ckpt", "--checkpoint-every", "7")
    try:
        status, health = http(base, "GET", "/health")
        assert status == 200 and health["resumed"] and health["applied"] == 21
        status, answer = http(base, "POST", "/observations", {"records": rows})  # re-post everything
        assert status == 200 and answer == {"applied": N_NEW - 21, "filled": 0, "duplicates": 21}
        status, got = http(base, "GET", "/forecast/a")
        model = BaseForecaster.load(model_path).update(new)
        assert status == 200 and got["time"] == rows[-1]["time"]
        assert_forecast_equals(got, model)
        proc.send_signal(signal.SIGTERM)  # a clean stop writes the last checkpoint and exits 0
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "stopped by SIGTERM" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    manifest = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert manifest["counters"]["applied"] == N_NEW and manifest["counters"]["duplicates"] == 21


def test_the_cli_reads_the_token_from_the_environment_and_never_shows_it(model_path, new, tmp_path):
    proc, base = start_server(model_path, tmp_path / "ckpt", "--token-env", "SERVE_TEST_TOKEN",
                              environ=env(SERVE_TEST_TOKEN="t0k3n-value"))
    try:
        assert http(base, "GET", "/forecast")[0] == 401
        assert http(base, "GET", "/forecast", headers={"Authorization": "Bearer t0k3n-value"})[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    err = proc.stderr.read()
    assert "t0k3n-value" not in err and "Traceback" not in err
    done = subprocess.run([sys.executable, "-m", "tsessm", "serve", "--model", str(model_path), "--checkpoint",
                           str(tmp_path / "c2"), "--token-env", "NO_SUCH_TOKEN_VAR"], capture_output=True, text=True,
                          env=env(), timeout=60)
    assert done.returncode == 2 and "NO_SUCH_TOKEN_VAR" in done.stderr and "Traceback" not in done.stderr
