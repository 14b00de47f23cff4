"""The accuracy benchmark on a small generated ECL file: cells, resume, reruns, report, tracking."""
import os

import mlflow
import numpy as np
import pandas as pd
import pytest

from tsessm.bench import accuracy
from tsessm.bench import report as accuracy_report
from tsessm.bench.report import render_markdown
from tsessm.bench.results import ResultsFile
from tsessm.cli import main as cli_main

TINY = ["--set", "essm.lookback=16", "--set", "essm.linear_skip=8", "--set", "essm.d_model=8", "--set", "essm.d_state=8",
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
    assert "### ECL, univariate (S)" in report and "| vs ARIMA | vs naive |" in report
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
    assert accuracy.cell_params(long, loaded)["lookback"] == 336
    assert accuracy.cell_params(short, loaded) == {"horizon": 24, "random_state": 0, "lookback": 96,
                                                      "epochs": 10, "verbose": 0}
    naive = accuracy.cell_params(accuracy.Cell("ETTh1", "S", 24, "naive"), loaded)
    assert naive == {"horizon": 24, "random_state": 0, "lookback": 96}  # naive has no verbose
    # --set wins over the file for its own parameters only; the file's overrides still apply
    with_sets = accuracy._apply_sets(loaded, ["essm.epochs=3", "essm.dt_min=0.02", "arima.order=1,0,0"])
    assert accuracy.cell_params(long, with_sets) == {"horizon": 720, "random_state": 0, "lookback": 336,
                                                        "epochs": 3, "dt_min": 0.02, "verbose": 0}
    assert accuracy.cell_params(accuracy.Cell("ETTh1", "S", 24, "arima"), with_sets)["order"] == (1, 0, 0)
    accuracy.check_config(with_sets)
    for typo, word in ((["esm.epochs=2"], "esm"), (["essm.epoch=2"], "epoch")):
        with pytest.raises(ValueError, match=word):
            accuracy.check_config(accuracy._apply_sets(loaded, typo))
    config.write_text('[[overrides]]\ndataset = "ETTh1"\nparams = {}\n')
    with pytest.raises(ValueError, match="override #1 needs model"):
        accuracy.load_config(config)


def _cells(essm_mse: float, seeds: tuple[float, ...] = (0.0,)) -> pd.DataFrame:
    """ETTh1 S 720 rows: the neural models once per seed offset, the others once (seed 0)."""
    rows = [("arima", "windowed", 0.15, 0), ("naive", "windowed", 0.30, 0)]
    for seed, offset in enumerate(seeds):
        rows += [("essm", "windowed", essm_mse + offset, seed), ("essm", "one-pass", 0.09 + offset, seed)]
    return pd.DataFrame([{"dataset": "ETTh1", "setting": "S", "horizon": 720, "model": m, "seed": seed,
                          "mode": mode, "mse": v, "mae": v + 0.1, "commit": "abcdef0123"}
                         for m, mode, v, seed in rows])


def test_report_marks_every_cell_against_s4_and_our_baselines():
    losing = render_markdown(_cells(0.2))
    assert "0.116 / 0.271" in losing  # S4's published number for ETTh1 S 720
    assert "| 0.450 | ✗ | ✗ | ✓ |" in losing  # one-pass / windowed, then vs S4, ARIMA, naive
    assert "**0.1500 / 0.250**" in losing  # the best windowed cell is bold
    assert "abcdef0" in losing and "NLinear's 0.080 / 0.226" in losing
    winning = render_markdown(_cells(0.1))
    assert "| 0.900 | ✓ | ✓ | ✓ |" in winning and "**0.1000 / 0.200**" in winning
    assert "ahead of S4 in 0 of 1 rows" in losing and "ahead of every baseline run here in 0 of 1" in losing
    assert "ahead of S4 in 1 of 1 rows" in winning and "ahead of every baseline run here in 1 of 1" in winning
    assert "One-pass within 5% of windowed in 1 of 1 univariate rows" in winning
    assert "One-pass within 5% of windowed in 1 of 1" in losing  # 0.09 streaming beats 0.2 windowed


def test_report_gives_the_seed_spread_and_claims_wins_only_beyond_it():
    # three seeds around 0.14: mean 0.14, sample std 0.01 -- 0.01 ahead of ARIMA's 0.15 is within the spread
    close = render_markdown(_cells(0.14, seeds=(-0.01, 0.0, 0.01)))
    assert "0.1400 ± 0.0100 (3) / 0.240" in close
    assert "| ✗ | ≈ | ✓ |" in close  # behind S4 (0.116), within ARIMA's spread, ahead of naive
    assert "ahead of every baseline run here in 0 of 1" in close
    clear = render_markdown(_cells(0.10, seeds=(-0.01, 0.0, 0.01)))
    assert "| ✓ | ✓ | ✓ |" in clear and "ahead of every baseline run here in 1 of 1" in clear
    assert accuracy_report.mark((0.10, 0.02), (0.11, 0.0)) == "≈"
    assert accuracy_report.mark((0.10, 0.0), (0.11, 0.005)) == "✓"
    assert accuracy_report.mark((0.12, 0.0), (0.11, 0.005)) == "✗"


def test_the_report_averages_only_the_seeds_of_the_newest_configuration():
    table = _cells(0.10, seeds=(0.0, 0.01, 0.02))
    table["params"] = [f'{{"random_state": {s}, "epochs": 10}}' for s in table["seed"]]
    table["finished"] = "2026-01-01T00:00:00"
    stale = (table["model"] == "essm") & (table["seed"] == 2)  # seed 2 is from an earlier configuration
    table.loc[stale, "params"] = '{"random_state": 2, "epochs": 5}'
    table.loc[~stale & (table["model"] == "essm") & (table["seed"] == 0), "finished"] = "2026-02-01T00:00:00"
    report = render_markdown(table)
    assert "0.1050 ± 0.0071 (2) / 0.205" in report  # seeds 0 and 1 only


def test_seeds_run_the_neural_cells_once_per_seed(tmp_path):
    cells = accuracy.grid(("ETTh1",), ("S",), (24,), ("essm", "lstm", "arima", "naive"), seeds=(0, 1, 2))
    assert [(c.model, c.seed) for c in cells] == [
        ("essm", 0), ("lstm", 0), ("arima", 0), ("naive", 0), ("essm", 1), ("lstm", 1), ("essm", 2), ("lstm", 2)]
    params = accuracy.cell_params(cells[4], {})
    assert params["random_state"] == 1 and cells[4].name == "ETTh1/S/H24/essm/seed1"
    # an old results file (no seed column) reads its seed from the parameters
    old = tmp_path / "old.csv"
    pd.DataFrame([{"dataset": "ETTh1", "setting": "S", "horizon": 24, "model": "essm", "mode": "windowed",
                   "mse": 0.1, "mae": 0.2, "params": '{"random_state": 2}', "params_key": "k"}]).to_csv(old, index=False)
    results = ResultsFile(old)
    assert results.read()["seed"].tolist() == [2]
    assert results.has(accuracy.Cell("ETTh1", "S", 24, "essm", 2), "k", ["windowed"])
    assert not results.has(accuracy.Cell("ETTh1", "S", 24, "essm", 0), "k", ["windowed"])
    # a new seed's rows join the file next to the other seed's instead of replacing them
    results.replace(accuracy.Cell("ETTh1", "S", 24, "essm", 0), [
        {"dataset": "ETTh1", "setting": "S", "horizon": 24, "model": "essm", "seed": 0, "mode": "windowed",
         "mse": 0.3, "mae": 0.4, "params": '{"random_state": 0}', "params_key": "j"}])
    assert sorted(results.read()["seed"]) == [0, 2]
    for bad in ("0,0", "-1", "a", ""):
        with pytest.raises(SystemExit):
            accuracy.main(["--seeds", bad, "--report-only", "--results", str(old)])
    # a deterministic model's row is seed 0 whatever random_state it records; no params -> seed 0
    pd.DataFrame([{"dataset": "ETTh1", "setting": "S", "horizon": 24, "model": m, "mode": "windowed", "mse": 0.1,
                   "mae": 0.2, "params": p, "params_key": "k"}
                  for m, p in (("naive", '{"random_state": 1}'), ("essm", None))]).to_csv(old, index=False)
    assert ResultsFile(old).read()["seed"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="random_state is set per cell by --seeds"):
        accuracy.check_config(accuracy._apply_sets({}, ["essm.random_state=3"]))


def test_seed_ensemble_averages_the_kept_models_forecasts(data_dir, tmp_path, capsys):
    results, models = tmp_path / "accuracy.csv", tmp_path / "models"
    args = ["--models", "essm,naive", "--seeds", "0,1", "--models-dir", str(models)]
    with pytest.raises(SystemExit):  # an ensemble needs the kept models
        _run(data_dir, results, "--models", "essm", "--seeds", "0,1", "--ensemble")
    assert _run(data_dir, results, *args) == 0  # the seeds' models kept; no ensemble asked for
    assert len(list(models.glob("ECL_S_4_essm_seed*.tsessm"))) == 2
    assert _run(data_dir, results, *args, "--ensemble") == 0
    table = pd.read_csv(results)
    ens = table[table["model"] == "essm_ens"].set_index("mode")
    assert sorted(ens.index) == ["one-pass", "windowed"] and '"members": [0, 1]' in ens["params"].iloc[0]
    # the ensemble's scores are those of the two kept models' mean forecast, recomputed here
    from tsessm.backtest import backtest
    from tsessm.forecasters.base import BaseForecaster
    source = accuracy.open_cell_data(accuracy.Cell("ECL", "S", 4, "essm"), 16, str(data_dir))
    members_names = [p.name for p in sorted(models.glob("ECL_S_4_essm_seed*.tsessm"))]
    members = [BaseForecaster.load(models / name) for name in members_names]
    forecasts = [backtest(m, source.history, test_start=source.test_start, train_rows=source.train_stop,
                          lookback=16).forecasts for m in members]
    actual = backtest(members[0], source.history, test_start=source.test_start, train_rows=source.train_stop,
                      lookback=16)
    z = actual.scaled
    assert ens.loc["windowed", "mse"] == pytest.approx(np.mean((z(np.mean(forecasts, axis=0)) - z(actual.actuals)) ** 2),
                                                       rel=1e-4)
    assert not np.allclose(forecasts[0], forecasts[1])  # two seeds, two different members
    # a done cell whose kept model is gone is run again, so the ensemble can be made
    (models / members_names[1]).unlink()
    capsys.readouterr()
    assert _run(data_dir, results, *args) == 0
    assert "ECL/S/H4/essm/seed1:" in capsys.readouterr().out and (models / members_names[1]).exists()
    report = (tmp_path / "accuracy.md").read_text()
    assert "Seed ensembles" in report
    capsys.readouterr()
    assert _run(data_dir, results, *args, "--ensemble") == 0  # nothing new: every cell and ensemble skipped
    assert capsys.readouterr().out.count("done, skipped") == 4


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
