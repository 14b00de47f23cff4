"""`tsessm` end to end on a small CSV, and its error handling."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tsessm.cli import main

TINY = ["--lookback", "16", "--d-model", "8", "--d-state", "8", "--n-layers", "1", "--epochs", "1",
        "--set", "steps_per_epoch=2", "--set", "verbose=0", "--no-track"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "series.csv"
    t = np.arange(300)
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=300, freq="h"),
                  "load": np.sin(t / 8) + 0.01 * t, "temp": np.cos(t / 5)}).to_csv(path, index=False)
    return path


def test_train_backtest_predict_round_trip(csv, tmp_path, capsys):
    model = tmp_path / "m.tsm"
    assert main(["train", str(csv), "--target", "load", "--horizon", "6", "--out", str(model), *TINY]) == 0
    assert model.is_file()
    metrics, plot = tmp_path / "bt.csv", tmp_path / "bt.png"
    assert main(["backtest", str(csv), "--model", str(model), "--mode", "both", "--plot", str(plot),
                 "--out", str(metrics), "--no-track"]) == 0
    table = pd.read_csv(metrics)
    assert set(table["mode"]) == {"windowed", "one-pass"} and sorted(table.step.unique()) == list(range(1, 7))
    assert plot.stat().st_size > 0
    update = tmp_path / "new.csv"
    pd.DataFrame({"date": pd.date_range("2024-01-13 12:00", periods=3, freq="h"),
                  "load": [1.0, 2.0, 3.0], "temp": [0.0, 0.1, 0.2]}).to_csv(update, index=False)
    forecast = tmp_path / "f.csv"
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--update", str(update), "--fh", "1,6", "--out", str(forecast)]) == 0
    out = pd.read_csv(forecast, index_col=0, parse_dates=True)
    assert list(out.columns) == ["load"]
    assert list(out.index) == [pd.Timestamp("2024-01-13 15:00"), pd.Timestamp("2024-01-13 20:00")]


def test_bad_input_is_one_line_and_exit_1(csv, tmp_path, capsys):
    code = main(["train", str(csv), "--target", "nope", "--out", str(tmp_path / "m.tsm"), *TINY])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err
    assert main(["predict", "--model", str(tmp_path / "missing.tsm")]) == 1
    assert "missing.tsm" in capsys.readouterr().err


def test_bad_arguments_exit_2_and_help_reads_well():
    bad = subprocess.run([sys.executable, "-m", "tsessm.cli", "train"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    helped = subprocess.run([sys.executable, "-m", "tsessm.cli", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for word in ("train", "backtest", "predict", "demo", "examples"):
        assert word in helped.stdout


def test_debug_shows_the_traceback(csv, tmp_path):
    with pytest.raises(ValueError, match="nope"):
        main(["--debug", "train", str(csv), "--target", "nope", "--out", str(tmp_path / "m.tsm"), *TINY])


def test_a_command_with_its_own_exit_status_keeps_it(tmp_path, capsys):
    # (every command's --help and bad arguments: tests/test_commands.py, over the registry)
    assert main(["retrain", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_help_and_argument_errors_load_neither_torch_nor_statsmodels():
    # what makes `tsessm --help` answer at once: every command's parser is light
    code = ("import sys, contextlib, io\n"
            "from tsessm.cli import main\n"
            "from tsessm.commands import COMMANDS\n"
            "every = [[c.NAME, '--help'] for c in COMMANDS] + [[c.NAME, '--bogus'] for c in COMMANDS]\n"
            "for argv in (['--help'], *every, ['bench', 'speed', '--help'], ['bench', 'accuracy', '--help'],\n"
            "             ['stream', '--model', 'm', '--input', '-', '--checkpoint', 'c', '--checkpoint-every', '0']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            "heavy = sorted(m for m in ('torch', 'statsmodels', 'mlflow', 'optuna', 'pandas') if m in sys.modules)\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
