"""The retraining pipeline: promotion gate, skips, and every failure leaving the registry alone."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from mlflow import MlflowClient

from tsessm import registry, retrain
from tsessm.retrain import pipeline

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "retrain-test"


# ----- helpers -----------------------------------------------------------------------------------
def _series(n: int, seed: int = 0) -> pd.DataFrame:
    """Hourly load with a daily cycle (seasonal naive with season 24 is good, season 1 is bad)."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"time": pd.date_range("2024-01-01", periods=n, freq="h"),
                         "load": np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, n),
                         "temp": np.cos(2 * np.pi * t / 24) + rng.normal(0, 0.1, n)})


def _value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(v) if isinstance(v, str) else repr(v)


def _write_config(path: Path, name: str, data: Path | str, *, model: str = "naive", params: dict | None = None,
                  data_extra: dict | None = None, promotion: dict | None = None, tuning: dict | None = None,
                  lock_dir: Path | None = None) -> Path:
    sections = {
        "data": {"path": str(data), "time_col": "time", "target": "load", **(data_extra or {})},
        "model": {"name": model, "params": {"horizon": 4, **(params or {})}},
        "promotion": {"holdout": 30, "margin": 0.02, **(promotion or {})},
        "registry": {"name": name, "experiment": EXPERIMENT},
        "lock": {"dir": str(lock_dir or path.parent / "locks")},
    }
    if tuning:
        sections["tuning"] = tuning
    text = "\n".join(f"[{sec}]\n" + "\n".join(f"{k} = {_value(v)}" for k, v in body.items()) + "\n"
                     for sec, body in sections.items())
    path.write_text(text, encoding="utf-8")
    return path


def _run(config: Path, capsys, *extra: str) -> tuple[int, str]:
    """`tsessm retrain --config CONFIG`, in process: (exit status, the printed line)."""
    code = retrain.main(["--config", str(config), *extra])
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.startswith("retrain ")]
    assert len(lines) == 1, out
    return code, lines[0]


def _registry_state(name: str) -> tuple:
    """Everything a failed retrain must leave as it was: both aliases and the versions."""
    versions = sorted(int(v.version) for v in _client().search_model_versions(f"name='{name}'"))
    return registry.get_version(name, "champion"), registry.get_version(name, "previous"), versions


def _client() -> MlflowClient:
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def _last_run(name: str):
    client = _client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], f"tags.`retrain.model` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite MLflow store in a temp dir; the tests run from that dir."""
    root = tmp_path_factory.mktemp("retrain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlruns.db")
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.chdir(root)
        yield root
        mlflow.set_tracking_uri(None)  # forget the temp store


@pytest.fixture(scope="module")
def guarded(store):
    """A registered model with a champion (v1): the failure tests check nothing moves it."""
    folder = store / "guarded"
    folder.mkdir()
    _series(200).to_csv(folder / "data.csv", index=False)
    config = _write_config(folder / "retrain.toml", "guarded", folder / "data.csv", params={"season_length": 24})
    assert retrain.main(["--config", str(config)]) == 0
    assert registry.get_version("guarded", "champion") == 1
    return folder


# ----- the cycle ---------------------------------------------------------------------------------
def test_first_run_promotes_then_same_data_is_a_no_op_better_promoted_worse_kept(store, capsys):
    folder = store / "cycle"
    folder.mkdir()
    data, config = folder / "data.csv", folder / "retrain.toml"

    # 1. no champion yet: the first challenger (a poor one: last value) becomes champion
    _series(200).to_csv(data, index=False)
    _write_config(config, "cycle", data, params={"season_length": 1})
    code, line = _run(config, capsys)
    assert code == 0 and line.startswith("retrain cycle: promoted: version 1 is @champion (first model")
    assert _registry_state("cycle") == (1, None, [1])

    # 2. the same data again: noticed, nothing done
    code, line = _run(config, capsys)
    assert code == 0 and "skipped: data unchanged" in line
    assert _registry_state("cycle") == (1, None, [1])
    assert _last_run("cycle").data.tags["retrain.decision"] == "skipped"

    # 3. new rows and a better model (seasonal naive): promoted, the old champion becomes @previous
    _series(230).to_csv(data, index=False)
    _write_config(config, "cycle", data, params={"season_length": 24})
    code, line = _run(config, capsys)
    assert code == 0 and "promoted: version 2 is @champion" in line and "v1 is @previous" in line
    assert _registry_state("cycle") == (2, 1, [1, 2])
    run = _last_run("cycle")
    assert run.info.status == "FINISHED"
    assert run.data.params["decision"] == "promoted" and run.data.tags["retrain.decision"] == "promoted"
    assert run.data.metrics["challenger_mse"] < 0.98 * run.data.metrics["champion_mse"]
    artifacts = {a.path for a in _client().list_artifacts(run.info.run_id)}
    assert {"metrics.csv", "by_step.csv", "forecast.png", "decision.json"} <= artifacts
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="metrics.csv"))
    assert table["role"].tolist() == ["challenger", "champion"]
    assert table["n_windows"].tolist() == [30 - 4 + 1] * 2  # same holdout origins for both
    version = _client().get_model_version("cycle", "2")
    loaded = retrain.load_data(retrain.load_config(config))
    assert version.tags["data_sha256"] == loaded.sha256 == run.data.tags["retrain.data_sha256"]
    assert version.tags["retrain_run_id"] == run.info.run_id
    champion = registry.load_forecaster("models:/cycle@champion")
    assert champion.season_length == 24 and champion.n_seen_ == 230  # absorbed the holdout rows

    # 4. new rows, a worse model: not promoted (exit 0), the champion stays, the reason is printed
    _series(260).to_csv(data, index=False)
    _write_config(config, "cycle", data, params={"season_length": 1})
    code, line = _run(config, capsys)
    assert code == 0 and line.startswith("retrain cycle: not promoted: holdout mse")
    assert "@champion stays v2" in line
    assert _registry_state("cycle") == (2, 1, [1, 2])
    assert _last_run("cycle").data.tags["retrain.decision"] == "not_promoted"

    # 5. two new rows are fewer than min_new_rows: skipped; --force retrains anyway (still gated)
    _series(262).to_csv(data, index=False)
    _write_config(config, "cycle", data, params={"season_length": 1}, data_extra={"min_new_rows": 24})
    code, line = _run(config, capsys)
    assert code == 0 and "skipped: 2 new row(s) since run" in line and "min_new_rows is 24" in line
    code, line = _run(config, capsys, "--force")
    assert code == 0 and "not promoted" in line
    assert _registry_state("cycle") == (2, 1, [1, 2])


def test_dry_run_never_touches_the_registry(store, capsys):
    folder = store / "dry"
    folder.mkdir()
    _series(120).to_csv(folder / "data.csv", index=False)
    config = _write_config(folder / "retrain.toml", "dry", folder / "data.csv", params={"season_length": 24})
    code, line = _run(config, capsys, "--dry-run")
    assert code == 0 and line.startswith("retrain dry: dry run: would promote: first model")
    assert _registry_state("dry") == (None, None, [])
    code, line = _run(config, capsys)  # a dry run is not "the last retrain": the same data is not skipped
    assert code == 0 and "promoted: version 1" in line
    assert _registry_state("dry") == (1, None, [1])


# ----- failures: registry untouched, non-zero exit, one line, logged ----------------------------
def _nan(df):
    df.loc[215, "load"] = np.nan
    return df


FAILURES = {
    "missing file": (lambda folder: folder / "nope.csv", "naive", {}, "no such data file"),
    "not a parquet file": (lambda folder: _garbage(folder / "data.parquet"), "naive", {}, "cannot read it as Parquet"),
    "no target column": (lambda folder: _csv(folder, _series(240).drop(columns="load")), "naive", {},
                         "missing required column(s) ['load']"),
    "bad timestamps": (lambda folder: _csv(folder, _series(240).assign(time="soon")), "naive", {},
                       "does not parse as timestamps"),
    "NaN": (lambda folder: _csv(folder, _nan(_series(240))), "naive", {}, "'load' is NaN at row 215"),
    "gap": (lambda folder: _csv(folder, _series(240).drop(index=100)), "naive", {}, "gap after row 99"),
    "diverging training": (lambda folder: _csv(folder, _series(240)), "essm",
                           {"lookback": 16, "d_model": 8, "d_state": 8, "n_layers": 1, "epochs": 1,
                            "steps_per_epoch": 4, "lr": 1e6}, "train: training diverged"),
}


def _csv(folder: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(folder / "data.csv", index=False)
    return folder / "data.csv"


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not parquet\x00\x01")
    return path


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failed_run_leaves_the_registry_as_it_was(guarded, capsys, case):
    make_data, model, params, message = FAILURES[case]
    folder = guarded / case.replace(" ", "_")
    folder.mkdir()
    config = _write_config(folder / "retrain.toml", "guarded", make_data(folder), model=model, params=params)
    before = _registry_state("guarded")
    code, line = _run(config, capsys)
    assert code == 1
    assert line.startswith("retrain guarded: failed: ") and message in line
    assert _registry_state("guarded") == before == (1, None, [1])
    run = _last_run("guarded")  # the tracking server was reachable: the failure is logged
    assert run.info.status == "FAILED"
    assert run.data.tags["retrain.decision"] == "failed" and message.split(": ")[-1] in run.data.tags["retrain.reason"]


def test_unreachable_tracking_server_fails_fast_and_changes_nothing(guarded, capsys, monkeypatch):
    _series(240).to_csv(guarded / "data.csv", index=False)
    config = _write_config(guarded / "retrain.toml", "guarded", guarded / "data.csv", params={"season_length": 1})
    before = _registry_state("guarded")
    store_uri = os.environ["MLFLOW_TRACKING_URI"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
        code, line = _run(config, capsys)
    finally:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
        mlflow.set_tracking_uri(store_uri)  # start_run pointed MLflow at the dead server
    assert code == 1
    assert line.startswith(f"retrain guarded: failed: tracking: cannot start an MLflow run at "
                           f"http://127.0.0.1:{port}: [Errno 111] Connection refused; API request to")
    assert _registry_state("guarded") == before


def test_a_second_retrain_of_the_same_model_refuses_while_the_lock_is_held(guarded, capsys):
    _series(240).to_csv(guarded / "data.csv", index=False)
    config = _write_config(guarded / "retrain.toml", "guarded", guarded / "data.csv", params={"season_length": 1})
    before = _registry_state("guarded")
    lock = FileLock(str(retrain.lock_path(retrain.load_config(config))), timeout=0)
    with lock:
        code, line = _run(config, capsys)
        assert code == retrain.EXIT_BUSY != 0
        assert line == (f"retrain guarded: busy: another retrain of guarded is running "
                        f"(lock {retrain.lock_path(retrain.load_config(config))})")
        # and from another process, through the runnable wrapper
        done = subprocess.run([sys.executable, str(REPO / "pipelines" / "retrain.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 3, done.stderr[-2000:]
        assert "another retrain of guarded is running" in done.stderr
    assert _registry_state("guarded") == before


def test_invalid_configs_exit_2_with_the_reason(tmp_path, capsys):
    code, line = _run(tmp_path / "absent.toml", capsys)
    assert code == 2 and "no such config file" in line
    cases = {
        "[data]\npath = 'x.csv'\ntarget = 'load'\nholdot = 3\n": "unknown key(s) ['holdot'] in [data]",
        "[data]\npath = 'x.csv'\ntarget = 'load'\n[model]\nname = 'naive'\n[promotion]\nholdout = 10\n":
            "[registry] name is required",
        "[data]\npath = 'x.csv'\ntarget = 'load'\n[model]\nname = 'naive'\nparams = {horizon = 24}\n"
        "[promotion]\nholdout = 10\n[registry]\nname = 'm'\n": "holdout (10 rows) must be at least the horizon (24)",
        "[data]\npath = 'x.csv'\ntarget = 'load'\n[model]\nname = 'naive'\nparams = {sesaon = 24}\n"
        "[promotion]\nholdout = 30\n[registry]\nname = 'm'\n": "has no parameter(s) sesaon",
        "[data]\npath = 'x.csv'\ntarget = 'load'\n[model]\nname = 'naive'\n[tuning]\nn_trials = 2\n"
        "[promotion]\nholdout = 30\n[registry]\nname = 'm'\n": "[tuning] tunes essm or lstm",
        "[data\n": "not a readable TOML file",
    }
    for text, message in cases.items():
        (tmp_path / "bad.toml").write_text(text)
        code, line = _run(tmp_path / "bad.toml", capsys)
        assert code == 2 and "config error" in line and message in line, line


# ----- data sources ------------------------------------------------------------------------------
def test_directory_sources_newest_or_all_and_readers_agree(tmp_path):
    full = _series(120)
    single = tmp_path / "single.csv"
    full.to_csv(single, index=False)
    folder = tmp_path / "drops"
    folder.mkdir()
    # three exports, out of order on disk, the second overlapping the first by one identical row
    parts = [("b.csv", full.iloc[49:90]), ("a.parquet", full.iloc[:50]), ("c.csv", full.iloc[90:])]
    for i, (name, part) in enumerate(parts):
        (part.to_parquet if name.endswith("parquet") else part.to_csv)(folder / name, index=False)
        os.utime(folder / name, (1_700_000_000 + i, 1_700_000_000 + i))
    (folder / "notes.md").write_text("not data")

    def config(path, **data):
        return retrain.config_from_dict({
            "data": {"path": str(path), "target": "load", "columns": ["load", "temp"], **data},
            "model": {"name": "naive", "params": {"horizon": 4}}, "promotion": {"holdout": 10},
            "registry": {"name": "m"}})

    reference = retrain.load_data(config(single))
    assert reference.rows == 120 and list(reference.frame.columns) == ["load", "temp"]
    for reader in ("pandas", "polars"):
        every = retrain.load_data(config(folder, select="all", reader=reader))
        assert [f.name for f in every.files] == ["b.csv", "a.parquet", "c.csv"]
        assert every.sha256 == reference.sha256  # same rows -> same fingerprint, whatever the layout
        assert retrain.load_data(config(single, reader=reader)).sha256 == reference.sha256
    newest = retrain.load_data(config(folder, select="newest"))
    assert [f.name for f in newest.files] == ["c.csv"] and newest.rows == 30
    assert newest.sha256 != reference.sha256

    clash = full.iloc[89:91].copy()
    clash.loc[89, "load"] += 1.0
    clash.to_csv(folder / "d.csv", index=False)
    with pytest.raises(retrain.DataError, match="disagree about the row at 2024-01-04 17:00"):
        retrain.load_data(config(folder, select="all"))
    with pytest.raises(retrain.DataError, match="no data files"):
        retrain.load_data(config(folder, select="all", pattern="*.json"))


def test_missing_policy_repairs_gaps_when_asked(tmp_path):
    frame = _series(60).drop(index=[10, 11])
    frame.to_csv(tmp_path / "d.csv", index=False)
    base = {"model": {"name": "naive", "params": {"horizon": 4}}, "promotion": {"holdout": 10},
            "registry": {"name": "m"}}
    with pytest.raises(retrain.DataError, match="gap after row 9"):
        retrain.load_data(retrain.config_from_dict({"data": {"path": str(tmp_path / "d.csv"), "target": "load"},
                                                    **base}))
    filled = retrain.load_data(retrain.config_from_dict(
        {"data": {"path": str(tmp_path / "d.csv"), "target": "load", "missing": "ffill"}, **base}))
    assert filled.rows == 60 and filled.frame["load"].iloc[11] == filled.frame["load"].iloc[9]


# ----- a tuning budget instead of fixed parameters ----------------------------------------------
def test_tuning_budget_trains_the_best_trial_and_promotes_it(store, capsys):
    folder = store / "tuned"
    folder.mkdir()
    _series(260).to_csv(folder / "data.csv", index=False)
    config = _write_config(
        folder / "retrain.toml", "tuned", folder / "data.csv", model="essm",
        params={"steps_per_epoch": 2, "n_heads": 1, "batch_size": 8},
        tuning={"n_trials": 2, "epochs": 1, "pruner": "none",
                "space": {"lookback": [16], "d_model": [8], "d_state": [8], "n_layers": [1]}},
    )
    code, line = _run(config, capsys)
    assert code == 0 and "promoted: version 1 is @champion" in line
    run = _last_run("tuned")
    assert run.data.tags["retrain.tuned"] == "true" and "tuned.lr" in run.data.params
    model = registry.load_forecaster("models:/tuned@champion")
    assert (model.lookback, model.d_model, model.epochs) == (16, 8, 1)
    assert float(run.data.params["tuned.lr"]) == pytest.approx(model.lr)


def test_no_promotion_when_the_champion_moved_during_the_run(guarded, capsys, monkeypatch):
    _series(240).to_csv(guarded / "data.csv", index=False)
    config = _write_config(guarded / "retrain.toml", "guarded", guarded / "data.csv", params={"season_length": 24})
    before = _registry_state("guarded")
    real, calls = registry.get_version, []

    def moving(name, alias="champion"):  # someone promotes v7 while this retrain evaluates
        calls.append(alias)
        version = real(name, alias)
        return 7 if alias == "champion" and calls.count("champion") > 1 else version

    monkeypatch.setattr(registry, "get_version", moving)
    monkeypatch.setattr(pipeline, "decide", lambda *args, **kwargs: (True, "the gate says yes"))
    code, line = _run(config, capsys, "--force")
    assert code == 1 and "failed: promote: @champion moved from v1 to v7 during this retrain" in line
    monkeypatch.setattr(registry, "get_version", real)
    assert _registry_state("guarded") == before
