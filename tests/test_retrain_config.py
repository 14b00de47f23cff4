"""The retrain TOML schema: each problem is a ConfigError naming the section and the key."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tsessm.retrain.config import ConfigError, config_from_dict

GOOD = {"data": {"path": "x.csv", "target": "load"}, "model": {"name": "naive", "params": {"horizon": 4}},
        "promotion": {"holdout": 10}, "registry": {"name": "m"}}


def _with(section: str, **keys) -> dict:
    raw = copy.deepcopy(GOOD)
    raw.setdefault(section, {}).update(keys)
    return raw


def test_a_good_config_fills_the_defaults(tmp_path):
    config = config_from_dict(_with("lock", dir="locks"), base_dir=tmp_path)
    assert config.data_path == (tmp_path / "x.csv").resolve() and config.lock_dir == (tmp_path / "locks").resolve()
    assert (config.target, config.columns, config.select, config.reader, config.missing) == (
        ["load"], ["load"], "newest", "pandas", "error")
    assert (config.margin, config.metric, config.eval_lookback, config.tuning) == (0.02, "mse", None, None)
    assert config_from_dict(_with("promotion", margin=0)).margin == 0.0  # an int is a float here


@pytest.mark.parametrize("raw, message", [
    ({**GOOD, "extra": {}}, "unknown section(s) ['extra']; sections are data, model, tuning, promotion, registry"),
    ({**GOOD, "data": 3}, "[data] must be a table"),
    (_with("promotion", holdot=3),
     "unknown key(s) ['holdot'] in [promotion]; known: holdout, lookback, margin, metric"),
    ({k: v for k, v in GOOD.items() if k != "registry"}, "[registry] name is required"),
    (_with("data", min_new_rows=True), "[data] min_new_rows must be int, got True"),  # TOML types are kept
    (_with("data", min_new_rows=-1), "[data] min_new_rows must be >= 0"),
    (_with("data", reader="arrow"), "[data] reader must be one of pandas, polars, got 'arrow'"),
    (_with("data", select=3), "[data] select must be str, got 3"),
    (_with("data", target=[]), "[data] target must be a column name or a non-empty list of them, got []"),
    (_with("data", columns=["temp"]), "[data] columns must include the target(s); missing ['load']"),
    (_with("model", name="xgb"), "[model] name must be one of "),
    (_with("model", params={"target": "x"}), "[model.params] target: set the target in [data] target"),
    (_with("tuning", n_trials=2), "[tuning] tunes essm or lstm, not 'naive'"),
    (_with("promotion", margin="2%"), "[promotion] margin must be int or float, got '2%'"),
    (_with("promotion", margin=1), "[promotion] margin is a relative improvement in [0, 1), got 1.0"),
    (_with("promotion", lookback=0), "[promotion] lookback must be >= 1"),
    (_with("promotion", holdout=2), "[promotion] holdout (2 rows) must be at least the horizon (4)"),
    (_with("registry", name="a b"), "[registry] name 'a b': use letters, digits"),
    (_with("lock", dir=1), "[lock] dir must be str, got 1"),
])
def test_each_problem_names_its_section_and_key(raw, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, path=Path("/etc/retrain.toml"))
    assert isinstance(err.value, ValueError)
    assert str(err.value).startswith(f"/etc/retrain.toml: {message}"), str(err.value)


def test_tuning_keys_are_checked_only_with_a_tuning_section():
    essm = {"name": "essm", "params": {"horizon": 4}}
    assert config_from_dict({**GOOD, "model": essm, "tuning": {}}).tuning is None
    tuned = config_from_dict({**GOOD, "model": essm, "tuning": {"n_trials": 2, "timeout": 1.5}})
    assert tuned.tuning == {"n_trials": 2, "timeout": 1.5}  # as written: unset keys are not filled in
    with pytest.raises(ConfigError, match=r"\[tuning\] n_trials is required"):
        config_from_dict({**GOOD, "model": essm, "tuning": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"\[tuning.space\] lr must be a non-empty list of choices"):
        config_from_dict({**GOOD, "model": essm, "tuning": {"n_trials": 2, "space": {"lr": []}}})
