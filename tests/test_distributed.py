"""Data-parallel training: `torchrun` with 2 CPU processes (gloo) trains like one process."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tsessm import BaseForecaster

ARGS = ["--target", "y", "--horizon", "4", "--lookback", "16", "--d-model", "8", "--d-state", "8", "--epochs", "2",
        "--batch-size", "8", "--dropout", "0", "--set", "steps_per_epoch=3", "--set", "verbose=0", "--no-track"]


def test_two_process_training_matches_one_process_with_the_same_global_batch(tmp_path):
    data = tmp_path / "s.csv"
    t = np.arange(400)
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=400, freq="h"),
                  "y": np.sin(t / 8) + 0.01 * t, "x": np.cos(t / 5)}).to_csv(data, index=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    ddp = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tsessm.cli", "train",
                          str(data), *ARGS, "--out", str(tmp_path / "ddp.tsm")],
                         capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "on 2 processes" in ddp.stdout and ddp.stdout.count("trained") == 1  # rank 0 alone reports
    single = subprocess.run([sys.executable, "-m", "tsessm.cli", "train", str(data), *ARGS,
                             "--out", str(tmp_path / "one.tsm")], capture_output=True, text=True, timeout=240,
                            env=env, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    two, one = BaseForecaster.load(tmp_path / "ddp.tsm"), BaseForecaster.load(tmp_path / "one.tsm")
    for a, b in zip(two.history_, one.history_):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-4 * abs(b["train_loss"])
    np.testing.assert_allclose(two.predict().to_numpy(), one.predict().to_numpy(), rtol=1e-4, atol=1e-5)
