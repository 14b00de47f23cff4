"""Several processes opening one fresh local sqlite store at once all get their runs."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import mlflow
from mlflow.tracking import MlflowClient

# Each worker imports mlflow first, then waits for the go file so that all of them reach the
# fresh store's creation together (the step that raced before the setup lock).
WORKER = """
import os, sys, time
from pathlib import Path
from tsessm.tracking import start_run
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
with start_run(True, "race", run_name=f"worker-{sys.argv[2]}") as tracker:
    tracker.log_metrics({"worker": float(sys.argv[2])})
"""


def test_processes_share_a_fresh_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(go), str(i)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    time.sleep(8)  # let every worker finish importing mlflow
    go.touch()
    outcomes = [(w.wait(timeout=180), w.stderr.read()) for w in workers]
    assert [rc for rc, _ in outcomes] == [0, 0, 0], "\n".join(err[-2000:] for _, err in outcomes)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.data.metrics["worker"] for r in runs) == [0.0, 1.0, 2.0]
    mlflow.set_tracking_uri(None)
