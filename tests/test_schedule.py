"""`tsessm schedule`: cron parsing, runs that go on after failures, a clean stop on SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tsessm import registry, schedule

UTC = timezone.utc


def _fires(expr: str, start: datetime, n: int = 3) -> list[datetime]:
    trigger, out, previous, now = schedule.parse_cron(expr, timezone="UTC"), [], None, start
    for _ in range(n):
        previous = trigger.get_next_fire_time(previous, now)
        out.append(previous)
        now = previous + pd.Timedelta(seconds=1)
    return out


def test_cron_expressions_follow_crontab_semantics():
    monday = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
    assert _fires("0 3 * * *", monday) == [datetime(2024, 1, d, 3, tzinfo=UTC) for d in (1, 2, 3)]
    # cron's day 0 (and 7) is Sunday (APScheduler's own numbers start at Monday)
    assert _fires("0 3 * * 0", monday, 2) == [datetime(2024, 1, 7, 3, tzinfo=UTC), datetime(2024, 1, 14, 3, tzinfo=UTC)]
    assert _fires("30 6 * * 7", monday, 1) == [datetime(2024, 1, 7, 6, 30, tzinfo=UTC)]
    assert [d.day for d in _fires("0 0 * * 1-5", monday, 6)] == [1, 2, 3, 4, 5, 8]
    assert [d.day for d in _fires("0 0 * * fri-sun", monday, 3)] == [5, 6, 7]
    assert [d.day for d in _fires("0 0 * * 5-0", monday, 3)] == [5, 6, 7]
    assert _fires("@daily", monday, 2) == [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)]
    # six fields: seconds first
    assert [d.second for d in _fires("*/20 * * * * *", monday)] == [0, 20, 40]
    for bad in ("0 3 * *", "61 * * * *", "0 3 * * 8", "0 3 1 * 1", "1 2 3 4 5 6 7"):
        with pytest.raises(ValueError):
            schedule.parse_cron(bad)


def test_invalid_cron_or_config_exits_2(tmp_path, capsys):
    assert schedule.main(["--cron", "every day", "--config", str(tmp_path / "x.toml")]) == 2
    assert "--cron needs 5 fields" in capsys.readouterr().err
    assert schedule.main(["--cron", "0 3 * * *", "--config", str(tmp_path / "x.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def _config(folder: Path, data: Path, name: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f"""
[data]
path = "{data}"
target = "load"
[model]
name = "naive"
params = {{horizon = 4, season_length = 24}}
[promotion]
holdout = 30
[registry]
name = "{name}"
[lock]
dir = "{folder / 'locks'}"
""")
    return path


class _Scheduler:
    """`python -m tsessm.schedule ...` in a child process; its output collected line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlruns.db",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tsessm.schedule", *args], cwd=tmp_path, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{needle!r} not seen in time:\n{self.text}")
            time.sleep(0.2)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)


def test_failed_runs_do_not_stop_the_schedule_and_sigterm_stops_it(tmp_path):
    config = _config(tmp_path, tmp_path / "missing.csv", "sched-fail")  # every run fails: no data
    sched = _Scheduler(tmp_path, "--cron", "* * * * * *", "--config", str(config))
    try:
        sched.wait_for("run 2 failed", timeout=120)  # run 1 failed, the schedule went on
        assert sched.text.count("retrain sched-fail: failed: data: no such data file") >= 2
        sched.proc.send_signal(signal.SIGTERM)
        assert sched.proc.wait(timeout=60) == 0
        sched._reader.join(timeout=10)
        assert "stopping: SIGTERM" in sched.text and "stopped after" in sched.text
    finally:
        sched.close()


def test_run_now_with_max_runs_runs_the_pipeline_and_exits(tmp_path):
    t = np.arange(120)
    pd.DataFrame({"time": pd.date_range("2024-01-01", periods=120, freq="h"),
                  "load": np.sin(2 * np.pi * t / 24)}).to_csv(tmp_path / "data.csv", index=False)
    config = _config(tmp_path, tmp_path / "data.csv", "sched-ok")
    sched = _Scheduler(tmp_path, "--cron", "0 3 1 1 *", "--config", str(config), "--run-now", "--max-runs", "1")
    try:
        assert sched.proc.wait(timeout=120) == 0, sched.text
        sched._reader.join(timeout=10)
        assert "retrain sched-ok: promoted: version 1 is @champion" in sched.text
        assert "run 1 finished" in sched.text and "--max-runs 1 reached" in sched.text
    finally:
        sched.close()
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        try:
            assert registry.get_version("sched-ok", "champion") == 1
        finally:
            mlflow.set_tracking_uri(None)
