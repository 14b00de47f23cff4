"""Model Registry round trips: log + register + aliases, pyfunc load, load_forecaster, HTTP serving."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

import tsessm
from servers import free_port, post_json, server_env, stop, wait_for
from tsessm import registry, tracking

TARGETS = ["load", "temp"]


def _frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    index = pd.date_range("2024-01-01", periods=n, freq="h", name="time")
    return pd.DataFrame({"load": np.sin(t / 6) + rng.normal(0, 0.1, n),
                         "temp": np.cos(t / 11) + rng.normal(0, 0.1, n)}, index=index)


def _essm() -> tsessm.ESSMForecaster:
    return tsessm.ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1,
                                 steps_per_epoch=2, verbose=0, random_state=0)


def _values(forecast) -> np.ndarray:
    """(steps, targets) from a model's own forecast or from the pyfunc's tidy frame."""
    return np.asarray(forecast[TARGETS], dtype="float64")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store in a temp dir (artifacts under it), two fitted models logged and registered."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlruns.db")
        mp.setenv("TSESSM_CACHE_DIR", str(root / "cache"))  # the wheel each logged model carries
        mp.chdir(root)
        data = _frame()
        train, new = data.iloc[:190], data.iloc[190:195]
        models = {"naive": tsessm.NaiveForecaster(horizon=4).fit(train), "essm": _essm().fit(train)}
        infos = {}
        with tracking.start_run(True, "registry-test", run_name="log") as tracker:
            for key, model in models.items():
                infos[key] = tracker.log_model(model, registered_model_name=f"tsessm-{key}", name=key)
        for key, info in infos.items():
            assert info.registered_model_version == 1
            registry.promote(f"tsessm-{key}", info.registered_model_version)
        yield {"root": root, "models": models, "infos": infos, "new": new}
        mlflow.set_tracking_uri(None)  # forget the temp store (also unsets the env var it set)


@pytest.mark.parametrize("key", ["naive", "essm"])
def test_pyfunc_matches_in_process_and_never_mutates(store, key):
    model, new = store["models"][key], store["new"]
    pyfunc = mlflow.pyfunc.load_model(f"models:/tsessm-{key}@champion")
    updated = copy.deepcopy(model).update(new)

    # no rows = forecast from the logged state
    out = pyfunc.predict(pd.DataFrame())
    assert list(out.columns) == ["time", "step", *TARGETS]
    assert out["step"].tolist() == [1, 2, 3, 4]
    assert out["time"].tolist() == [t.isoformat() for t in model.predict().index]
    np.testing.assert_allclose(_values(out), _values(model.predict()), rtol=0, atol=1e-9)

    # new rows (time column or DatetimeIndex) are absorbed by a copy, then it forecasts
    rows = new.reset_index()
    for _ in range(2):  # twice: the served model is not advanced by a request
        out = pyfunc.predict(rows)
        assert out["time"].tolist() == [t.isoformat() for t in updated.predict().index]
        np.testing.assert_allclose(_values(out), _values(updated.predict()), rtol=0, atol=1e-9)
    np.testing.assert_allclose(_values(pyfunc.predict(new)), _values(updated.predict()), rtol=0, atol=1e-9)
    # ISO strings pass the schema in process too (as over HTTP), tz-aware stamps as well
    iso = rows.assign(time=[t.isoformat() for t in rows["time"]])
    np.testing.assert_allclose(_values(pyfunc.predict(iso)), _values(updated.predict()), rtol=0, atol=1e-9)
    utc = rows.assign(time=rows["time"].dt.tz_localize("UTC"))
    np.testing.assert_allclose(_values(pyfunc.predict(utc)), _values(updated.predict()), rtol=0, atol=1e-9)
    np.testing.assert_allclose(_values(pyfunc.predict(pd.DataFrame())), _values(model.predict()), atol=1e-9)

    # fh by params or by an fh-only column
    out = pyfunc.predict(rows, params={"fh": [2, 4]})
    assert out["step"].tolist() == [2, 4]
    np.testing.assert_allclose(_values(out), _values(updated.predict(fh=[2, 4])), rtol=0, atol=1e-9)
    assert pyfunc.predict(pd.DataFrame({"fh": [3]}))["step"].tolist() == [3]

    # bad input is an error naming the problem, not a silent forecast, and with no traceback or path
    bad_frames = {"starts at": rows.iloc[1:],  # leaves a gap after the logged state
                  "does not parse as timestamps": iso.assign(time=["soon"] * len(iso)),
                  "missing \\['temp'\\]": rows.drop(columns="temp")}
    for pattern, frame in bad_frames.items():
        with pytest.raises(MlflowException, match=pattern) as bad:
            pyfunc.predict(frame)
        assert bad.value.error_code == "INVALID_PARAMETER_VALUE"
        message = str(bad.value)
        assert "Traceback" not in message and 'File "' not in message and ".py" not in message
        assert bad.value.__cause__ is None and bad.value.__suppress_context__


def test_load_forecaster_and_alias_moves(store, tmp_path):
    model, new = store["models"]["essm"], store["new"]
    name = "tsessm-aliases"
    loaded = registry.load_forecaster("models:/tsessm-essm@champion")
    assert type(loaded) is type(model)
    np.testing.assert_allclose(_values(loaded.predict()), _values(model.predict()), rtol=0, atol=0)
    np.testing.assert_allclose(_values(loaded.update(new).predict()),
                               _values(copy.deepcopy(model).update(new).predict()), rtol=0, atol=1e-9)
    run_uri = f"runs:/{store['infos']['essm'].run_id}/essm"
    np.testing.assert_allclose(_values(registry.load_forecaster(run_uri).predict()),
                               _values(model.predict()), rtol=0, atol=0)
    model.save(tmp_path / "m.tsm")  # a plain path still works
    assert registry.load_forecaster(tmp_path / "m.tsm").n_seen_ == model.n_seen_

    updated = copy.deepcopy(model).update(new)
    with tracking.start_run(True, "registry-test", run_name="aliases") as tracker:
        v1 = tracker.log_model(model, registered_model_name=name).registered_model_version
        v2 = tracker.log_model(updated, registered_model_name=name).registered_model_version
    assert (v1, v2) == (1, 2)
    assert registry.get_version(name, "champion") is None
    assert registry.promote(name, v1) is None
    registry.set_alias(name, "challenger", v2)
    assert (registry.get_version(name, "champion"), registry.get_version(name, "challenger")) == (1, 2)
    assert registry.promote(name, registry.get_version(name, "challenger")) == 1  # returns the old champion
    assert registry.get_version(name) == 2
    champion = registry.load_forecaster(f"models:/{name}@champion")
    assert champion.n_seen_ == updated.n_seen_
    np.testing.assert_allclose(_values(champion.predict()), _values(updated.predict()), rtol=0, atol=0)
    assert registry.load_forecaster(f"models:/{name}/1").n_seen_ == model.n_seen_
    with pytest.raises(ValueError, match="cannot resolve"):
        registry.load_forecaster(f"models:/{name}@nobody")


def test_panel_and_numpy_models(store):
    data = _frame(120)
    long = pd.concat([data.iloc[:110].reset_index(names="ds").assign(unique_id=k, load=lambda d, k=k: d.load * (i + 1))
                      for i, k in enumerate(["a", "b"])])
    panel = tsessm.PanelForecaster(_essm()).fit(long)
    new = data.iloc[110:113].reset_index(names="ds").assign(unique_id="a")
    expected = copy.deepcopy(panel).update(new).predict()
    with tracking.start_run(True, "registry-test", run_name="panel") as tracker:
        uri = tracker.log_model(panel, name="panel").model_uri
    pyfunc = mlflow.pyfunc.load_model(uri)
    for _ in range(2):
        out = pyfunc.predict(new.rename(columns={"ds": "time"}))
        assert list(out.columns) == ["unique_id", "time", "step", *TARGETS]
        assert out["unique_id"].tolist() == ["a"] * 4 + ["b"] * 4 and out["step"].tolist() == [1, 2, 3, 4] * 2
        assert out["time"].tolist() == [t.isoformat() for t in expected["ds"]]
        np.testing.assert_allclose(_values(out), _values(expected), rtol=0, atol=1e-9)
    np.testing.assert_allclose(_values(pyfunc.predict(pd.DataFrame())), _values(panel.predict()), atol=1e-9)

    # numpy-fitted: integer steps, "time" is the row position in the series seen so far
    values = data.to_numpy()
    naive = tsessm.NaiveForecaster(horizon=2).fit(values[:100])
    out = registry.forecast_frame(naive, pd.DataFrame(values[100:103], columns=["0", "1"]))
    assert out["time"].tolist() == ["103", "104"] and naive.n_seen_ == 100
    np.testing.assert_allclose(out[["0", "1"]].to_numpy(), np.tile(values[102], (2, 1)))


def test_tracking_load_forecaster_takes_paths_and_uris(store, tmp_path):
    model = store["models"]["naive"]
    model.save(tmp_path / "naive.tsm")
    for source in (tmp_path / "naive.tsm", str(tmp_path / "naive.tsm"), "models:/tsessm-naive@champion"):
        pd.testing.assert_frame_equal(tracking.load_forecaster(source).predict(), model.predict())
    assert tracking.is_model_uri("models:/x@champion") and tracking.is_model_uri("runs:/abc/model")
    assert not tracking.is_model_uri(tmp_path / "naive.tsm")
    with pytest.raises(FileNotFoundError):
        registry.load_forecaster(tmp_path / "missing.tsm")


def test_null_tracker_log_model_is_a_noop(store):
    with tracking.start_run(False) as tracker:
        assert tracker.log_model(store["models"]["naive"], registered_model_name="never") is None
        tracker.log_dict({"a": 1}, "a.json")


def test_serve_invocations_match_in_process(store):
    model, new = store["models"]["essm"], store["new"]
    expected = copy.deepcopy(model).update(new).predict()
    port = free_port()
    log = store["root"] / "serve.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tsessm-essm@champion",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=server_env(MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"]),
                                cwd=store["root"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", proc, log)
        url = f"http://127.0.0.1:{port}/invocations"
        rows = [[t.isoformat(), *map(float, v)] for t, v in zip(new.index, new[TARGETS].to_numpy())]
        split = {"dataframe_split": {"columns": ["time", *TARGETS], "data": rows}}
        records = {"dataframe_records": [dict(zip(["time", *TARGETS], r)) for r in rows]}
        in_process = mlflow.pyfunc.load_model("models:/tsessm-essm@champion").predict(
            pd.DataFrame(rows, columns=["time", *TARGETS]))  # the same ISO strings, in process
        for payload in (split, records, split):
            got = pd.DataFrame(post_json(url, payload)["predictions"])
            pd.testing.assert_frame_equal(got[["time", "step"]], in_process[["time", "step"]], check_dtype=False)
            np.testing.assert_allclose(_values(got), _values(in_process), rtol=0, atol=1e-6)
            assert got["time"].tolist() == [t.isoformat() for t in expected.index]
            assert got["step"].tolist() == [1, 2, 3, 4]
            np.testing.assert_allclose(_values(got), _values(expected), rtol=0, atol=1e-6)
        got = pd.DataFrame(post_json(url, {"dataframe_split": {"columns": ["time", *TARGETS], "data": []},
                                       "params": {"fh": [1, 4]}})["predictions"])
        np.testing.assert_allclose(_values(got), _values(model.predict(fh=[1, 4])), rtol=0, atol=1e-6)
        with pytest.raises(urllib.error.HTTPError) as bad:
            post_json(url, {"dataframe_split": {"columns": ["time", "load"], "data": [r[:2] for r in rows]}})
        assert bad.value.code == 400
        body = json.loads(bad.value.read())  # the problem named, no stack trace or file paths
        assert "missing ['temp']" in body["message"] and "stack_trace" not in body
        assert "Traceback" not in body["message"] and ".py" not in body["message"]
    finally:
        stop(proc)


def test_cli_predict_takes_a_registry_uri(store, tmp_path):
    from tsessm.cli import main

    out = tmp_path / "forecast.csv"
    assert main(["predict", "--model", "models:/tsessm-naive@champion", "--out", str(out)]) == 0
    got = pd.read_csv(out, index_col=0, parse_dates=True)
    expected = store["models"]["naive"].predict()
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12)
    assert list(got.index) == list(expected.index)
