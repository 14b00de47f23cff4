"""`tsessm stream`: forecasts, checkpoints and restarts, kill -9, signals, gaps, bad records, CLI."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsessm.forecasters.base import BaseForecaster
from tsessm.stream import SingleSeriesAdapter, add_stream_parser, run_stream, run_stream_command
from tsessm.stream.cli import main
from tsessm.stream.sources import open_source
from stream_data import N_FIT, fitted_model_file, hourly

ROOT = Path(__file__).resolve().parents[1]
N_NEW = 120


@pytest.fixture(scope="module")
def data():
    return hourly(N_NEW)


@pytest.fixture(scope="module")
def model_path(data, tmp_path_factory):
    return fitted_model_file(data, tmp_path_factory.mktemp("stream"))


@pytest.fixture(scope="module")
def new(data):
    return data.iloc[N_FIT:]


def records(frame):
    return [{"time": ts.isoformat(), **{c: float(v) for c, v in row.items()}} for ts, row in frame.iterrows()]


def write_csv(frame, path):
    frame.reset_index().to_csv(path, index=False, float_format="%.17g")
    return path


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def dedup(lines):
    """Deduplicate by (id, time); a repeated line must be identical to the first one."""
    seen = {}
    for line in lines:
        key = (line["id"], line["time"])
        if key in seen:
            assert seen[key] == line, f"two different lines for {key}"
        else:
            seen[key] = line
    return list(seen.values())


def manifest(directory):
    return json.loads((Path(directory) / "checkpoint.json").read_text())


@pytest.fixture(scope="module")
def expected(model_path, new):
    """The runner's uninterrupted output over the new rows (through JSON, as a file holds it)."""
    result = run_stream(str(model_path), records(new))
    assert result.status == "end" and result.counters.applied == N_NEW
    return [json.loads(json.dumps(line)) for line in result.lines]


def env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def wait_for_lines(path, n, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(path).exists() and Path(path).read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "runner exited early"
        time.sleep(0.05)
    raise AssertionError(f"no {n} output lines after {timeout} s")


# ----- forecasts ------------------------------------------------------------------------------
def test_forecasts_equal_update_then_predict(model_path, new, expected, tmp_path):
    model = BaseForecaster.load(model_path)
    assert len(expected) == N_NEW
    for (ts, _), line in zip(new.iterrows(), expected):
        model.update(new.loc[[ts]])
        forecast = model.predict()
        assert list(line) == ["id", "time", "forecast"]
        assert line["id"] is None and line["time"] == ts.isoformat()
        assert list(line["forecast"]) == ["load", "temp"]
        for col in ("load", "temp"):
            np.testing.assert_allclose(line["forecast"][col], forecast[col].to_numpy(), atol=1e-5, rtol=0)
    # The same stream from a CSV file and from a JSON-lines file, through a file sink.
    csv_out, jsonl_in = tmp_path / "a.jsonl", tmp_path / "in.jsonl"
    run_stream(str(model_path), str(write_csv(new, tmp_path / "new.csv")), str(csv_out))
    jsonl_in.write_text("".join(json.dumps(r) + "\n" for r in records(new)))
    collected = []
    run_stream(str(model_path), str(jsonl_in), collected.append)
    assert read_lines(csv_out) == expected
    assert [json.loads(json.dumps(line)) for line in collected] == expected


def test_emit_every_and_series_id(model_path, new, expected):
    rows = [{"sensor": "a", **r} for r in records(new)]
    rows.insert(10, {**rows[10], "sensor": "b"})  # another series: a single-series model refuses it
    log = []
    result = run_stream(str(model_path), rows, id_col="sensor", emit_every=5, on_bad_record="skip", log=log.append)
    assert result.counters.bad == 1 and result.counters.applied == N_NEW
    assert len(log) == 1 and "line 11" in log[0] and "'b'" in log[0]
    assert [line["id"] for line in result.lines] == ["a"] * (N_NEW // 5)
    assert [{**line, "id": None} for line in result.lines] == expected[4::5]


# ----- checkpoints and restarts ---------------------------------------------------------------
def test_restart_resumes_at_the_checkpoint_position(model_path, new, expected, tmp_path):
    half, full = write_csv(new.iloc[:60], tmp_path / "half.csv"), write_csv(new, tmp_path / "full.csv")
    out, ckpt = tmp_path / "out.jsonl", tmp_path / "ckpt"
    first = run_stream(str(model_path), str(half), str(out), checkpoint=ckpt, checkpoint_every=7)
    assert first.status == "end" and not first.resumed
    assert manifest(ckpt)["position"]["line"] == 61 and manifest(ckpt)["counters"]["applied"] == 60
    # Another file: its first 60 rows are replays, recognised by their timestamps (not by line).
    second = run_stream(str(model_path), str(full), str(out), checkpoint=ckpt, checkpoint_every=7)
    assert second.resumed and second.status == "end"
    lines = read_lines(out)
    assert len(lines) == N_NEW and dedup(lines) == expected  # nothing re-emitted after a clean stop
    c = second.counters
    assert (c.applied, c.duplicates, c.bad, c.records, c.emitted) == (N_NEW, 60, 0, N_NEW + 60, N_NEW)
    assert second.adapter.model.n_seen_ == N_FIT + N_NEW  # every observation applied exactly once
    saved = BaseForecaster.load(ckpt / manifest(ckpt)["model_file"])
    assert saved.n_seen_ == N_FIT + N_NEW and saved.last_index_[0] == new.index[-1]
    assert sorted(p.name for p in ckpt.glob("model-*.tsm")) == [manifest(ckpt)["model_file"]]
    # A stream (not positional) replayed from the start: old timestamps are skipped and counted.
    third = run_stream(str(model_path), records(new), checkpoint=ckpt)
    assert third.lines == [] and third.counters.duplicates == 60 + N_NEW and third.counters.applied == N_NEW
    assert third.adapter.model.n_seen_ == N_FIT + N_NEW


def test_the_same_file_grown_resumes_by_line_and_a_new_file_is_read_whole(model_path, new, expected, tmp_path):
    grown, out, ckpt = tmp_path / "live.csv", tmp_path / "out.jsonl", tmp_path / "ckpt"
    write_csv(new.iloc[:60], grown)
    run_stream(str(model_path), str(grown), str(out), checkpoint=ckpt)
    write_csv(new, grown)  # the same file, grown: resume after line 61 without re-reading
    again = run_stream(str(model_path), str(grown), str(out), checkpoint=ckpt)
    assert again.counters.duplicates == 0 and again.counters.applied == N_NEW
    assert dedup(read_lines(out)) == expected
    # A new file holding only the next rows is read from its first line, none skipped.
    first, second = write_csv(new.iloc[:60], tmp_path / "d1.csv"), write_csv(new.iloc[60:], tmp_path / "d2.csv")
    out2, ckpt2 = tmp_path / "out2.jsonl", tmp_path / "ckpt2"
    run_stream(str(model_path), str(first), str(out2), checkpoint=ckpt2)
    later = run_stream(str(model_path), str(second), str(out2), checkpoint=ckpt2)
    assert later.counters.applied == N_NEW and later.counters.duplicates == 0
    assert read_lines(out2) == expected  # every row once: nothing skipped, nothing repeated


def test_replayed_timestamps_are_skipped_and_counted(model_path, new, expected):
    rows = records(new)
    replayed = rows[:50] + rows[30:40] + [rows[10]] + rows[50:]
    result = run_stream(str(model_path), replayed)
    assert result.counters.duplicates == 11 and result.counters.applied == N_NEW
    assert [json.loads(json.dumps(line)) for line in result.lines] == expected
    # Rows at or before the end of the training data are replays too.
    assert run_stream(str(model_path), [{"time": "2024-01-02T00:00:00", "load": 1, "temp": 2}]).counters.duplicates == 1


def test_kill_9_mid_stream_then_restart(model_path, new, expected, tmp_path):
    csv_path, out, ckpt = write_csv(new, tmp_path / "new.csv"), tmp_path / "out.jsonl", tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "tsessm.stream", "--model", str(model_path), "--input", str(csv_path),
           "--output", str(out), "--checkpoint", str(ckpt), "--checkpoint-every", "10"]
    proc = subprocess.Popen(cmd, env=env(TSESSM_STREAM_TEST_DELAY="0.03"), stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(out, 45, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = out.read_text().count("\n")  # complete lines; a torn last one is cut on restart
    assert 45 <= killed_at < N_NEW
    done_before = manifest(ckpt)["counters"]["applied"]
    assert 40 <= done_before <= killed_at and done_before % 10 == 0
    with open(out, "a") as f:  # as if killed while writing a line: the restart cuts it off
        f.write('{"id": null, "time": "2024-01-1')
    restart = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    lines = read_lines(out)
    assert len(lines) == N_NEW + killed_at - done_before  # the lines after the checkpoint, twice
    assert dedup(lines) == expected
    assert {line["time"] for line in lines} == {ts.isoformat() for ts in new.index}
    final = manifest(ckpt)
    assert final["counters"]["applied"] == N_NEW and final["counters"]["duplicates"] == 0
    assert final["position"]["line"] == N_NEW + 1


def test_sigterm_on_stdin_checkpoints_and_a_restart_continues(model_path, new, expected, tmp_path):
    rows, ckpt = [json.dumps(r) + "\n" for r in records(new)], tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "tsessm.stream", "--model", str(model_path), "--input", "-",
           "--output", str(tmp_path / "out.jsonl"), "--checkpoint", str(ckpt)]
    proc = subprocess.Popen(cmd, env=env(), stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("".join(rows[:50]))
    proc.stdin.flush()
    wait_for_lines(tmp_path / "out.jsonl", 50, proc)
    time.sleep(0.2)  # now blocked reading stdin
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)  # stdin stays open: the runner stops while blocked reading it
    err = proc.stderr.read()
    proc.stdin.close()
    assert proc.returncode == 0, err
    assert "stopped" in err
    state = manifest(ckpt)
    assert state["counters"]["applied"] == 50 and state["counters"]["emitted"] == 50
    # Restart with the whole stream on stdin: the first 50 are replays, skipped by time.
    restart = subprocess.run(cmd, env=env(), input="".join(rows), capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    lines = read_lines(tmp_path / "out.jsonl")
    assert lines == expected
    state = manifest(ckpt)
    assert (state["counters"]["applied"], state["counters"]["duplicates"]) == (N_NEW, 50)


def test_follow_a_growing_file_until_stopped(model_path, new, expected, tmp_path):
    path = write_csv(new.iloc[:30], tmp_path / "live.csv")
    text = write_csv(new, tmp_path / "all.csv").read_text().splitlines(keepends=True)
    stop = threading.Event()
    out = []

    def writer():
        with open(path, "a") as f:
            for i, line in enumerate(text[31:], start=31):
                if i == 50:  # a line written in two parts is read once complete
                    f.write(line[:7])
                    f.flush()
                    time.sleep(0.15)
                    line = line[7:]
                f.write(line)
                f.flush()
                time.sleep(0.002)
        while len(out) < N_NEW:
            time.sleep(0.01)
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    result = run_stream(str(model_path), open_source(str(path), follow=True, poll=0.02), out.append,
                        checkpoint=tmp_path / "ckpt", stop_event=stop)
    thread.join()
    assert result.status == "stopped" and result.exit_code == 0
    assert [json.loads(json.dumps(line)) for line in out] == expected
    assert manifest(tmp_path / "ckpt")["position"]["line"] == N_NEW + 1
    idle = run_stream(str(model_path), open_source(str(path), follow=True, idle_timeout=0.2, poll=0.02),
                      checkpoint=tmp_path / "ckpt")
    assert idle.status == "idle" and idle.resumed and idle.lines == []


# ----- gaps -----------------------------------------------------------------------------------
def test_gap_error_stops_naming_the_line(model_path, new, tmp_path, capsys):
    holed = new.drop(new.index[40:43])
    path, ckpt = write_csv(holed, tmp_path / "holed.csv"), tmp_path / "ckpt"
    code = main(["--model", str(model_path), "--input", str(path), "--output", str(tmp_path / "o.jsonl"),
                 "--checkpoint", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "line 42" in err and "gap" in err and "--gap ffill" in err
    assert manifest(ckpt)["position"]["line"] == 41  # checkpointed up to the last good line
    assert len(read_lines(tmp_path / "o.jsonl")) == 40


def test_gap_ffill_applies_flagged_forward_filled_rows(model_path, new, expected):
    holed = new.drop(new.index[40:43])
    result = run_stream(str(model_path), records(holed), gap="ffill")
    assert result.status == "end" and result.counters.filled == 3 and result.counters.applied == N_NEW - 3
    lines = result.lines
    assert [line["time"] for line in lines] == [ts.isoformat() for ts in new.index]
    assert [line.get("filled", False) for line in lines] == [40 <= i < 43 for i in range(N_NEW)]
    assert all("filled" not in line for i, line in enumerate(lines) if not 40 <= i < 43)
    filled = holed.reindex(new.index).ffill()
    model = BaseForecaster.load(model_path)
    for (ts, _), line in zip(filled.iterrows(), lines):
        model.update(filled.loc[[ts]])
        forecast = model.predict()
        for col in ("load", "temp"):
            np.testing.assert_allclose(line["forecast"][col], forecast[col].to_numpy(), atol=1e-5, rtol=0)
    assert lines[:40] == expected[:40]


# ----- bad records ----------------------------------------------------------------------------
def _with_bad_lines(new):
    good = [json.dumps(r) for r in records(new)]
    row = records(new)[5]
    bad = {
        "bad JSON": '{"time": "2024-01-13T17:00:00", "load": 1.0',
        "missing field 'temp'": json.dumps({"time": row["time"], "load": 1.0}),
        "not a number": json.dumps({**row, "load": "abc"}),
        "not a finite number": '{"time": "%s", "load": NaN, "temp": 0.5}' % row["time"],
        "not an ISO 8601 timestamp": json.dumps({**row, "time": "yesterday"}),
        "expected an object": "[1, 2]",
    }
    lines = good[:5] + list(bad.values()) + good[5:]
    return lines, {reason: 6 + i for i, reason in enumerate(bad)}  # reason -> its line number


def test_bad_records_are_reported_and_leave_the_state_alone(model_path, new, expected, tmp_path):
    lines, where = _with_bad_lines(new)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    log = []
    result = run_stream(str(model_path), str(path), on_bad_record="skip", log=log.append)
    assert result.status == "end" and result.counters.bad == len(where) and result.counters.applied == N_NEW
    assert len(log) == len(where)
    for message, (reason, line) in zip(log, where.items()):
        assert message.startswith(f"line {line}: ") and reason in message, message
    assert [json.loads(json.dumps(line)) for line in result.lines] == expected
    # CSV: a short row, an empty field, inf
    csv_lines = write_csv(new, tmp_path / "new.csv").read_text().splitlines()
    csv_lines[3:3] = ["2024-01-13T14:00:00,1.0", "2024-01-13T14:00:00,,0.3", "2024-01-13T14:00:00,inf,0.3"]
    (tmp_path / "bad.csv").write_text("\n".join(csv_lines) + "\n")
    log.clear()
    result = run_stream(str(model_path), str(tmp_path / "bad.csv"), on_bad_record="skip", log=log.append)
    assert [m.split(":")[0] for m in log] == ["line 4", "line 5", "line 6"]
    assert [json.loads(json.dumps(line)) for line in result.lines] == expected


def test_bad_record_error_exits_1_naming_the_line(model_path, new, tmp_path, capsys):
    lines, where = _with_bad_lines(new)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code = main(["--model", str(model_path), "--input", str(path), "--output", str(tmp_path / "o.jsonl"),
                 "--checkpoint", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "line 6: bad JSON" in err and "Traceback" not in err
    assert manifest(tmp_path / "ckpt")["counters"]["applied"] == 5


# ----- CLI ------------------------------------------------------------------------------------
def test_cli_bad_arguments_exit_2_and_help_has_an_example(model_path, new, tmp_path, capsys):
    source = write_csv(new.iloc[:3], tmp_path / "in.csv")
    base = ["--model", str(model_path), "--input", str(source), "--checkpoint", str(tmp_path / "c")]
    for argv in ([], ["--model", str(model_path)], [*base, "--gap", "zero"], [*base, "--checkpoint-every", "0"],
                 [*base, "--on-bad-record", "ignore"], [*base, "--emit-every", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
    capsys.readouterr()
    missing = ["--model", str(tmp_path / "nope.tsm"), "--input", str(source), "--checkpoint", str(tmp_path / "c")]
    assert main(missing) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.tsm" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.json").write_text("{not json")
    assert main([*base[:4], "--checkpoint", str(broken)]) == 2
    assert "unreadable checkpoint" in capsys.readouterr().err
    assert main([*base[:2], "--input", str(tmp_path / "none.csv"), "--checkpoint", str(tmp_path / "c")]) == 2
    assert "none.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    helped = capsys.readouterr().out
    assert "example" in helped and "| tsessm stream --model model.tsm --input -" in helped
    # The lead's wiring: `tsessm stream ...` through a sub-command parser.
    import argparse

    parser = argparse.ArgumentParser(prog="tsessm")
    add_stream_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["stream", *missing])
    assert args.command == "stream" and run_stream_command(args) == 2


def test_adapter_protocol(model_path, new):
    adapter = SingleSeriesAdapter(BaseForecaster.load(model_path))
    assert adapter.columns == ["load", "temp"] and adapter.targets == ["load", "temp"]
    assert adapter.last_time(None) == new.index[0] - pd.Timedelta("1h")
    adapter.apply(None, new.index[0], {"temp": float(new.temp.iloc[0]), "load": float(new.load.iloc[0])})
    assert adapter.last_time(None) == new.index[0]
    forecast = adapter.forecast(None)
    assert list(forecast) == ["load", "temp"] and all(len(v) == 4 for v in forecast.values())
    # the runner accepts an adapter as well as a model
    assert run_stream(adapter, records(new.iloc[1:3])).counters.applied == 2


def test_a_resumed_run_reports_its_own_counts(model_path, new, tmp_path, capsys):
    source = write_csv(new.iloc[:10], tmp_path / "new.csv")
    argv = ["--model", str(model_path), "--input", str(source), "--output", str(tmp_path / "out.jsonl"),
            "--checkpoint", str(tmp_path / "ck")]
    assert main(argv) == 0
    first = capsys.readouterr().err
    assert "this run 10 applied" in first and "10 lines written" in first
    assert main(argv) == 0  # the same input again: every row is a replay
    again = capsys.readouterr().err
    assert "(resumed)" in again and "this run 0 applied" in again and "0 lines written" in again
    assert "since the checkpoint began: 10 applied, 10 lines written" in again
