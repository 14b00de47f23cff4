"""Equal-budget studies of the accuracy grid (tsessm.bench.studies) on a small generated ECL file."""
import json

import numpy as np
import pandas as pd
import pytest

from tsessm.bench import studies
from tsessm.bench.accuracy import load_config
from tsessm.bench.options import DEFAULT_CONFIG
from tsessm.tuning.space import GRIDS


def test_study_params_start_from_the_model_defaults_and_pin_the_lookback():
    config = load_config(DEFAULT_CONFIG)
    for model in studies.STUDY_MODELS:
        fixed, space = studies.study_params(model, config)
        assert fixed["lookback"] == studies.PINNED["lookback"]
        assert not (set(fixed) - {"lookback"}) & (set(GRIDS[model]) | set(space) | {"lr", "dropout", "epochs"})
        assert fixed["difference"] is True  # the config default both neural models share
    assert set(studies.EXTRA_SPACE["lstm"]) <= set(studies.EXTRA_SPACE["essm"])  # the LSTM gets the skip path too


@pytest.fixture()
def data_dir(tmp_path):
    t = np.arange(300)
    rng = np.random.default_rng(0)
    pd.DataFrame({"date": pd.date_range("2016-07-01", periods=300, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
                  "MT_320": np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(300)}
                 ).to_csv(tmp_path / "ECL.csv", index=False)
    return tmp_path


def test_every_model_gets_the_same_budget_and_the_trials_are_written(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(studies, "PINNED", {"lookback": 16, "d_model": 8})
    monkeypatch.setattr(studies, "EXTRA_SPACE", {"essm": {"linear_skip": [0, 16], "d_state": [8], "n_layers": [1]},
                                                 "lstm": {"linear_skip": [0, 16], "n_layers": [1]}})
    out = tmp_path / "studies"
    argv = ["--datasets", "ECL", "--horizons", "4", "--n-trials", "2", "--epochs", "1", "--out", str(out),
            "--data-dir", str(data_dir), "--set", "steps_per_epoch=2"]
    assert studies.main(argv) == 0
    for model in ("essm", "lstm"):
        trials = pd.read_csv(out / f"ECL_S_4_{model}.csv")
        assert len(trials) == 2 and set(trials["n_trials"]) == {2} and set(trials["epochs"]) == {1}
        params = [json.loads(p) for p in trials["params"]]
        assert all(p["lookback"] == 16 and p["epochs"] == 1 and p["horizon"] == 4 and p["steps_per_epoch"] == 2
                   for p in params)
        assert np.isfinite(trials.loc[trials["state"] == "COMPLETE", "value"]).all()
    summary = (out / "studies.md").read_text()
    assert "accuracy-ECL-S-4-essm" in summary and "accuracy-ECL-S-4-lstm" in summary
    assert "--set lstm.lookback=16" in summary and "--set essm.difference=true" in summary
    # a second call resumes: the studies hold their trials, none is added
    assert studies.main(argv) == 0
    assert len(pd.read_csv(out / "ECL_S_4_essm.csv")) == 2
    # ... but not on other terms: its trials would not compare
    with pytest.raises(SystemExit) as exc:
        studies.main([*argv[:-1], "steps_per_epoch=3"])
    assert exc.value.code == 2 and "was run with" in capsys.readouterr().err
    assert len(pd.read_csv(out / "ECL_S_4_essm.csv")) == 2
    capsys.readouterr()


def test_bad_arguments_are_refused(data_dir, tmp_path):
    with pytest.raises(SystemExit) as exc:
        studies.main(["--datasets", "ECL", "--models", "arima", "--out", str(tmp_path), "--data-dir", str(data_dir)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        studies.main(["--datasets", "ECL", "--set", "steps_per_epoch", "--out", str(tmp_path), "--data-dir", str(data_dir)])
