"""tsessm.tuning: search spaces, pruning, shared and resumed studies, MLflow runs, the CLI.

Every fit is tiny (d_model 8, one layer, 2 steps of 8 windows per epoch, 2 epochs) on a
400-row hourly CSV; only the lookback (8 or 16), lr, dropout and the eSSM's discrete choices vary.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tsessm import jobs, tuning
from tsessm.tune_cli import add_tune_parser, run_tune_command
from tsessm.tuning import TuneResult, make_pruner, search_space, tune

ROOT = Path(__file__).resolve().parents[1]
TINY_FIXED = {"d_model": 8, "d_state": 8, "n_layers": 1, "steps_per_epoch": 2, "batch_size": 8, "device": "cpu"}
TINY_SPACE = {"lookback": [8, 16]}
LSTM_FIXED = {k: v for k, v in TINY_FIXED.items() if k != "d_state"}
TINY = {"horizon": 4, "epochs": 2, "track": False, "retrain_best": False, "fixed_params": TINY_FIXED,
        "space": TINY_SPACE}

@pytest.fixture(autouse=True)
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


@pytest.fixture
def csv(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    t = np.arange(400)
    frame = pd.DataFrame({
        "date": pd.date_range("2024-01-01", periods=400, freq="h"),
        "load": np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(400),
        "temp": np.cos(2 * np.pi * t / 96),
    })
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _finished(trials) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


# ----- search spaces -----------------------------------------------------------------------
@pytest.mark.parametrize("model", ["essm", "lstm"])
def test_search_space_only_builds_valid_models(model):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        params = search_space(model, trial)
        forecaster = jobs.make_model(model, horizon=4, **params)
        forecaster._check_params()  # builds a throw-away net: every argument is checked
        study.tell(trial, 0.0)
    assert {"lookback", "lr", "dropout", "d_model", "n_layers"} <= set(study.trials[0].params)


def test_search_space_heads_divide_pinned_and_custom_widths():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = search_space("essm", trial, fixed={"d_state": 8}, space={"d_model": [12, 20]})
        assert params["d_state"] == 8 and "d_state" not in trial.params
        assert params["d_model"] % params["n_heads"] == 0 and 8 % params["n_heads"] == 0
        jobs.make_model("essm", horizon=4, **params)._check_params()
        seen.add(params["n_heads"])
        study.tell(trial, 0.0)
    assert seen <= {1, 2, 4} and len(seen) > 1


def test_search_space_fixed_trial_and_rejections():
    params = search_space("lstm", optuna.trial.FixedTrial(
        {"d_model": 32, "n_layers": 2, "lookback": 96, "lr": 1e-3, "dropout": 0.1}))
    assert params == {"d_model": 32, "n_layers": 2, "lookback": 96, "lr": 1e-3, "dropout": 0.1}
    with pytest.raises(ValueError, match="AIC"):
        search_space("arima", optuna.trial.FixedTrial({}))
    with pytest.raises(ValueError, match="no search space"):
        search_space("naive", optuna.trial.FixedTrial({}))
    with pytest.raises(ValueError, match="does not tune"):
        search_space("lstm", optuna.trial.FixedTrial({}), space={"d_state": [8]})
    with pytest.raises(ValueError, match="does not tune"):  # the study sets the epochs itself
        search_space("essm", optuna.trial.FixedTrial({}), space={"epochs": [1, 2]})


def test_search_space_adds_a_parameter_the_model_takes():
    trial = optuna.trial.FixedTrial({"d_model": 32, "n_layers": 1, "d_state": 16, "n_heads": 2,
                                     "discretization": "zoh", "init": "legs", "lookback": 48, "lr": 1e-3,
                                     "dropout": 0.0, "dt_min": 0.003, "linear_skip": 48})
    params = search_space("essm", trial, space={"dt_min": [0.001, 0.003], "linear_skip": [0, 48]})
    assert params["dt_min"] == 0.003 and params["linear_skip"] == 48
    pinned = search_space("essm", trial, fixed={"dt_min": 0.01}, space={"dt_min": [0.001, 0.003]})
    assert pinned["dt_min"] == 0.01  # a pinned value wins over the choices
    with pytest.raises(ValueError, match="dt_min"):  # the LSTM has no timescales
        search_space("lstm", trial, space={"dt_min": [0.001]})


def test_pruner_names():
    assert isinstance(make_pruner("median", 10), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 10), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("none", 10), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="pruner"):
        make_pruner("sometimes", 10)


# ----- tuning ------------------------------------------------------------------------------
def test_pruned_after_the_first_epoch_report(csv, tmp_path):
    storage = _storage(tmp_path)
    result = tune(csv, **{**TINY, "retrain_best": True}, n_trials=3, storage=storage, study_name="p",
                  pruner=optuna.pruners.ThresholdPruner(upper=-1.0))
    trials = _trials(storage, "p")
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3
    assert all(list(t.intermediate_values) == [1] for t in trials)  # stopped at epoch 1 of 2
    assert (result.n_complete, result.n_pruned) == (0, 3)
    assert result.best_params is None and result.best_model is None and result.test_metrics is None
    assert any("no trial completed" in note for note in result.notes)


WORKER = """
import json, sys
from tsessm.tuning import tune
ran = []
result = tune(sys.argv[1], **json.loads(sys.argv[2]), callbacks=[lambda study, trial: ran.append(trial.number)])
print(json.dumps({"ran": ran, "finished": result.n_complete + result.n_pruned}))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    return env


def test_two_workers_share_one_study_and_finish_n_in_total(csv, tmp_path):
    storage, n = _storage(tmp_path), 4
    env = _env()
    procs = []
    try:
        for seed in (0, 1):  # each worker its own sampler seed
            kwargs = {**TINY, "n_trials": n, "storage": storage, "study_name": "shared", "seed": seed}
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, csv, json.dumps(kwargs)], cwd=tmp_path,
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    trials = _trials(storage, "shared")
    finished = _finished(trials)
    assert len(finished) == n
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    ran = [number for r in reports for number in r["ran"]]
    assert len(ran) == len(set(ran)) and set(ran) == {t.number for t in finished}
    # Other trials can only be a worker's surplus claim (it lost the race for the last slot).
    assert all(t.state == TrialState.FAIL and "surplus" in t.user_attrs for t in trials if t not in finished)
    assert [r["finished"] for r in reports] == [n, n]  # each worker waits until the study is done


def test_a_study_resumes_up_to_n_trials_in_total(csv, tmp_path):
    storage = _storage(tmp_path)
    first = tune(csv, **TINY, n_trials=2, storage=storage, study_name="r")
    assert first.n_complete + first.n_pruned == 2
    second = tune(csv, **TINY, n_trials=4, storage=storage, study_name="r")
    assert second.n_complete + second.n_pruned == 4
    again = tune(csv, **TINY, n_trials=4, storage=storage, study_name="r")  # full already: runs none
    tune(csv, **TINY, n_trials=9, storage=storage, study_name="r", timeout=0)  # timed out: starts none
    trials = _trials(storage, "r")
    assert [t.number for t in trials] == [0, 1, 2, 3] and len(_finished(trials)) == 4
    assert again.best_value == min(t.value for t in trials if t.state == TrialState.COMPLETE)
    with pytest.raises(ValueError, match="tunes 'essm', not 'lstm'"):
        tune(csv, **{**TINY, "fixed_params": LSTM_FIXED}, model="lstm", n_trials=1, storage=storage,
             study_name="r")


def test_a_trial_left_running_by_a_killed_worker_is_failed_and_redone(csv, tmp_path, monkeypatch):
    storage, n = _storage(tmp_path), 2
    slow = {**TINY, "fixed_params": {**TINY_FIXED, "steps_per_epoch": 100_000}, "n_trials": n,
            "storage": storage, "study_name": "crash"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, csv, json.dumps(slow)], cwd=tmp_path, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                if any(t.state == TrialState.RUNNING for t in _trials(storage, "crash")):
                    break
            except Exception:  # the database or the study is not created yet
                pass
            time.sleep(0.5)
        else:
            pytest.fail("the worker never started a trial")
        time.sleep(1.0)  # past its first heartbeat
    finally:
        worker.kill()
        worker.wait(timeout=10)
    monkeypatch.setattr(tuning.study, "GRACE_S", 2)  # a heartbeat older than 2 s means a dead worker
    result = tune(csv, **TINY, n_trials=n, storage=storage, study_name="crash", timeout=60)
    trials = _trials(storage, "crash")
    assert trials[0].state == TrialState.FAIL and "surplus" not in trials[0].user_attrs
    assert len(_finished(trials)) == n == result.n_complete + result.n_pruned


def test_retrain_best_gives_test_metrics_and_a_fitted_model(csv, tmp_path):
    result = tune(csv, **{**TINY, "retrain_best": True, "fixed_params": LSTM_FIXED}, model="lstm", n_trials=2,
                  storage=_storage(tmp_path), target="load")
    assert isinstance(result, TuneResult)
    assert result.study_name == "lstm-series-h4" and result.n_complete == 2
    assert set(result.best_params) == {"lookback", "lr", "dropout"}  # the rest is pinned
    assert math.isfinite(result.best_value)
    assert set(result.test_metrics) == {"mse", "mae"} and all(map(math.isfinite, result.test_metrics.values()))
    model = result.best_model
    assert model.n_seen_ == 320  # train + validation rows (70% + 10% of 400)
    assert model.lookback == result.model_params["lookback"] and model.validation_fraction == 0.0
    assert model.predict().shape == (4, 1)


def test_trials_are_nested_mlflow_runs(csv, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    try:
        result = tune(csv, **{**TINY, "track": True, "retrain_best": True}, n_trials=2,
                      storage=_storage(tmp_path), study_name="tracked", experiment="tune-test")
        runs = mlflow.search_runs(experiment_names=["tune-test"], output_format="list")
        _check_tracked_runs(mlflow, runs, result)
    finally:
        mlflow.set_tracking_uri(None)  # forget the temporary store
    with pytest.raises(ValueError, match="register_as needs tracking"):
        tune(csv, **TINY, n_trials=1, register_as="m")


def _check_tracked_runs(mlflow, runs, result: TuneResult) -> None:
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert [p.info.run_id for p in parents] == [result.run_id] and len(children) == 2
    client = mlflow.MlflowClient()
    for child in children:
        assert {"lr", "dropout", "lookback", "trial_number", "d_model"} <= set(child.data.params)
        assert child.data.tags["optuna.study_name"] == "tracked"
        assert child.data.tags["optuna.state"] == "COMPLETE"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")] == [1, 2]
    assert sorted(c.data.params["trial_number"] for c in children) == ["0", "1"]
    parent = parents[0].data
    assert parent.params["study_name"] == "tracked" and "best.lr" in parent.params
    assert {"best_val_loss", "test_windowed_mse", "test_windowed_mae"} <= set(parent.metrics)
    assert [a.path for a in client.list_artifacts(result.run_id)] == ["best_model.tsm"]
    assert result.model_uri == f"runs:/{result.run_id}/best_model.tsm"


# ----- command line ------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsessm")
    add_tune_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _cli_args(csv: str, tmp_path: Path, *extra: str) -> list[str]:
    pins = [f"--set={k}={v}" for k, v in TINY_FIXED.items()]
    return ["tune", csv, "--n-trials", "2", "--storage", _storage(tmp_path), "--horizon", "4", "--epochs", "2",
            "--columns", "load,temp", "--no-track", "--space", "lookback=8,16", *pins, *extra]


def test_cli_tunes_and_prints_the_best_params(csv, tmp_path, capsys):
    args = _parser().parse_args(_cli_args(csv, tmp_path, "--pruner", "hyperband", "--study-name", "cli"))
    assert run_tune_command(args) == 0
    out = capsys.readouterr().out
    assert "study cli" in out and "best validation loss" in out
    assert "lookback =" in out and "lr =" in out
    assert "test (windowed, scaled): mse" in out
    assert len(_finished(_trials(_storage(tmp_path), "cli"))) == 2


@pytest.mark.parametrize("extra, message", [
    (["--model", "arima"], "AIC"),
    (["--set", "nonsense"], "NAME=VALUE"),
    (["--set", "wingspan=3"], "no parameter"),
])
def test_cli_errors_are_one_line(csv, tmp_path, capsys, extra, message):
    assert run_tune_command(_parser().parse_args(_cli_args(csv, tmp_path, *extra))) == 1
    err = capsys.readouterr().err
    assert err.startswith("tsessm tune: error:") and message in err and err.count("\n") == 1


def test_tuned_best_model_is_registered_and_answers_over_http(csv, tmp_path, monkeypatch):
    """The issue's end to end: a short tuning run, its best model registered, served, queried."""
    import mlflow
    from servers import free_port, post_json, server_env, stop, wait_for

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        result = tune(csv, **{**TINY, "track": True, "retrain_best": True}, n_trials=2,
                      storage=_storage(tmp_path), study_name="served", register_as="tuned")
    finally:
        mlflow.set_tracking_uri(None)
    expected = result.best_model.predict()
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tuned/1", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
            env=server_env(MLFLOW_TRACKING_URI=uri), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", proc, log)
        answer = post_json(f"http://127.0.0.1:{port}/invocations",
                       {"dataframe_split": {"columns": ["time", *expected.columns], "data": []}})
        got = pd.DataFrame(answer["predictions"])
        np.testing.assert_allclose(got[expected.columns[0]].to_numpy(), expected.iloc[:, 0].to_numpy(), rtol=1e-6)
    finally:
        stop(proc)
