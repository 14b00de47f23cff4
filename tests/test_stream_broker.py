"""Streams over Redis Streams: partitions owned by one runner each, acks after checkpoints, kill -9 and resume.

Redis comes from TSESSM_TEST_REDIS_URL (set by .ci/run, which starts redis-server); without it the
tests start their own `redis-server` on a free port. With neither they fail, saying so: they
never skip.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsessm import ESSMForecaster
from tsessm.forecasters.panel import PanelForecaster
from tsessm.stream import run_stream
from tsessm.stream.broker import RedisStreamSink, RedisStreamSource, partition_of, publish, stream_key, with_query
from tsessm.stream.runner import StreamSetupError

import redis  # noqa: E402  (a dependency of tsessm: never skipped)

ROOT = Path(__file__).resolve().parents[1]
REDIS_ENV = "TSESSM_TEST_REDIS_URL"
START = pd.Timestamp("2024-01-01")
IDS = [f"s{k:02d}" for k in range(20)]
N_FIT, N_NEW, P = 120, 30, 4


# ----- a Redis server -------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    url = os.environ.get(REDIS_ENV)
    if url:
        try:
            redis.Redis.from_url(url).ping()
        except redis.RedisError as exc:
            pytest.fail(f"{REDIS_ENV}={url} does not answer: {exc}")
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"these tests need Redis: set {REDIS_ENV}=redis://HOST:PORT/DB or install redis-server "
                    "(apt-get install -y redis-server); .ci/run does both")
    port, where = _free_port(), tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(where)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def key():
    return f"obs-{uuid.uuid4().hex[:8]}"


# ----- a panel model over 20 series and its uninterrupted output ----------------------------
def _panel(offset: int, n: int) -> pd.DataFrame:
    frames = []
    for i, sid in enumerate(IDS):
        k = np.arange(offset, offset + n)
        frames.append(pd.DataFrame({"unique_id": sid, "ds": START + pd.to_timedelta(k, unit="h"),
                                    "y": np.sin(k / (5 + i % 7)) * (1 + i % 3) + i, "x": np.cos(k / 3 + i)}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = ESSMForecaster(horizon=4, target="y", lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1,
                           steps_per_epoch=2, verbose=0, random_state=0, device="cpu")
    path = tmp_path_factory.mktemp("broker") / "panel.tsm"
    PanelForecaster(model).fit(_panel(0, N_FIT)).save(path)
    return path


@pytest.fixture(scope="module")
def records():
    new = _panel(N_FIT, N_NEW).sort_values(["ds", "unique_id"])
    return [{"sid": r.unique_id, "time": r.ds.isoformat(), "y": float(r.y), "x": float(r.x)} for r in new.itertuples()]


@pytest.fixture(scope="module")
def expected(model_path, records):
    """One uninterrupted run over every record (no broker), through JSON: {(id, time): line}."""
    result = run_stream(str(model_path), records, id_col="sid")
    assert result.status == "end" and result.counters.applied == len(IDS) * N_NEW
    return {(line["id"], line["time"]): json.loads(json.dumps(line)) for line in result.lines}


def dedup(lines):
    """{(id, time): line}; a repeated pair must carry the same line."""
    seen = {}
    for line in lines:
        k = (line["id"], line["time"])
        if k in seen:
            assert seen[k] == line, f"two different lines for {k}"
        seen.setdefault(k, line)
    return seen


def assert_same_output(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for k, line in expected.items():
        assert list(got[k]["forecast"]) == list(line["forecast"])
        for target, values in line["forecast"].items():
            np.testing.assert_allclose(got[k]["forecast"][target], values, rtol=0, atol=1e-6)


def output_lines(client, out_key):
    return [json.loads(fields[b"data"]) for _, fields in client.xrange(out_key)]


def pending(client, key, group="g", consumer=None):
    total = 0
    for q in range(P):
        s = stream_key(key, q, P)
        if not any(g["name"] == group.encode() for g in client.xinfo_groups(s)):
            continue  # no runner read this partition
        if consumer is None:
            total += client.xpending(s, group)["pending"]
        else:
            total += len(client.xpending_range(s, group, "-", "+", 10_000, consumername=consumer))
    return total


def source_url(redis_url, key, **params):
    return with_query(redis_url, stream=key, partitions=P, group="g", batch=50, **params)


# ----- the pieces -----------------------------------------------------------------------------
def test_partitions_are_stable_and_each_has_one_owner():
    assert partition_of("s07", 4) == partition_of("s07", 4) == __import__("zlib").crc32(b"s07") % 4
    assert partition_of(7, 5) == partition_of("7", 5)  # CSV ids arrive as text
    owners = {q: [i for i in range(2) if q % 2 == i] for q in range(P)}
    assert all(len(o) == 1 for o in owners.values())
    shares = {i: [s for s in IDS if partition_of(s, P) % 2 == i] for i in range(2)}
    assert shares[0] and shares[1]  # both runners of the tests below serve some of the 20 series


def test_a_partition_has_one_owner_and_a_broker_needs_a_checkpoint(redis_url, client, key, model_path, tmp_path):
    first = RedisStreamSource(source_url(redis_url, key), consumer="a", part="0/2")
    assert first.streams == [f"{key}:0", f"{key}:2"]
    with pytest.raises(ValueError, match="held by consumer 'a'"):
        RedisStreamSource(source_url(redis_url, key), consumer="b", part="0/2")
    RedisStreamSource(source_url(redis_url, key), consumer="b", part="1/2").close()  # the other half is free
    again = RedisStreamSource(source_url(redis_url, key), consumer="a", part="0/2")  # a restart: its own lease
    with pytest.raises(ValueError, match="owns none"):
        RedisStreamSource(with_query(redis_url, stream=key, partitions=2), part="2/3")
    with pytest.raises(StreamSetupError, match="needs a checkpoint"):
        run_stream(str(model_path), again, id_col="sid")
    for s in (first, again):
        s._started = True  # as after reading: close releases the lease
        s.close()
    RedisStreamSource(source_url(redis_url, key), consumer="b", part="0/2").close()  # released: free again


def test_entries_as_json_or_fields_and_bad_entries(redis_url, client, key, model_path, records, expected, tmp_path):
    first = [r for r in records if r["sid"] == "s03"][:3]
    client.xadd(key, {"data": json.dumps(first[0])})
    client.xadd(key, {k: str(v) for k, v in first[1].items()})  # plain fields, as text
    client.xadd(key, {"data": "{not json"})
    client.xadd(key, {"data": json.dumps(first[2])})
    lines = []
    src = RedisStreamSource(with_query(redis_url, stream=key, idle=0.3))
    result = run_stream(str(model_path), src, lines.append, checkpoint=tmp_path / "ckpt", id_col="sid",
                        on_bad_record="skip")
    assert result.status == "idle" and result.counters.applied == 3 and result.counters.bad == 1
    assert_same_output(dedup(json.loads(json.dumps(line)) for line in lines),
                       {(r["sid"], r["time"]): expected[(r["sid"], r["time"])] for r in first})
    assert client.xpending(key, "tsessm")["pending"] == 0 and src.acked == 4  # the bad one too (skipped)


def test_a_crash_leaves_entries_pending_and_the_restart_applies_them_once(
        redis_url, client, key, model_path, records, expected, tmp_path):
    """In process: the sink fails after 37 lines (a crash between checkpoints); nothing after the
    last checkpoint was acknowledged, the restart re-reads it and the output matches."""
    assert publish(with_query(redis_url, stream=key, partitions=P), records, id_col="sid") == len(records)
    mine = [r for r in records if partition_of(r["sid"], P) % 2 == 0]

    class Crash(Exception):
        pass

    lines = []

    def failing(line):
        if len(lines) == 37:
            raise Crash
        lines.append(json.loads(json.dumps(line)))

    url = source_url(redis_url, key, idle=0.5)
    with pytest.raises(Crash):
        run_stream(str(model_path), RedisStreamSource(url, part="0/2"), failing,
                   checkpoint=tmp_path / "ckpt", checkpoint_every=10, id_col="sid")
    done = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())["counters"]["applied"]
    assert done == 30
    read = sum(min(50, client.xlen(stream_key(key, q, P))) for q in (0, 2))  # one batch: 50 per stream
    assert pending(client, key) == read - 30  # less what the checkpoint included (acked)
    again = RedisStreamSource(url, part="0/2")
    result = run_stream(str(model_path), again, lambda line: lines.append(json.loads(json.dumps(line))),
                        checkpoint=tmp_path / "ckpt", checkpoint_every=10, id_col="sid")
    assert result.status == "idle" and result.resumed
    assert again.redelivered == read - 30  # the pending entries first: 7 applied again, the rest never applied
    assert result.counters.applied == len(mine) and result.run_counters.duplicates == 0
    assert len(lines) == len(mine) + 7  # the lines after the checkpoint, twice
    assert_same_output(dedup(lines), {k: v for k, v in expected.items() if partition_of(k[0], P) % 2 == 0})
    for q in (0, 2):
        assert client.xpending(stream_key(key, q, P), "g")["pending"] == 0
    for q in (1, 3):  # the other runner's partitions: untouched
        assert client.xlen(stream_key(key, q, P)) > 0 and client.xinfo_groups(stream_key(key, q, P)) == []


def test_sink_writes_entries_flushed_by_sync(redis_url, client, key):
    sink = RedisStreamSink(with_query(redis_url, stream=key), flush_every=3)
    sink.write({"id": "a", "time": "2024-01-01T00:00:00", "forecast": {"y": [1.0]}})
    sink.write({"id": None, "time": "2024-01-01T01:00:00", "forecast": {"y": [2.0]}})
    assert client.xlen(key) == 0  # pipelined until sync (the runner syncs before each checkpoint)
    sink.sync()
    entries = client.xrange(key)
    assert [(f[b"id"], f[b"time"]) for _, f in entries] == [(b"a", b"2024-01-01T00:00:00"), (b"", b"2024-01-01T01:00:00")]
    assert json.loads(entries[0][1][b"data"]) == {"id": "a", "time": "2024-01-01T00:00:00", "forecast": {"y": [1.0]}}
    sink.close()


# ----- two runners, one killed with SIGKILL and restarted -------------------------------------
def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _manifest(directory):
    try:
        return json.loads((Path(directory) / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None


def test_two_runners_one_killed_and_restarted_equal_one_uninterrupted_run(
        redis_url, client, key, model_path, records, expected, tmp_path):
    out_key = f"{key}-forecasts"
    publish(with_query(redis_url, stream=key, partitions=P), records, id_col="sid")
    # the URL carries the stream and its partitions; the flags give each runner its share
    source = with_query(redis_url, stream=key, partitions=P, batch=50)

    def cmd(i):
        return [sys.executable, "-m", "tsessm.stream", "--model", str(model_path), "--id-col", "sid",
                "--input", source, "--group", "g", "--partition", f"{i}/2", "--idle-timeout", "3",
                "--output", with_query(redis_url, stream=out_key),
                "--checkpoint", str(tmp_path / f"ckpt{i}"), "--checkpoint-every", "10"]

    logs = [open(tmp_path / f"runner{i}.log", "w") for i in range(3)]
    a = subprocess.Popen(cmd(0), env=_env(TSESSM_STREAM_TEST_DELAY="0.02"), stderr=logs[0])
    b = subprocess.Popen(cmd(1), env=_env(), stderr=logs[1])
    try:
        deadline = time.monotonic() + 120
        while True:
            state = _manifest(tmp_path / "ckpt0")
            if state is not None and state["counters"]["applied"] >= 60:
                break
            assert a.poll() is None, (tmp_path / "runner0.log").read_text()
            assert time.monotonic() < deadline, "runner 0 made no progress"
            time.sleep(0.02)
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    assert a.returncode == -signal.SIGKILL
    mine = [r for r in records if partition_of(r["sid"], P) % 2 == 0]
    applied_at_kill = _manifest(tmp_path / "ckpt0")["counters"]["applied"]
    assert 60 <= applied_at_kill < len(mine)
    stranded = pending(client, key, consumer=f"{socket.gethostname()}-runner-0")
    assert stranded > 0  # read by the killed runner and never acknowledged

    restart = subprocess.run(cmd(0), env=_env(), stderr=logs[2], timeout=240)
    assert b.wait(timeout=240) == 0, (tmp_path / "runner1.log").read_text()
    for log in logs:
        log.close()
    assert restart.returncode == 0, (tmp_path / "runner2.log").read_text()
    said = (tmp_path / "runner2.log").read_text()
    assert "idle timeout (resumed)" in said
    # the restart applied exactly what the checkpoint lacked (the stranded entries among them)
    assert re.search(r"this run (\d+) applied", said).group(1) == str(len(mine) - applied_at_kill)

    # Nothing lost, nothing doubled: every record applied once, by the one runner owning its series.
    final = [_manifest(tmp_path / f"ckpt{i}") for i in range(2)]
    assert final[0]["counters"]["applied"] == len(mine)
    assert final[0]["counters"]["applied"] + final[1]["counters"]["applied"] == len(records)
    served = [{s["id"] for s in m["series"]} for m in final]
    assert served[0].isdisjoint(served[1]) and served[0] | served[1] == set(IDS)
    for i in range(2):
        assert all(partition_of(sid, P) % 2 == i for sid in served[i])
    assert pending(client, key) == 0  # every entry acknowledged, the re-delivered ones too
    lines = output_lines(client, out_key)
    # lines written after runner 0's last checkpoint may come twice (the sink sends them at each
    # checkpoint, so here those of the killed run were mostly never sent)
    assert len(lines) >= len(records)
    assert_same_output(dedup(lines), expected)


def test_cli_broker_flags_need_a_broker_input(model_path, tmp_path, capsys):
    from tsessm.cli import main

    base = ["stream", "--model", str(model_path), "--checkpoint", str(tmp_path / "c")]
    assert main([*base, "--input", "-", "--partition", "0/2"]) == 2
    assert "--partition needs a broker --input" in capsys.readouterr().err
    assert main([*base, "--input", "redis://127.0.0.1:1/0?stream=x", "--partition", "2/2"]) == 2
    assert "0 <= i < N" in capsys.readouterr().err
    assert main([*base, "--input", "redis://127.0.0.1:1/0", "--idle-timeout", "1"]) == 2
    assert "?stream=KEY" in capsys.readouterr().err
