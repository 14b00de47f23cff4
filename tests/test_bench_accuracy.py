"""The accuracy benchmark on a small generated ECL file: cells, resume, reruns, report, tracking."""
import os

import mlflow
import numpy as np
import pandas as pd
import pytest

from tsessm.bench import accuracy
from tsessm.bench.report import render_markdown
from tsessm.cli import main as cli_main

TINY = ["--set", "essm.lookback=16", "--set", "essm.d_model=8", "--set", "essm.d_state=8",
        "--set", "essm.n_layers=1", "--set", "essm.epochs=1", "--set", "essm.steps_per_epoch=2",
        "--set", "arima.order=1,0,0", "--set", "arima.lookback=16", "--set", "naive.lookback=16"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A user-supplied ECL.csv in the Informer layout (date, MT_*, the target MT_320 last)."""
    folder = tmp_path_factory.mktemp("ecl")
    t = np.arange(400)
    rng = np.random.default_rng(0)
    pd.DataFrame({
        "date": pd.date_range("2016-07-01", periods=400, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
        "MT_001": np.cos(t / 5) + 0.1 * rng.standard_normal(400),
        "MT_320": np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(400),
    }).to_csv(folder / "ECL.csv", index=False)
    return folder


def _run(data_dir, results, *extra):
    return accuracy.main(["--datasets", "ECL", "--settings", "S", "--horizons", "4", "--models", "essm,arima,naive",
                          "--data-dir", str(data_dir), "--results", str(results), "--no-track", *TINY, *extra])


def test_cells_resume_and_rerun_only_what_changed(data_dir, tmp_path, capsys):
    results = tmp_path / "accuracy.csv"
    assert _run(data_dir, results) == 0
    table = pd.read_csv(results)
    got = sorted(zip(table["model"], table["mode"]))
    assert got == [("arima", "windowed"), ("essm", "one-pass"), ("essm", "windowed"), ("naive", "windowed")]
    assert np.isfinite(table[["mse", "mae"]].to_numpy()).all() and (table["mse"] > 0).all()
    assert set(table["dataset"]) == {"ECL"} and set(table["horizon"]) == {4}
    # the naive forecast's scaled MSE, recomputed by hand on the same test windows
    frame = pd.read_csv(data_dir / "ECL.csv")["MT_320"].to_numpy()
    n_train, n_test = int(400 * 0.7), int(400 * 0.2)
    mean, std = frame[:n_train].mean(), frame[:n_train].std()
    z = (frame - mean) / std
    origins = np.arange(400 - n_test - 1, 400 - 4)
    errors = [(z[o + 1: o + 5] - z[o]) ** 2 for o in origins]
    naive = table[table["model"] == "naive"].iloc[0]
    assert naive["mse"] == pytest.approx(np.mean(errors), rel=1e-4)
    report = (tmp_path / "accuracy.md").read_text()
    assert "### ECL, univariate (S)" in report and "eSSM vs ours" in report
    assert (tmp_path / "accuracy_ECL.png").stat().st_size > 1000
    capsys.readouterr()

    # a second run finds every cell done and leaves the file as it was
    before = results.read_bytes()
    assert _run(data_dir, results) == 0
    assert capsys.readouterr().out.count("done, skipped") == 3
    assert results.read_bytes() == before

    # a changed eSSM parameter reruns the eSSM cell only
    assert _run(data_dir, results, "--set", "essm.epochs=2") == 0
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 2 and "ECL/S/H4/essm:" in out
    after = pd.read_csv(results)
    assert len(after) == 4
    assert '"epochs": 2' in after[after["model"] == "essm"]["params"].iloc[0]
    pd.testing.assert_frame_equal(after[after["model"] != "essm"].reset_index(drop=True),
                                  table[table["model"] != "essm"].reset_index(drop=True), check_dtype=False)


def test_missing_dataset_is_skipped_and_bad_arguments_are_errors(tmp_path, capsys):
    results = tmp_path / "r.csv"
    assert accuracy.main(["--datasets", "ECL", "--data-dir", str(tmp_path), "--results", str(results),
                          "--no-track"]) == 0
    assert "ECL: data file not found, skipped" in capsys.readouterr().out and not results.exists()
    for bad, word in ((["--settings", "X"], "setting"), (["--models", "prophet"], "prophet"),
                      (["--datasets", "nope"], "nope"), (["--set", "epochs=2"], "MODEL.NAME=VALUE")):
        with pytest.raises(SystemExit) as done:
            accuracy.main([*bad, "--results", str(results), "--no-track"])
        assert done.value.code == 2 and word in capsys.readouterr().err
    assert not results.exists()


def test_grid_and_config_rules(tmp_path):
    cells = accuracy.grid(("ETTh1",), ("S", "M"), None, ("essm", "arima"))
    assert [c.horizon for c in cells if c.setting == "S" and c.model == "essm"] == [24, 48, 168, 336, 720]
    assert not [c for c in cells if c.model == "arima" and c.setting == "M"]  # ARIMA is univariate only
    config = tmp_path / "c.toml"
    config.write_text('[models.essm]\nlookback = 96\nepochs = 10\n'
                      '[[overrides]]\nmodel = "essm"\ndataset = ["ETTh1", "ETTh2"]\nhorizon = 720\n'
                      'params = { lookback = 336 }\n')
    loaded = accuracy.load_config(config)
    long, short = accuracy.Cell("ETTh2", "S", 720, "essm"), accuracy.Cell("ETTh2", "S", 24, "essm")
    assert accuracy.cell_params(long, loaded, 0)["lookback"] == 336
    assert accuracy.cell_params(short, loaded, 0) == {"horizon": 24, "random_state": 0, "lookback": 96,
                                                      "epochs": 10, "verbose": 0}
    naive = accuracy.cell_params(accuracy.Cell("ETTh1", "S", 24, "naive"), loaded, 0)
    assert naive == {"horizon": 24, "random_state": 0, "lookback": 96}  # naive has no verbose
    # --set wins over the file for its own parameters only; the file's overrides still apply
    with_sets = accuracy._apply_sets(loaded, ["essm.epochs=3", "essm.dt_min=0.02", "arima.order=1,0,0"])
    assert accuracy.cell_params(long, with_sets, 0) == {"horizon": 720, "random_state": 0, "lookback": 336,
                                                        "epochs": 3, "dt_min": 0.02, "verbose": 0}
    assert accuracy.cell_params(accuracy.Cell("ETTh1", "S", 24, "arima"), with_sets, 0)["order"] == (1, 0, 0)
    accuracy.check_config(with_sets)
    for typo, word in ((["esm.epochs=2"], "esm"), (["essm.epoch=2"], "epoch")):
        with pytest.raises(ValueError, match=word):
            accuracy.check_config(accuracy._apply_sets(loaded, typo))
    config.write_text('[[overrides]]\ndataset = "ETTh1"\nparams = {}\n')
    with pytest.raises(ValueError, match="override #1 needs model"):
        accuracy.load_config(config)


def _cells(essm_mse: float) -> pd.DataFrame:
    rows = [("essm", "windowed", essm_mse), ("essm", "one-pass", 0.09), ("arima", "windowed", 0.15),
            ("naive", "windowed", 0.30)]
    return pd.DataFrame([{"dataset": "ETTh1", "setting": "S", "horizon": 720, "model": m, "mode": mode,
                          "mse": v, "mae": v + 0.1, "commit": "abcdef0123"} for m, mode, v in rows])


def test_report_marks_every_cell_against_s4_and_our_baselines():
    losing = render_markdown(_cells(0.2))
    assert "0.116 / 0.271" in losing  # S4's published number for ETTh1 S 720
    assert "no (0.200 > 0.116)" in losing and "loses to ARIMA" in losing
    assert "**0.150 / 0.250**" in losing  # the best windowed cell is bold
    assert "abcdef0" in losing and "NLinear's 0.080 / 0.226" in losing
    winning = render_markdown(_cells(0.1))
    assert "| **beats** | beats ARIMA, naive |" in winning and "**0.100 / 0.200**" in winning
    assert "beats S4 in 0 of 1 rows" in losing and "beats every baseline run here in 0 of 1" in losing
    assert "beats S4 in 1 of 1 rows" in winning and "beats every baseline run here in 1 of 1" in winning


def test_bench_command_tracks_each_cell_in_mlflow(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns.db")
    monkeypatch.chdir(tmp_path)
    try:
        assert cli_main(["bench", "accuracy", "--datasets", "ECL", "--settings", "S", "--horizons", "4",
                         "--models", "naive", "--data-dir", str(data_dir), "--results", "r.csv",
                         "--experiment", "bench-test", *TINY]) == 0
        runs = mlflow.search_runs(experiment_names=["bench-test"])
        assert runs["tags.mlflow.runName"].tolist() == ["ECL/S/H4/naive"]
        table = pd.read_csv(tmp_path / "r.csv", dtype={"mlflow_run_id": str})
        assert table["mlflow_run_id"].tolist() == runs["run_id"].tolist()
        assert runs["metrics.windowed_mse"].iloc[0] == pytest.approx(table["mse"].iloc[0], rel=1e-5)
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment leaves it behind for later tests
