"""`tsessm.tracking` against a real `mlflow server` (loopback, proxied artifacts, sqlite backend)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

import tsessm
from servers import free_port, stop, wait_for
from tsessm import registry, tracking

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(tsessm.__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path):
    """`mlflow server` on a free loopback port; yields (uri, root); killed afterwards."""
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root}/srv.db", "--artifacts-destination", str(root / "art")]
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}", root
    finally:
        stop(proc)
        mlflow.set_tracking_uri(None)


def test_start_run_logs_to_a_tracking_server(server, tmp_path, monkeypatch):
    uri, root = server
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a broken server fails fast, not after backoff
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

    index = pd.date_range("2024-01-01", periods=120, freq="h")
    y = pd.DataFrame({"load": np.sin(np.arange(120) / 6)}, index=index)
    model = tsessm.NaiveForecaster(horizon=4).fit(y)
    model.save(client_dir / "naive.tsm")

    with tracking.start_run(True, "srv-test", run_name="server") as tracker:
        tracker.log_params({"horizon": 4, "dataset": "synthetic"})
        tracker.log_history([{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}])
        tracker.log_metrics({"mse": 0.125})
        tracker.log_artifact(client_dir / "naive.tsm")
        tracker.log_dict({"rows": 120}, "summary.json")
        figure, ax = plt.subplots(figsize=(2, 2))
        ax.plot(y["load"].to_numpy())
        tracker.log_figure(figure, "series.png")
        plt.close(figure)
        info = tracker.log_model(model, registered_model_name="srv-model")
        run_id = tracker.run_id

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"horizon": "4", "dataset": "synthetic"}
    assert run.data.metrics["mse"] == 0.125
    assert run.data.tags["version.mlflow"] == mlflow.__version__ and "git_commit" in run.data.tags
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert {"naive.tsm", "summary.json", "series.png"} <= {f.path for f in client.list_artifacts(run_id)}

    experiment = client.get_experiment_by_name("srv-test")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied through the server
    assert info.registered_model_version == 1
    version = client.get_model_version("srv-model", "1")
    assert version.run_id == run_id

    assert registry.get_version("srv-model", "champion") is None
    assert registry.get_version("no-such-model", "champion") is None
    registry.promote("srv-model", 1)
    assert registry.get_version("srv-model", "champion") == 1
    for source in ("models:/srv-model@champion", f"runs:/{run_id}/naive.tsm"):
        loaded = registry.load_forecaster(source)
        pd.testing.assert_frame_equal(loaded.predict(), model.predict())

    # everything went to the server: its artifact folder, nothing written next to the client
    assert any(p.name == "naive.tsm" for p in (root / "art").rglob("*"))
    assert not (client_dir / "mlruns.db").exists() and not (client_dir / "mlartifacts").exists()
