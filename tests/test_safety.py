"""Hostile input: model files that try to run code, values that would poison a stream, damaged
files and checkpoints, credentials in URIs. Each test names the finding it covers."""
from __future__ import annotations

import json
import os
import pickle
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LSTMForecaster, NaiveForecaster, PanelForecaster, persist
from tsessm.cli import main as cli_main
from tsessm.files import sha256_file
from tsessm.forecasters.base import BaseForecaster
from tsessm.redact import mask
from tsessm.stream import run_stream
from tsessm.stream.cli import main as stream_main

N_FIT = 200


def _frame(n: int = N_FIT + 60, start: str = "2024-01-01") -> pd.DataFrame:
    t = np.arange(n)
    return pd.DataFrame({"load": np.sin(t / 6) + 0.01 * t, "temp": np.cos(t / 5)},
                        index=pd.date_range(start, periods=n, freq="h", name="time"))


@pytest.fixture(scope="module")
def fitted():
    model = ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1, steps_per_epoch=2,
                           verbose=0, random_state=0, target="load")
    return model.fit(_frame().iloc[:N_FIT])


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "model.tsm"
    fitted.save(path)
    return path


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{"time": ts.isoformat(), **{c: float(v) for c, v in row.items()}} for ts, row in frame.iterrows()]


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _strict(line: str) -> dict:
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(line, parse_constant=refuse)


# ----- finding 1: a model file that runs code on load -----------------------------------------
class _Payload:
    """Unpickling it runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted(path: Path, marker: Path, panel: bool = False) -> Path:
    body = {"format": 1, "class": "PanelForecaster" if panel else "tsessm.forecasters.essm.ESSMForecaster",
            "params": {}, "state": _Payload(marker)}
    path.write_bytes(pickle.dumps(body))
    return path


def test_a_crafted_pickle_never_runs_wherever_a_model_file_is_read(tmp_path, capsys, monkeypatch, model_file):
    marker = tmp_path / "pwned"
    evil = _crafted(tmp_path / "evil.pkl", marker)
    for load in (BaseForecaster.load, ESSMForecaster.load, PanelForecaster.load):
        with pytest.raises(persist.ModelFileError, match="pickle"):
            load(evil)
    # the CLI: predict and stream exit 2 with one line
    assert cli_main(["predict", "--model", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pickle" in err and "--trust-pickle" in err
    assert stream_main(["--model", str(evil), "--input", str(_jsonl(tmp_path / "in.jsonl", [])),
                        "--checkpoint", str(tmp_path / "ck")]) == 2
    assert "pickle" in capsys.readouterr().err
    # a checkpoint whose model file was replaced by the pickle (its recorded sha256 updated too)
    ckpt = tmp_path / "ckpt"
    rows = _records(_frame().iloc[N_FIT:N_FIT + 3])
    assert run_stream(str(model_file), rows, checkpoint=ckpt).status == "end"
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    _crafted(ckpt / manifest["model_file"], marker)
    manifest["model_sha256"] = sha256_file(ckpt / manifest["model_file"])
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))
    assert stream_main(["--model", str(model_file), "--input", str(tmp_path / "in.jsonl"),
                        "--checkpoint", str(ckpt)]) == 2
    assert "pickle" in capsys.readouterr().err
    # a registry artifact: the pickle logged where a model file is expected
    from tsessm.tracking import load_forecaster, start_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    try:
        with start_run(True, "evil-artifact") as tracker:
            tracker.log_artifact(evil)
        with pytest.raises(persist.ModelFileError, match="pickle"):
            load_forecaster(f"runs:/{tracker.run_id}/evil.pkl")
    finally:
        mlflow.set_tracking_uri("sqlite:///mlruns.db")
    assert not marker.exists()
    # a payload hidden in an otherwise valid old file runs only when the caller trusts it explicitly
    with pytest.raises(persist.ModelFileError):
        BaseForecaster.load(evil, allow_pickle=True)  # it is also not a model file
    assert marker.exists()  # ... but allow_pickle=True did unpickle it: the flag means what it says


def test_model_files_hold_no_pickle_and_round_trip_every_kind(tmp_path, fitted):
    frame = _frame()
    naive = NaiveForecaster(horizon=4).fit(frame.iloc[:N_FIT])
    lstm = LSTMForecaster(horizon=4, lookback=16, d_model=8, epochs=1, steps_per_epoch=2, verbose=0,
                          random_state=0).fit(frame.iloc[:N_FIT])
    for model in (fitted, naive, lstm):
        path = tmp_path / f"{type(model).__name__}.tsm"
        model.save(path)
        data = path.read_bytes()
        assert data[:2] == b"PK" and b"\x80\x04\x95" not in data  # a zip, no pickle stream inside
        import zipfile

        names = zipfile.ZipFile(path).namelist()
        assert names[0] == persist.DOCUMENT and all(n.endswith(".npy") for n in names[1:])
        loaded = BaseForecaster.load(path)
        pd.testing.assert_frame_equal(loaded.predict(), model.predict())
    # a model saved from CUDA tensors: tensors are stored as arrays, so they load on the CPU
    document = fitted._document()
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in document["state"]["net_"].values())


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, os.urandom(256), b"PK\x03\x04garbage"])
def test_damaged_model_files_are_one_line_errors_exit_2(tmp_path, capsys, model_file, content):
    bad = tmp_path / "bad.tsm"
    bad.write_bytes(content)
    with pytest.raises(persist.ModelFileError, match="not a tsessm model file"):
        BaseForecaster.load(bad)
    assert cli_main(["predict", "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a tsessm model file" in err
    truncated = tmp_path / "truncated.tsm"
    truncated.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    with pytest.raises(persist.ModelFileError, match="not a tsessm model file"):
        BaseForecaster.load(truncated)


# ----- finding 2: one huge value poisons the stream ------------------------------------------
def test_huge_values_are_refused_naming_row_and_column_and_the_model_keeps_streaming(fitted):
    import copy

    model = copy.deepcopy(fitted)
    before = model.predict()
    nxt = _frame().iloc[N_FIT:N_FIT + 2].copy()
    nxt.iloc[1, 1] = 1e25
    with pytest.raises(ValueError, match=r"row 2024-01-09 09:00:00, column 'temp'.*refused"):
        model.update(nxt)
    with pytest.raises(ValueError, match="column 'load'"):
        model.observe([1e30, 0.0])
    pd.testing.assert_frame_equal(model.predict(), before)
    model.update(_frame().iloc[N_FIT:N_FIT + 2])
    assert np.isfinite(model.predict().to_numpy()).all()


def test_a_huge_record_is_a_bad_record_and_nothing_non_finite_is_written(tmp_path, model_file):
    rows = _records(_frame().iloc[N_FIT:N_FIT + 6])
    rows[2]["load"] = 1e30
    out, ckpt = tmp_path / "out.jsonl", tmp_path / "ckpt"
    code = stream_main(["--model", str(model_file), "--input", str(_jsonl(tmp_path / "in.jsonl", rows)),
                        "--output", str(out), "--checkpoint", str(ckpt), "--on-bad-record", "skip",
                        "--gap", "ffill"])  # the refused row leaves a one-step gap
    assert code == 0
    lines = [_strict(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6 and all(np.isfinite(v).all() for line in lines for v in line["forecast"].values())
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    assert manifest["counters"]["bad"] == 1 and manifest["counters"]["applied"] == 5
    assert manifest["counters"]["filled"] == 1
    resumed = BaseForecaster.load(ckpt / manifest["model_file"])
    assert all(torch.isfinite(s).all() for s in resumed.state_)


def _panel_frame(ids=("a", "b"), n=80, start="2024-01-01") -> pd.DataFrame:
    parts = []
    for k, key in enumerate(ids):
        t = np.arange(n)
        parts.append(pd.DataFrame({"unique_id": key, "ds": pd.date_range(start, periods=n, freq="h"),
                                   "y": np.sin(t / 5 + k) + 0.1 * k}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def panel():
    model = ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1, steps_per_epoch=2,
                           verbose=0, random_state=0)
    return PanelForecaster(model).fit(_panel_frame())


def test_panel_refuses_huge_values(panel):
    import copy

    p = copy.deepcopy(panel)
    when = p.last_time_[0] + pd.Timedelta("1h")
    with pytest.raises(ValueError, match="'y'.*refused"):
        p.observe(["a"], [when], np.array([[1e39]]))
    rows = pd.DataFrame({"unique_id": ["a"], "ds": [when], "y": [1e39]})
    with pytest.raises(ValueError, match="series 'a'.*refused"):
        p.update(rows)
    assert torch.isfinite(p.last_out_).all() and p.last_time_[0] == panel.last_time_[0]


# ----- finding 3: a failed panel update is all or nothing ------------------------------------
def test_a_failed_panel_update_changes_no_series(panel):
    import copy

    p = copy.deepcopy(panel)
    before = ([s.clone() for s in p.state_], p.last_out_.clone(), list(p.ids_), list(p.last_time_))
    known = pd.DataFrame({"unique_id": "a", "ds": p.last_time_[0] + pd.Timedelta("1h") * np.arange(1, 4),
                          "y": [0.1, 0.2, 0.3]})
    overflowing = _panel_frame(ids=("new",), n=40)
    overflowing.loc[5, "y"] = 1.7e308  # its standard deviation overflows
    with pytest.raises(ValueError, match="too large to scale"):
        p.update(pd.concat([known, overflowing], ignore_index=True))
    assert p.ids_ == before[2] and p.last_time_ == before[3]
    assert all(torch.equal(a, b) for a, b in zip(p.state_, before[0])) and torch.equal(p.last_out_, before[1])
    p.update(known)  # the valid part alone goes through
    assert p.last_time_[0] == before[3][0] + pd.Timedelta("3h")


# ----- finding 4: credentials in URIs ---------------------------------------------------------
def test_secrets_are_masked_in_uris_and_tracked_params(tmp_path, monkeypatch):
    assert mask("postgresql://user:s3cret@db:5432/optuna") == "postgresql://user:***@db:5432/optuna"
    assert mask("see http://u:p%40ss@h:5000/api and https://h/x?token=abc&a=1") == \
        "see http://u:***@h:5000/api and https://h/x?token=***&a=1"
    assert mask("sqlite:///mlruns.db") == "sqlite:///mlruns.db"
    from tsessm.tracking import start_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    try:
        with start_run(True, "secrets") as tracker:
            tracker.log_params({"tuning.storage": "postgresql://user:s3cret@db/optuna"})
        params = mlflow.get_run(tracker.run_id).data.params
    finally:
        mlflow.set_tracking_uri("sqlite:///mlruns.db")
    assert params["tuning.storage"] == "postgresql://user:***@db/optuna"


def test_an_unreachable_tracking_server_fails_in_seconds_without_the_password(tmp_path, capsys, monkeypatch):
    from tsessm import retrain

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    frame = _frame(240).reset_index()
    frame.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "retrain.toml").write_text(
        f'[data]\npath = "{tmp_path / "data.csv"}"\ntime_col = "time"\ntarget = "load"\n'
        '[model]\nname = "naive"\nparams = {horizon = 4}\n[promotion]\nholdout = 30\n'
        f'[registry]\nname = "secret-test"\n[lock]\ndir = "{tmp_path / "locks"}"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:hunter2@127.0.0.1:{port}")
    start = time.monotonic()
    try:
        code = retrain.main(["--config", str(tmp_path / "retrain.toml")])
    finally:
        mlflow.set_tracking_uri("sqlite:///mlruns.db")
    elapsed = time.monotonic() - start
    out = capsys.readouterr()
    assert code == 1 and elapsed < 30
    assert "hunter2" not in out.out + out.err and f"admin:***@127.0.0.1:{port}" in out.out + out.err


# ----- finding 5: --gap ffill has no bound ----------------------------------------------------
def test_ffill_is_bounded_and_later_real_rows_are_kept(tmp_path, model_file):
    rows = _records(_frame().iloc[N_FIT:N_FIT + 10])
    typo = dict(rows[3], time=(pd.Timestamp(rows[3]["time"]) + pd.Timedelta(days=365)).isoformat())
    stream = rows[:3] + [typo] + rows[3:]
    out = tmp_path / "out.jsonl"
    code = stream_main(["--model", str(model_file), "--input", str(_jsonl(tmp_path / "in.jsonl", stream)),
                        "--output", str(out), "--checkpoint", str(tmp_path / "ck"), "--gap", "ffill",
                        "--on-bad-record", "skip"])
    assert code == 0
    lines = [_strict(line) for line in out.read_text().splitlines()]
    assert [line["time"] for line in lines] == [r["time"] for r in rows]  # no fills, no real row dropped
    code = stream_main(["--model", str(model_file), "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                        "--checkpoint", str(tmp_path / "ck2"), "--gap", "ffill"])
    assert code == 1  # under --on-bad-record error the long gap stops the stream
    short = rows[:3] + rows[5:]  # a 2-step gap is within the default (the horizon, 4)
    result = run_stream(str(model_file), short, gap="ffill")
    assert result.counters.filled == 2 and result.counters.bad == 0


# ----- finding 6: records that crashed the runner under skip ---------------------------------
def test_out_of_range_dates_and_deep_json_are_bad_records(tmp_path, model_file):
    rows = _records(_frame().iloc[N_FIT:N_FIT + 4])
    stream = [rows[0], dict(rows[1], time="9999-12-31T23:00:00"), "[" * 100_000 + "]" * 100_000,
              '{"time": ' + "[" * 100_000 + "]" * 100_000 + "}", rows[1], rows[2]]
    out = tmp_path / "out.jsonl"
    code = stream_main(["--model", str(model_file), "--input", str(_jsonl(tmp_path / "in.jsonl", stream)),
                        "--output", str(out), "--checkpoint", str(tmp_path / "ck"), "--on-bad-record", "skip"])
    assert code == 0
    manifest = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert manifest["counters"]["bad"] == 3 and manifest["counters"]["applied"] == 3


# ----- finding 7: the checkpoint manifest is trusted ------------------------------------------
@pytest.mark.parametrize("field,value,message", [
    ("model_file", "../model.tsm", "model-<seq>.tsm"),
    ("model_file", "/etc/passwd", "model-<seq>.tsm"),
    ("adapter", "os:system", "stream adapters"),
    ("seq", "7", "'seq' must be a int"),
    ("counters", {"applied": "x"}, "counters must be integers"),
    ("series", [{"id": None, "count": "1"}], "integer count"),
    ("position", {"line": None}, "position line"),
])
def test_a_tampered_manifest_exits_2_with_a_clear_message(tmp_path, capsys, model_file, field, value, message):
    ckpt = tmp_path / "ckpt"
    assert run_stream(str(model_file), _records(_frame().iloc[N_FIT:N_FIT + 3]), checkpoint=ckpt).status == "end"
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    manifest[field] = value
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))
    code = stream_main(["--model", str(model_file), "--input", str(_jsonl(tmp_path / "in.jsonl", [])),
                        "--checkpoint", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_swapped_model_file_is_refused(tmp_path, capsys, model_file, fitted):
    ckpt = tmp_path / "ckpt"
    assert run_stream(str(model_file), _records(_frame().iloc[N_FIT:N_FIT + 3]), checkpoint=ckpt).status == "end"
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    fitted.save(ckpt / manifest["model_file"])  # a valid model file, but not the one the checkpoint wrote
    code = stream_main(["--model", str(model_file), "--input", str(_jsonl(tmp_path / "in.jsonl", [])),
                        "--checkpoint", str(ckpt)])
    assert code == 2 and "sha256" in capsys.readouterr().err


# ----- finding 8: odd outputs -----------------------------------------------------------------
def test_output_to_a_character_device_works_and_checkpoints(tmp_path, model_file):
    ckpt = tmp_path / "ckpt"
    code = stream_main(["--model", str(model_file), "--input",
                        str(_jsonl(tmp_path / "in.jsonl", _records(_frame().iloc[N_FIT:N_FIT + 3]))),
                        "--output", os.devnull, "--checkpoint", str(ckpt)])
    assert code == 0 and json.loads((ckpt / "checkpoint.json").read_text())["counters"]["applied"] == 3


# ----- from a cold review: files that are well-formed but wrong, and what round trips keep ----------
def _rewrite_member(path: Path, member: str, data: bytes, out: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, data if info.filename == member else src.read(info))
    return out


def test_well_formed_but_wrong_model_files_are_clean_errors(tmp_path, capsys, model_file):
    import io

    wrong = io.BytesIO()
    np.lib.format.write_array(wrong, np.zeros((3, 3), np.float32))
    shaped = _rewrite_member(model_file, "arrays/3.npy", wrong.getvalue(), tmp_path / "shape.tsm")
    with pytest.raises(persist.ModelFileError, match="damaged ESSMForecaster"):
        BaseForecaster.load(shaped)
    assert cli_main(["predict", "--model", str(shaped)]) == 2 and "internal error" not in capsys.readouterr().err
    huge = io.BytesIO()
    np.lib.format.write_array(huge, np.zeros(2, np.float32))
    bomb = _rewrite_member(model_file, "arrays/0.npy", huge.getvalue().replace(b"(2,)", b"(99999999999,)"),
                           tmp_path / "huge.tsm")
    with pytest.raises(persist.ModelFileError, match="more than the"):
        BaseForecaster.load(bomb)
    deep = _rewrite_member(model_file, persist.DOCUMENT, b"[" * 100_000 + b"]" * 100_000, tmp_path / "deep.tsm")
    with pytest.raises(persist.ModelFileError):
        BaseForecaster.load(deep)


def test_timestamps_keep_their_time_zone_and_user_subclasses_round_trip(tmp_path):
    stamp = pd.Timestamp("2024-03-31 03:00", tz="Europe/Berlin")
    (tmp_path / "t.tsm").write_bytes(persist.dumps({"t": stamp, "naive": pd.Timestamp("2024-01-01")}))
    back = persist.read(tmp_path / "t.tsm")
    assert back["t"] == stamp and str(back["t"].tz) == "Europe/Berlin" and back["naive"].tz is None

    class MyNaive(NaiveForecaster):
        pass
    model = MyNaive(horizon=3).fit(_frame().iloc[:N_FIT])
    model.save(tmp_path / "mine.tsm")
    assert type(BaseForecaster.load(tmp_path / "mine.tsm")) is MyNaive
    pd.testing.assert_frame_equal(MyNaive.load(tmp_path / "mine.tsm").predict(), model.predict())


@pytest.mark.parametrize("entry", [{"id": [1], "count": 1}, {"id": None, "count": 1, "last_values": [1.0]}])
def test_checkpoint_series_that_do_not_fit_exit_2(tmp_path, capsys, model_file, entry):
    ckpt = tmp_path / "ckpt"
    assert run_stream(str(model_file), _records(_frame().iloc[N_FIT:N_FIT + 3]), checkpoint=ckpt).status == "end"
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    manifest["series"] = [entry]  # a list id; one last value for a two-column model
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))
    code = stream_main(["--model", str(model_file), "--input", str(_jsonl(tmp_path / "in.jsonl", [])),
                        "--checkpoint", str(ckpt)])
    assert code == 2 and "damaged checkpoint" in capsys.readouterr().err
    assert run_stream(str(model_file), [], checkpoint=tmp_path / "other").status == "end"  # nothing left locked


def test_more_secrets_are_masked():
    assert mask("http://u:p@ss@h:5000/api") == "http://u:***@h:5000/api"  # an unescaped @ in the password
    assert mask("https://TOKEN123@host/x") == "https://***@host/x"
    assert mask("https://h/x?access_token=a&client_secret=b&X-Amz-Signature=c&a=1") == \
        "https://h/x?access_token=***&client_secret=***&X-Amz-Signature=***&a=1"
    assert mask("file:///tmp/x@y") == "file:///tmp/x@y"


def test_observe_moves_an_integer_index_forward():
    frame = pd.DataFrame({"y": np.sin(np.arange(100) / 3)})
    model = NaiveForecaster(horizon=3).fit(frame.iloc[:90])
    model.observe([0.5])
    assert model.predict().index.tolist() == [91, 92, 93]
    model.update(frame.iloc[91:92])  # the next row after the observed one
    with pytest.raises(ValueError, match="is not after"):
        model.observe([0.1], time=91)
    model.observe([0.1], time=92)
    assert model.n_seen_ == 93
