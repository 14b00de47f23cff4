"""`mlflow run mlflow_projects -e train ... --env-manager local` trains and logs into its run."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def test_train_entry_point_runs_and_logs(tmp_path):
    project = tmp_path / "mlflow_projects"
    shutil.copytree(ROOT / "mlflow_projects", project)
    data = tmp_path / "series.csv"
    t = np.arange(300)
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=300, freq="h"), "OT": np.sin(t / 6)}).to_csv(data, index=False)
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(project), "-e", "train", "--env-manager", "local",
         "--experiment-name", "project-test", "-P", f"dataset={data}", "-P", "horizon=4", "-P", "lookback=16",
         "-P", "epochs=1", "-P", f"out={tmp_path / 'm.tsm'}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "m.tsm").is_file()
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("project-test")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 1  # tsessm logged into the run `mlflow run` created
        run = runs[0]
        assert run.data.params["horizon"] == "4" and run.data.params["dataset_name"] == "series.csv"
        assert "fit_seconds" in run.data.metrics and run.info.status == "FINISHED"
        assert any(a.path == "m.tsm" for a in client.list_artifacts(run.info.run_id))
    finally:
        mlflow.set_tracking_uri(None)
