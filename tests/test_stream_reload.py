"""`tsessm stream --reload-every`: hand-over to a newly promoted registry version mid-stream."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

import tsessm
from tsessm import registry, tracking
from tsessm.stream import run_stream
from tsessm.stream.cli import main
from tsessm.stream.reload import History, SwitchRefused, catch_up, parse_duration

N_FIT, N_NEW = 300, 60
NAME, REFUSE = "stream-reload", "stream-reload-refuse"


def _data() -> pd.DataFrame:
    t = np.arange(N_FIT + N_NEW + 20)
    index = pd.date_range("2024-01-01", periods=len(t), freq="h", name="time")
    return pd.DataFrame({"load": np.sin(t / 8) + 0.01 * t, "temp": np.cos(t / 5)}, index=index)


def _essm() -> tsessm.ESSMForecaster:
    return tsessm.ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1,
                                 steps_per_epoch=2, verbose=0, random_state=0, device="cpu")


def records(frame):
    return [{"time": ts.isoformat(), **{c: float(v) for c, v in row.items()}} for ts, row in frame.iterrows()]


def reference(model, frame):
    """update + predict row by row: the forecast (dict per target) after each row of `frame`."""
    model = copy.deepcopy(model)
    out = []
    for ts in frame.index:
        model.update(frame.loc[[ts]])
        forecast = model.predict()
        out.append({c: forecast[c].to_numpy() for c in forecast.columns})
    return out


def assert_lines(lines, expected, frame):
    assert [line["time"] for line in lines] == [ts.isoformat() for ts in frame.index]
    for line, want in zip(lines, expected):
        assert list(line["forecast"]) == list(want)
        for col, values in want.items():
            np.testing.assert_allclose(line["forecast"][col], values, atol=1e-5, rtol=0)


def manifest(directory):
    return json.loads((Path(directory) / "checkpoint.json").read_text())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A temp sqlite registry: NAME v1 naive (champion), v2 eSSM, both fitted on the same history;
    REFUSE v1 naive (champion), v2 seasonal naive fitted 40 rows further (ahead of the stream
    until its 41st row), v3 naive fitted on a history ending 50 rows before the stream."""
    root = tmp_path_factory.mktemp("reload")
    data = _data()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlruns.db")
        mp.chdir(root)
        models = {
            NAME: [tsessm.NaiveForecaster(horizon=4).fit(data.iloc[:N_FIT]), _essm().fit(data.iloc[:N_FIT])],
            REFUSE: [tsessm.NaiveForecaster(horizon=4).fit(data.iloc[:N_FIT]),
                     tsessm.NaiveForecaster(horizon=4, season_length=3).fit(data.iloc[:N_FIT + 40]),
                     tsessm.NaiveForecaster(horizon=4).fit(data.iloc[:N_FIT - 50])],
        }
        with tracking.start_run(True, "stream-reload", run_name="log") as tracker:
            for name, fitted in models.items():
                for version, model in enumerate(fitted, start=1):
                    info = tracker.log_model(model, registered_model_name=name, name=f"m{version}")
                    assert info.registered_model_version == version
                registry.promote(name, 1)
        try:
            yield {"root": root, "data": data, "new": data.iloc[N_FIT:N_FIT + N_NEW], "models": models}
        finally:
            mlflow.set_tracking_uri(None)


class Crash(Exception):
    pass


def test_promoted_version_takes_over_mid_stream_and_a_restart_keeps_it(store, tmp_path, capsys):
    new, (v1, v2) = store["new"], store["models"][NAME]
    ckpt, lines, log = tmp_path / "ckpt", [], []
    registry.promote(NAME, 1)

    def sink(line):
        lines.append(json.loads(json.dumps(line)))
        if len(lines) == 20:
            registry.promote(NAME, 2)  # the retraining job promotes a new champion
        if len(lines) == 30:
            raise Crash  # the process dies after the switch, before any later checkpoint

    with pytest.raises(Crash):
        run_stream(f"models:/{NAME}@champion", records(new), sink, checkpoint=ckpt, checkpoint_every=1000,
                   reload_every_records=10, log=log.append)
    # the switch: one log line, and a checkpoint written right after it with the new version
    assert len(log) == 1 and "version 1 -> 2" in log[0] and new.index[19].isoformat() in log[0], log
    state = manifest(ckpt)
    assert state["model_source"] == f"models:/{NAME}@champion" and state["model_version"] == 2
    assert state["counters"]["applied"] == 20 and "history" in state["attachments"]
    assert tsessm.BaseForecaster.load(ckpt / state["model_file"]).last_index_[0] == new.index[19]
    # before the switch: v1's update + predict; after: v2 brought up to date with every row so far
    assert_lines(lines[:20], reference(v1, new)[:20], new.iloc[:20])
    assert_lines(lines[20:], reference(v2, new)[20:30], new.iloc[20:30])
    old_model = reference(v1, new)
    assert all(np.abs(np.array(line["forecast"]["load"]) - old_model[i]["load"]).max() > 1e-3
               for i, line in enumerate(lines[20:], start=20))  # the models tell apart
    assert all(len(line["forecast"]["load"]) == 4 for line in lines)

    # restart (the CLI, a CSV of every row): resumes from the switch checkpoint with v2
    csv_path, out = tmp_path / "new.csv", tmp_path / "out.jsonl"
    new.reset_index().to_csv(csv_path, index=False, float_format="%.17g")
    capsys.readouterr()
    code = main(["--model", f"models:/{NAME}@champion", "--input", str(csv_path), "--output", str(out),
                 "--checkpoint", str(ckpt), "--reload-every", "1h"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "(resumed)" in err and "model version 2" in err and "20 replays skipped" in err
    restarted = [json.loads(line) for line in out.read_text().splitlines()]
    assert_lines(restarted, reference(v2, new)[20:], new.iloc[20:])
    # deduplicated by (id, time), every input time appears exactly once; repeats agree
    seen = {}
    for line in lines + restarted:
        key = (line["id"], line["time"])
        if key in seen:
            for col in ("load", "temp"):
                np.testing.assert_allclose(line["forecast"][col], seen[key]["forecast"][col], atol=1e-6)
        seen.setdefault(key, line)
    assert sorted(t for _, t in seen) == [ts.isoformat() for ts in new.index]
    final = manifest(ckpt)
    assert final["model_version"] == 2 and final["counters"]["applied"] == N_NEW
    assert tsessm.BaseForecaster.load(ckpt / final["model_file"]).n_seen_ == N_FIT + N_NEW
    # the buffer of recent rows survived the restart (20 restored + 40 new), one file per checkpoint
    assert sorted(p.name for p in ckpt.glob("*.bin")) == [final["attachments"]["history"]]
    kept = History.loads((ckpt / final["attachments"]["history"]).read_bytes(), 1000).series[None]
    assert [t for t, _ in kept] == list(new.index)


def test_a_version_that_cannot_reach_the_stream_position_is_refused(store):
    new, (v1, v2, _) = store["new"], store["models"][REFUSE]
    lines, log = [], []

    def sink(line):
        lines.append(json.loads(json.dumps(line)))
        if len(lines) == 5:
            registry.promote(REFUSE, 3)  # data ends 55 steps back; only 10 rows are kept
        if len(lines) == 20:
            registry.promote(REFUSE, 2)  # data ends at the stream's 40th row: ahead until row 41

    result = run_stream(f"models:/{REFUSE}@champion", records(new), sink, reload_every=1e-6, history_rows=10,
                        log=log.append)  # a wall-clock check before every record
    assert result.status == "end" and result.counters.applied == N_NEW
    assert len(log) == 3, log  # one warning per refused version, then the switch
    assert "version 1 to 3" in log[0] and "gap" in log[0] and "--history-rows 10" in log[0]
    assert "version 1 to 2" in log[1] and "not before the stream position" in log[1]
    assert "version 1 -> 2" in log[2] and new.index[40].isoformat() in log[2]
    assert result.model_version == 2 and [s["to"] for s in result.switches] == [2]
    # v1 kept serving through both refusals; v2 took over once the stream had passed its data
    assert_lines(lines[:41], reference(v1, new)[:41], new.iloc[:41])
    assert_lines(lines[41:], reference(v2, new.iloc[40:])[1:], new.iloc[41:])


def test_panel_catch_up_and_refusals():
    data = _data()
    long = pd.concat([data.iloc[:N_FIT].reset_index().assign(unique_id=k, load=data.load.to_numpy()[:N_FIT] * (k + 1))
                      for k in (0, 1)]).rename(columns={"time": "ds"})
    old = tsessm.PanelForecaster(_essm()).fit(long)
    fresh = tsessm.PanelForecaster(_essm().set_params(random_state=1)).fit(long)
    from tsessm.stream.adapters import PanelAdapter

    adapter, history = PanelAdapter(old), History(1000, ["load", "temp"])
    times = pd.date_range(data.index[N_FIT], periods=5, freq="h")
    for t in times:  # the stream feeds series 1 only (as text, like a CSV id)
        values = {"load": 1.0, "temp": 0.5}
        adapter.apply("1", t, values)
        history.add("1", t, values)
    new, rows = catch_up(adapter, copy.deepcopy(fresh), history, ["1"])
    assert rows == 5 and new.last_time("1") == times[-1] and new.last_time(0) == data.index[N_FIT - 1]
    expected = copy.deepcopy(fresh).update(pd.DataFrame({"unique_id": 1, "ds": times, "load": 1.0, "temp": 0.5}))
    np.testing.assert_allclose(new.forecast("1")["load"], expected.predict(ids=[1])["load"], atol=1e-5)
    with pytest.raises(SwitchRefused) as exc:  # a buffer too short for the gap
        catch_up(adapter, copy.deepcopy(fresh), History(3, ["load", "temp"]), ["1"])
    assert not exc.value.retry and "gap" in str(exc.value)
    with pytest.raises(SwitchRefused) as exc:  # already at the stream position
        catch_up(adapter, new.panel, history, ["1"])
    assert exc.value.retry


def test_durations_and_setup_errors(store, tmp_path, capsys):
    assert [parse_duration(d) for d in ("30s", "5m", "1h", "1h30m", "250ms", "2", 1.5)] == \
        [30, 300, 3600, 5400, 0.25, 2, 1.5]
    for bad in ("", "5x", "m", "-1s", "0"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    registry.promote(NAME, 1)
    model = tmp_path / "model.tsm"
    store["models"][NAME][0].save(model)
    base = ["--input", str(tmp_path / "in.csv"), "--checkpoint", str(tmp_path / "c")]
    store["new"].iloc[:3].reset_index().to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(model), *base, "--reload-every", "soon"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert main(["--model", str(model), *base, "--reload-every", "5m"]) == 2
    assert "models:/NAME@champion" in capsys.readouterr().err
    assert main(["--model", f"models:/{NAME}/1", *base, "--reload-every", "5m"]) == 2
    assert main(["--model", f"models:/{NAME}@nobody", *base]) == 2
    assert "nobody" in capsys.readouterr().err
    # without reloading, an alias is still resolved and its version recorded
    assert main(["--model", f"models:/{NAME}@champion", *base]) == 0
    assert manifest(tmp_path / "c")["model_version"] == 1 and "attachments" not in manifest(tmp_path / "c")
