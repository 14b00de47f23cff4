"""The main job (`tsessm demo`) at its default size on the project's data, and the first-minute details:
stage times, the table, the files it writes, the thread choice, the early-stopping line."""
from __future__ import annotations


import numpy as np
import pandas as pd

from tsessm import ESSMForecaster, threads
from tsessm.cli import main


def test_demo_at_its_default_size_prints_stages_and_a_ranked_table_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--no-track", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in ("data:", "H=24 essm fit", "H=24 lstm fit", "H=24 arima fit", "H=24 naive backtests", "wall time:"):
        assert stage in printed, stage
    table = pd.read_csv(out / "metrics.csv", keep_default_na=False).set_index(["horizon", "model", "mode"])
    assert set(table.index.get_level_values("model")) == {"essm", "lstm", "arima", "naive", "linear"}
    assert set(table.index.get_level_values("mode")) == {"windowed", "one-pass"}
    for mode in ("windowed", "one-pass"):
        rows = table.xs(mode, level="mode")
        assert (rows["best"] == "*").sum() == 1 and rows.loc[rows["best"] == "*", "mse"].iloc[0] == rows["mse"].min()
    assert np.isfinite(table[["mse", "mae"]].to_numpy()).all() and (table["mse"] < 0.1).all()
    # 90 % intervals: the one-pass ones recalibrate online, so they cover close to nominal
    for model in ("essm", "arima"):
        assert 0.85 < table.loc[(24, model, "one-pass"), "coverage"] < 0.95
    assert "coverage" in printed and "width" in printed
    assert (out / "forecast.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.glob("*.tsm")) == [f"{m}-H24.tsm" for m in ("arima", "essm", "linear", "lstm",
                                                                                 "naive")]
    assert " 0.0000" not in printed and ".0000 " not in printed.split("test split")[1]  # no 14.0000-style seconds


def test_a_failed_demo_leaves_no_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    import tsessm.demo

    def broken(*args, **kwargs):
        raise ValueError("plot failed")
    monkeypatch.setattr(tsessm.demo, "plot_backtest", broken)
    assert main(["demo", "--no-track", "--out-dir", str(out), "--models", "naive"]) == 1
    assert "plot failed" in capsys.readouterr().err and not out.exists()


def test_missing_data_names_the_command_line_flag(tmp_path, monkeypatch, capsys):
    from tsessm import datasets

    monkeypatch.setattr(datasets, "search_dirs", lambda data_dir=None: [tmp_path])  # a machine without the data
    assert main(["demo", "--no-track", "--out-dir", str(tmp_path / "d"), "--data-dir", str(tmp_path)]) == 1
    assert "--data-dir" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_threads_follow_the_free_cores_unless_the_user_chose(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        for name in threads.USER_SETTINGS:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(threads, "_cores", lambda: 2)
        monkeypatch.setattr(threads, "_others_running", lambda: 1)  # one CPU-bound neighbour
        assert threads.choose_torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(threads, "_others_running", lambda: 0)
        assert threads.choose_torch_threads() == 2
        monkeypatch.setattr(threads, "_others_running", lambda: 7)
        assert threads.free_cores() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.choose_torch_threads() is None  # the user's choice stands
        monkeypatch.setenv("TSESSM_THREADS", "1")
        assert threads.choose_torch_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert threads._others_running() >= 0 and threads._cores() >= 1


def test_early_stopping_says_so(capsys, monkeypatch):
    t = np.arange(400)
    y = pd.DataFrame({"y": np.sin(t / 5)}, index=pd.date_range("2024-01-01", periods=400, freq="h"))
    losses = iter(np.linspace(1.0, 2.0, 10))  # never improves after the first epoch
    monkeypatch.setattr(ESSMForecaster, "_validation_loss", lambda self, *a: float(next(losses)))
    model = ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=8, n_layers=1, epochs=10, steps_per_epoch=2,
                           patience=2, verbose=1, random_state=0).fit(y)
    printed = capsys.readouterr()
    assert len(model.history_) == 3
    assert "early stopping after epoch 3: no validation improvement for 2 epochs; keeping epoch 1" in printed.out + printed.err


def test_a_bad_thread_setting_falls_back_and_a_demo_with_no_model_says_so(monkeypatch, capsys, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("TSESSM_THREADS", "abc")
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set, it would leave torch's threads alone
        monkeypatch.setattr(threads, "_others_running", lambda: 0)
        assert threads.choose_torch_threads() == min(torch.get_num_threads(), threads._cores())
        assert "TSESSM_THREADS='abc' is not a number" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
    monkeypatch.delenv("TSESSM_THREADS")
    assert main(["demo", "--no-track", "--models", "prophet", "--out-dir", str(tmp_path / "d")]) == 1
    assert "no model ran" in capsys.readouterr().err and not (tmp_path / "d").exists()
