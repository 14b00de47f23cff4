"""The public forecaster contract (ARCHITECTURE.md, "Public contract"), for every forecaster.

Add a forecaster by appending a `Case` to CASES: every parametrised test then runs on it.
"""
from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import tsessm
from tsessm import (
    ARIMAForecaster,
    BaseForecaster,
    ESSMForecaster,
    LinearForecaster,
    LSTMForecaster,
    NaiveForecaster,
    StreamingNotSupported,
)

H = 4
LOOKBACK = 16
T = 300
N_FIT = 240  # rows used by fit; the rest feed update()

ESSM_KW = dict(
    horizon=H,
    lookback=LOOKBACK,
    d_model=8,
    d_state=8,
    n_layers=2,
    epochs=1,
    steps_per_epoch=2,
    batch_size=8,
    dropout=0.0,
    verbose=0,
    random_state=0,
    device="cpu",
)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[..., BaseForecaster]
    min_rows: Callable[[BaseForecaster], int]  # rows fit() needs
    short_kw: dict = field(default_factory=dict)  # settings for the too-short test


def make_essm(**kw: Any) -> ESSMForecaster:
    return ESSMForecaster(**{**ESSM_KW, **kw})


def make_naive(**kw: Any) -> NaiveForecaster:
    return NaiveForecaster(**{"horizon": H, **kw})


def make_lstm(**kw: Any) -> LSTMForecaster:
    lstm_kw = {k: v for k, v in ESSM_KW.items() if k not in ("d_state",)}
    return LSTMForecaster(**{**lstm_kw, "n_layers": 1, **kw})


def make_arima(**kw: Any) -> ARIMAForecaster:
    return ARIMAForecaster(**{"horizon": H, "order": (1, 0, 0), "verbose": 0, **kw})


CASES = [
    Case("essm", make_essm, lambda m: m.lookback + m.horizon + 1),
    Case("essm-levels", lambda **kw: make_essm(**{"difference": False, **kw}), lambda m: m.lookback + m.horizon + 1),
    Case("essm-linear-skip", lambda **kw: make_essm(**{"linear_skip": 8, **kw}), lambda m: m.lookback + m.horizon + 1),
    Case("essm-revin", lambda **kw: make_essm(**{"revin": 12, **kw}), lambda m: m.lookback + m.horizon + 1),
    Case("naive", make_naive, lambda m: m.season_length, short_kw={"season_length": 6}),
    Case("lstm", make_lstm, lambda m: m.lookback + m.horizon + 1),
    Case("arima", make_arima, lambda m: m.min_rows()),
    Case("linear", lambda **kw: LinearForecaster(**{"horizon": H, "lookback": LOOKBACK, **kw}),
         lambda m: m.lookback + m.horizon),
]

KINDS = ["pandas", "pandas-series", "polars", "numpy-2d", "numpy-1d"]


# ----------------------------------------------------------------------------- data helpers


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    t = np.arange(T)
    return pd.DataFrame(
        {
            "a": np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=T),
            "b": 3.0 + np.cos(2 * np.pi * t / 12) + 0.2 * rng.normal(size=T),
            "x": rng.normal(size=T),
        },
        index=pd.date_range("2024-01-01", periods=T, freq="h"),
    )


DF = _frame()
Y = DF[["a", "b"]]
X = DF[["x"]]


def as_kind(df: pd.DataFrame, kind: str) -> Any:
    if kind == "pandas":
        return df
    if kind == "pandas-series":
        return df["a"]
    if kind == "polars":
        return pl.from_pandas(df.reset_index(names="time"))
    if kind == "numpy-2d":
        return df.to_numpy()
    if kind == "numpy-1d":
        return df["a"].to_numpy()
    raise AssertionError(kind)


def columns_for(kind: str) -> list[str]:
    return {"pandas": ["a", "b"], "polars": ["a", "b"], "pandas-series": ["a"], "numpy-2d": ["0", "1"],
            "numpy-1d": ["0"]}[kind]


def vals(out: Any) -> np.ndarray:
    """Forecast values as a (steps, k) float array, whatever the output kind."""
    if isinstance(out, pl.DataFrame):
        return out.drop("time").to_numpy()
    if isinstance(out, (pd.DataFrame, pd.Series)):
        return out.to_numpy().reshape(len(out), -1)
    return np.asarray(out).reshape(len(out), -1)


def history(model: BaseForecaster, df: pd.DataFrame) -> np.ndarray:
    """Rows of df in the model's column order (what forecast_one_pass takes)."""
    return df[model.columns_].to_numpy(copy=True)


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request) -> Case:
    return request.param


@pytest.fixture(scope="module")
def fitted():
    """fitted(case, kind="pandas", **params): a fresh copy of a model fitted on the first N_FIT rows.

    Each (case, kind, params) is fitted once per module; tests get deep copies, so they may mutate
    (update, refit) what they receive.
    """
    cache: dict = {}

    def get(case: Case, kind: str = "pandas", **kw: Any) -> BaseForecaster:
        key = (case.name, kind, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = case.make(**kw).fit(as_kind(Y.iloc[:N_FIT], kind))
        return copy.deepcopy(cache[key])

    yield get
    cache.clear()


# ----------------------------------------------------------------------------- sklearn conventions


def test_get_set_params_and_clone(case):
    est = case.make()
    params = est.get_params()
    assert {"horizon", "target", "random_state"} <= set(params)
    assert params["horizon"] == H
    twin = clone(est)
    assert twin is not est
    assert twin.get_params() == params
    assert est.set_params(horizon=H + 2, target="a") is est
    assert est.get_params()["horizon"] == H + 2 and est.get_params()["target"] == "a"
    assert clone(est).get_params()["horizon"] == H + 2
    assert repr(est).startswith(type(est).__name__)


def test_clone_of_fitted_model_is_unfitted(case, fitted):
    model = fitted(case)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        twin.predict()


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True, None])
def test_init_only_stores_fit_validates_horizon(case, bad):
    est = case.make(horizon=bad)  # must not raise
    assert est.get_params()["horizon"] is bad
    with pytest.raises(ValueError, match="horizon"):
        est.fit(Y)
    assert not hasattr(est, "n_seen_")


ESSM_BAD_PARAMS = [
    ("lookback", {"lookback": 0}),
    ("epochs", {"epochs": 0}),
    ("batch_size", {"batch_size": 0}),
    ("lr", {"lr": 0.0}),
    ("dropout", {"dropout": 1.0}),
    ("patience", {"patience": 0}),
    ("validation_fraction", {"validation_fraction": 1.0}),
    ("steps_per_epoch", {"steps_per_epoch": 0}),
    ("discretization", {"discretization": "euler"}),
    ("init", {"init": "random"}),
    ("mixer", {"mixer": "mlp"}),
    ("n_layers", {"n_layers": 0}),
    ("n_heads", {"d_model": 9, "n_heads": 2}),
    ("d_model", {"d_model": -3}),
    ("d_state", {"d_state": 0}),
    ("device", {"device": "nonsense"}),
    ("missing", {"missing": "zero"}),
]


@pytest.mark.parametrize("name,kw", ESSM_BAD_PARAMS, ids=[p[0] for p in ESSM_BAD_PARAMS])
def test_essm_bad_parameter_raises_at_fit_naming_it(name, kw):
    est = make_essm(**kw)  # __init__ only stores
    for key, value in kw.items():
        assert est.get_params()[key] == value
    with pytest.raises(ValueError, match=name):
        est.fit(Y)


@pytest.mark.parametrize("bad", [0, 1.5, -2])
def test_naive_bad_season_length(bad):
    est = make_naive(season_length=bad)
    with pytest.raises(ValueError, match="season_length"):
        est.fit(Y)


def test_unfitted_model_raises_not_fitted(case, tmp_path):
    est = case.make()
    with pytest.raises(NotFittedError):
        est.predict()
    with pytest.raises(NotFittedError):
        est.update(Y.iloc[:3])
    with pytest.raises(NotFittedError):
        est.save(tmp_path / "m.pkl")
    assert not (tmp_path / "m.pkl").exists()


# ----------------------------------------------------------------------------- fit / predict per kind


@pytest.mark.parametrize("kind", KINDS)
def test_predict_returns_input_kind(case, kind, fitted):
    model = fitted(case, kind)
    out = model.predict()
    last = Y.index[N_FIT - 1]
    expected_index = pd.date_range(last + pd.Timedelta("1h"), periods=H, freq="h")
    cols = columns_for(kind)
    if kind == "pandas":
        assert isinstance(out, pd.DataFrame)
        assert list(out.columns) == cols
        assert isinstance(out.index, pd.DatetimeIndex)
        assert list(out.index) == list(expected_index)
        assert (np.diff(out.index.asi8) == pd.Timedelta("1h").value).all()
    elif kind == "pandas-series":
        assert isinstance(out, pd.Series)
        assert out.name == "a"
        assert list(out.index) == list(expected_index)
    elif kind == "polars":
        assert isinstance(out, pl.DataFrame)
        assert out.columns == ["time", *cols]
        assert isinstance(out.schema["time"], pl.Datetime)
        assert [pd.Timestamp(t) for t in out["time"].to_list()] == list(expected_index)
    else:
        assert isinstance(out, np.ndarray)
        assert out.shape == (H, len(cols))
    assert vals(out).shape == (H, len(cols))
    assert np.isfinite(vals(out)).all()
    assert model.columns_ == cols and model.target_columns_ == cols
    assert model.n_seen_ == N_FIT


def test_input_kind_does_not_change_the_numbers(case, fitted):
    ref = vals(fitted(case, "pandas").predict())
    np.testing.assert_array_equal(vals(fitted(case, "polars").predict()), ref)
    np.testing.assert_array_equal(vals(fitted(case, "numpy-2d").predict()), ref)
    np.testing.assert_array_equal(vals(fitted(case, "pandas-series").predict()),
                                  vals(fitted(case, "numpy-1d").predict()))


@pytest.mark.parametrize("kind", ["pandas", "polars", "numpy-2d"])
def test_fh_subset(case, kind, fitted):
    model = fitted(case, kind)
    full = model.predict()
    sub = model.predict(fh=[1, 3])
    np.testing.assert_array_equal(vals(sub), vals(full)[[0, 2]])
    one = model.predict(fh=H)
    np.testing.assert_array_equal(vals(one), vals(full)[[H - 1]])
    np.testing.assert_array_equal(vals(model.predict(fh=np.array([2]))), vals(full)[[1]])
    if kind == "pandas":
        assert list(sub.index) == [full.index[0], full.index[2]]
        assert list(one.index) == [full.index[H - 1]]
    if kind == "polars":
        assert sub["time"].to_list() == [full["time"][0], full["time"][2]]


@pytest.mark.parametrize("bad", [0, H + 1, -1, [1, H + 1], [], [1.5], "1"])
def test_bad_fh(case, bad, fitted):
    model = fitted(case)
    with pytest.raises(ValueError, match="fh"):
        model.predict(fh=bad)


# ----------------------------------------------------------------------------- S / M / MS settings


def test_setting_S(case):
    model = case.make(target="a").fit(Y[["a"]].iloc[:N_FIT])
    out = model.predict()
    assert list(out.columns) == ["a"]
    assert model.columns_ == ["a"] and model.target_columns_ == ["a"]


def test_setting_M(case, fitted):
    model = fitted(case)
    assert model.get_params()["target"] is None
    assert list(model.predict().columns) == ["a", "b"]


def test_setting_MS(case):
    model = case.make(target="a").fit(Y.iloc[:N_FIT])
    out = model.predict()
    assert list(out.columns) == ["a"]
    assert model.columns_ == ["a", "b"]
    assert model.target_columns_ == ["a"]
    # b is an input: update() needs it
    with pytest.raises(ValueError, match="'b'"):
        model.update(Y[["a"]].iloc[N_FIT : N_FIT + 2])
    model.update(Y.iloc[N_FIT : N_FIT + 2])
    assert list(model.predict().columns) == ["a"]


def test_target_list_order_is_kept(case):
    model = case.make(target=["b", "a"]).fit(Y.iloc[:N_FIT])
    assert list(model.predict().columns) == ["b", "a"]


def test_unknown_target_at_fit(case):
    with pytest.raises(ValueError, match="'OT'"):
        case.make(target="OT").fit(Y)


def test_essm_MS_reads_the_input_column():
    model = make_essm(target="a").fit(Y.iloc[:N_FIT])
    hist = history(model, Y.iloc[:N_FIT])
    base = model.forecast_one_pass(hist)[-1]
    hist[-3:, 1] += 2.0  # change only the input column b
    assert np.abs(model.forecast_one_pass(hist)[-1] - base).max() > 1e-6


# ----------------------------------------------------------------------------- covariates X


def test_covariates_are_inputs_not_outputs(case):
    model = case.make().fit(Y.iloc[:N_FIT], X.iloc[:N_FIT])
    assert model.columns_ == ["a", "b", "x"]
    out = model.predict()
    assert list(out.columns) == ["a", "b"]  # target=None: every column of y, not of X
    assert model.target_columns_ == ["a", "b"]


def test_covariates_with_target(case):
    model = case.make(target="a").fit(Y.iloc[:N_FIT], X.iloc[:N_FIT])
    assert model.columns_ == ["a", "b", "x"]
    assert list(model.predict().columns) == ["a"]
    # update needs the covariates as well
    with pytest.raises(ValueError, match="'x'"):
        model.update(Y.iloc[N_FIT : N_FIT + 3])
    model.update(Y.iloc[N_FIT : N_FIT + 3], X.iloc[N_FIT : N_FIT + 3])
    assert model.n_seen_ == N_FIT + 3


def test_covariates_must_share_timestamps(case):
    with pytest.raises(ValueError, match="X"):
        case.make().fit(Y.iloc[:N_FIT], X.iloc[1 : N_FIT + 1])


def test_essm_covariate_values_change_the_forecast():
    model = make_essm(target="a").fit(Y.iloc[:N_FIT], X.iloc[:N_FIT])
    chunk = Y.iloc[N_FIT : N_FIT + 3]
    x1 = X.iloc[N_FIT : N_FIT + 3]
    one, two = copy.deepcopy(model), copy.deepcopy(model)
    one.update(chunk, x1)
    two.update(chunk, x1 + 3.0)
    assert np.abs(vals(one.predict()) - vals(two.predict())).max() > 1e-6


# ----------------------------------------------------------------------------- failed calls change nothing


def _nan(df):
    df = df.copy()
    df.iloc[5, 1] = np.nan
    return df


def _inf(df):
    df = df.copy()
    df.iloc[2, 0] = np.inf
    return df


def _text(df):
    df = df.copy()
    df["c"] = "x"
    return df


def _gap(df):
    return df.drop(df.index[10:12])


BAD_FITS = {
    "nan": lambda: (ValueError, dict(y=_nan(Y.iloc[:200]))),
    "inf": lambda: (ValueError, dict(y=_inf(Y.iloc[:200]))),
    "text-column": lambda: (TypeError, dict(y=_text(Y.iloc[:200]))),
    "gap": lambda: (ValueError, dict(y=_gap(Y.iloc[:200]))),
    "dict": lambda: (TypeError, dict(y={"a": [1.0, 2.0]})),
    "empty": lambda: (ValueError, dict(y=Y.iloc[:0])),
    "X-misaligned": lambda: (ValueError, dict(y=Y.iloc[:200], X=X.iloc[5:205])),
    "y_val-columns": lambda: (ValueError, dict(y=Y.iloc[:200], y_val=Y[["a"]].iloc[200:260])),
    "y_val-before-y": lambda: (ValueError, dict(y=Y.iloc[:200], y_val=Y.iloc[100:200])),
}


@pytest.mark.parametrize("bad", list(BAD_FITS))
def test_bad_fit_leaves_fitted_model_unchanged(case, bad, fitted):
    model = fitted(case)
    before = model.predict()
    state = (model.n_seen_, list(model.columns_), model.last_index_.copy())
    exc, kwargs = BAD_FITS[bad]()
    y = kwargs.pop("y")
    with pytest.raises(exc):
        model.fit(y, **kwargs)
    pd.testing.assert_frame_equal(model.predict(), before)
    assert (model.n_seen_, list(model.columns_)) == state[:2] and model.last_index_.equals(state[2])
    # and it still streams exactly like an untouched copy
    ref = fitted(case)
    chunk = Y.iloc[N_FIT : N_FIT + 3]
    pd.testing.assert_frame_equal(model.update(chunk).predict(), ref.update(chunk).predict())


def _chunk(start=N_FIT, n=4):
    return Y.iloc[start : start + n].copy()


def _shift(df, hours):
    df = df.copy()
    df.index = df.index + pd.Timedelta(hours=hours)
    return df


BAD_UPDATES = {
    "nan-in-6th-row": lambda: _nan(_chunk(n=8)),
    "inf": lambda: _inf(_chunk()),
    "renamed-column": lambda: _chunk().rename(columns={"b": "c"}),
    "missing-column": lambda: _chunk()[["a"]],
    "extra-column": lambda: _chunk().assign(c=1.0),
    "text-column": lambda: _chunk().assign(b="x"),
    "same-timestamp-as-last": lambda: _shift(_chunk(), -1),
    "before-last": lambda: _shift(_chunk(), -10),
    "gap-after-last": lambda: _shift(_chunk(), 1),
    "gap-inside-chunk": lambda: _gap(_chunk(n=16)),
    "duplicate-inside-chunk": lambda: _chunk().iloc[[0, 1, 1, 2]],
    "empty": lambda: _chunk().iloc[:0],
    "dict": lambda: {"a": [1.0], "b": [2.0]},
    "numpy-for-pandas-model": lambda: _chunk().to_numpy(),
}


@pytest.mark.parametrize("bad", list(BAD_UPDATES))
def test_bad_update_leaves_model_unchanged(case, bad, fitted):
    model = fitted(case)
    before = model.predict()
    n_seen, last = model.n_seen_, model.last_index_.copy()
    with pytest.raises((ValueError, TypeError)) as err:
        model.update(BAD_UPDATES[bad]())
    assert str(err.value)  # says what is wrong
    pd.testing.assert_frame_equal(model.predict(), before)
    assert model.n_seen_ == n_seen and model.last_index_.equals(last)
    # nothing of the bad chunk was absorbed: the next good chunk gives what a fresh copy gives
    ref = fitted(case)
    chunk = _chunk(n=3)
    pd.testing.assert_frame_equal(model.update(chunk).predict(), ref.update(chunk).predict())


def test_update_error_messages_name_the_problem(case, fitted):
    model = fitted(case)
    last = Y.index[N_FIT - 1]
    with pytest.raises(ValueError, match=r"'b'.*NaN.*row 5"):
        model.update(_nan(_chunk(n=8)))
    with pytest.raises(ValueError, match=r"missing \['b'\].*unexpected \['c'\]"):
        model.update(_chunk().rename(columns={"b": "c"}))
    with pytest.raises(ValueError, match=rf"not after the last observation {last}"):
        model.update(_shift(_chunk(), -1))
    with pytest.raises(ValueError, match=r"leaves a gap"):
        model.update(_shift(_chunk(), 1))


def test_bad_update_numpy_wrong_width(case, fitted):
    model = fitted(case, "numpy-2d")
    before = model.predict()
    with pytest.raises(ValueError, match="'2'"):
        model.update(np.ones((3, 3)))
    np.testing.assert_array_equal(model.predict(), before)


# ----------------------------------------------------------------------------- update semantics


def test_state_after_fit_is_the_whole_series(case, fitted):
    model = fitted(case)
    expected = model.forecast_one_pass(history(model, Y.iloc[:N_FIT]))[-1]
    np.testing.assert_allclose(vals(model.predict()), expected, atol=1e-5)


@pytest.mark.parametrize("n", [1, 5, 40])  # 40 >= PREFILL_MIN_ROWS: the prefill path
@pytest.mark.parametrize("kind", ["pandas", "polars", "numpy-2d"])
def test_update_equals_row_by_row_and_whole_history(case, kind, n, fitted):
    model = fitted(case, kind)
    chunk_df = Y.iloc[N_FIT : N_FIT + n]
    chunk = as_kind(chunk_df, kind)
    at_once = copy.deepcopy(model)
    assert at_once.update(chunk) is at_once
    row_by_row = copy.deepcopy(model)
    for i in range(n):
        row_by_row.update(as_kind(chunk_df.iloc[i : i + 1], kind))
    got = vals(at_once.predict())
    np.testing.assert_allclose(got, vals(row_by_row.predict()), atol=1e-5, rtol=0)
    # the convolution view over the whole history
    cols = model.columns_ if kind != "numpy-2d" else ["a", "b"]
    whole = Y.iloc[: N_FIT + n][cols].to_numpy()
    np.testing.assert_allclose(got, model.forecast_one_pass(whole)[-1], atol=1e-5, rtol=0)
    assert at_once.n_seen_ == row_by_row.n_seen_ == N_FIT + n
    if kind == "pandas":
        out = at_once.predict()
        assert out.index[0] == Y.index[N_FIT + n - 1] + pd.Timedelta("1h")
    if kind == "numpy-2d":
        assert at_once.predict().shape == (H, 2)


def test_update_in_two_chunks_equals_one(case, fitted):
    model = fitted(case)
    one, two = copy.deepcopy(model), copy.deepcopy(model)
    one.update(Y.iloc[N_FIT : N_FIT + 30])
    two.update(Y.iloc[N_FIT : N_FIT + 12]).update(Y.iloc[N_FIT + 12 : N_FIT + 30])
    np.testing.assert_allclose(vals(one.predict()), vals(two.predict()), atol=1e-5, rtol=0)


def test_update_accepts_columns_in_any_order(case, fitted):
    model = fitted(case)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    a.update(Y.iloc[N_FIT : N_FIT + 5])
    b.update(Y.iloc[N_FIT : N_FIT + 5][["b", "a"]])
    pd.testing.assert_frame_equal(a.predict(), b.predict())


def test_update_changes_the_forecast(case, fitted):
    model = fitted(case)
    before = vals(model.predict())
    model.update(Y.iloc[N_FIT : N_FIT + 5])
    assert not np.allclose(vals(model.predict()), before)


def test_update_with_ffill_policy_fills_nan(case, fitted):
    model = fitted(case, missing="ffill")
    chunk = _chunk(n=4)
    filled = chunk.copy()
    chunk.iloc[2, 0] = np.nan
    filled.iloc[2, 0] = filled.iloc[1, 0]
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    a.update(chunk)
    b.update(filled)
    pd.testing.assert_frame_equal(a.predict(), b.predict())


# ----------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", ["pandas", "polars", "numpy-2d"])
def test_save_load_roundtrip(case, kind, tmp_path, fitted):
    model = fitted(case, kind)
    path = tmp_path / "model.pkl"
    model.save(path)
    assert path.is_file() and path.stat().st_size > 0
    loaded = type(model).load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    p0, p1 = model.predict(), loaded.predict()
    assert type(p0) is type(p1)
    np.testing.assert_array_equal(vals(p1), vals(p0))
    if kind == "pandas":
        pd.testing.assert_frame_equal(p1, p0)
    # the loaded model streams on exactly like the original
    chunk = Y.iloc[N_FIT : N_FIT + 20]
    model.update(as_kind(chunk, kind))
    loaded.update(as_kind(chunk, kind))
    np.testing.assert_array_equal(vals(loaded.predict()), vals(model.predict()))
    # save of a model that has absorbed updates keeps them
    model.save(path)
    again = BaseForecaster.load(path)
    assert type(again) is type(model) and again.n_seen_ == N_FIT + 20
    np.testing.assert_array_equal(vals(again.predict()), vals(model.predict()))


def test_load_rejects_wrong_class_and_foreign_files(case, tmp_path, fitted):
    model = fitted(case)
    path = tmp_path / "m.pkl"
    model.save(path)
    other = NaiveForecaster if type(model) is not NaiveForecaster else ESSMForecaster
    with pytest.raises(TypeError, match=type(model).__name__):
        other.load(path)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="pickle"):
        type(model).load(junk)
    with pytest.raises(ValueError, match="not a tsessm model"):
        type(model).load(junk, allow_pickle=True)


def _legacy_pickle(model, path, essm_format_1: bool) -> None:
    """The pickled file tsessm 0.2 and older wrote (format 1 with the complex-B/C eSSM layer)."""
    state = model._get_fitted_state()
    if essm_format_1:  # the format-1 layer: complex B (2, S, n, h) and C (2, S, h, n) as (re, im)
        state["net_"] = {k: torch.stack([v, v]) if k.endswith(("ssm.B", "ssm.C")) else v
                         for k, v in state["net_"].items()}
    payload = {"format": 1, "class": f"{type(model).__module__}.{type(model).__qualname__}",
               "params": model.get_params(deep=False), "state": state}
    path.write_bytes(pickle.dumps(payload))


def test_pickles_are_refused_unless_trusted_and_old_essm_layers_are_refused(case, tmp_path, fitted):
    model = fitted(case)
    is_essm = isinstance(model, ESSMForecaster)
    _legacy_pickle(model, tmp_path / "old.pkl", essm_format_1=is_essm)
    with pytest.raises(ValueError, match="a pickle .*allow_pickle=True"):
        BaseForecaster.load(tmp_path / "old.pkl")
    if is_essm:
        with pytest.raises(ValueError, match="format 1 .*Retrain"):
            BaseForecaster.load(tmp_path / "old.pkl", allow_pickle=True)
        _legacy_pickle(model, tmp_path / "old.pkl", essm_format_1=False)
    loaded = type(model).load(tmp_path / "old.pkl", allow_pickle=True)
    np.testing.assert_array_equal(vals(loaded.predict()), vals(model.predict()))
    loaded.save(tmp_path / "new.tsm")  # re-saved: now a file that holds no code
    assert (tmp_path / "new.tsm").read_bytes()[:2] == b"PK"
    np.testing.assert_array_equal(vals(BaseForecaster.load(tmp_path / "new.tsm").predict()), vals(model.predict()))


def test_observe_equals_update_one_row_then_predict(case, fitted):
    model = fitted(case)
    api = copy.deepcopy(model)
    for t in range(N_FIT, N_FIT + 5):
        out = model.observe(Y.iloc[t][list(model.columns_)].to_numpy(), Y.index[t])
        api.update(Y.iloc[t : t + 1])
        expected = vals(api.predict())
        assert out.shape == (model.horizon, len(model.target_columns_))
        np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=1e-9, atol=1e-12)
    assert model.last_index_.equals(api.last_index_) and model.n_seen_ == api.n_seen_


def test_essm_load_with_device_override(tmp_path, fitted):
    model = fitted(CASES[0])
    model.save(tmp_path / "m.pkl")
    loaded = ESSMForecaster.load(tmp_path / "m.pkl", device="cpu")
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(vals(loaded.predict()), vals(model.predict()))


# ----------------------------------------------------------------------------- determinism


def test_essm_same_seed_same_predictions_different_seed_differs():
    data = Y.iloc[:N_FIT]
    a = make_essm(random_state=7).fit(data).predict()
    b = make_essm(random_state=7).fit(data).predict()
    c = make_essm(random_state=8).fit(data).predict()
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_essm_refit_is_reproducible():
    model = make_essm(random_state=3)
    first = model.fit(Y.iloc[:N_FIT]).predict()
    model.fit(Y.iloc[: N_FIT - 20])  # something else in between
    second = model.fit(Y.iloc[:N_FIT]).predict()
    pd.testing.assert_frame_equal(first, second)


def test_essm_fit_with_random_state_leaves_global_torch_rng_alone():
    # fit seeds its own generator (random_state); the caller's global torch RNG stream must not move
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    make_essm(random_state=3).fit(Y.iloc[:N_FIT])
    assert torch.equal(torch.get_rng_state(), rng_before)


# ----------------------------------------------------------------------------- validation / early stopping


def test_essm_y_val_early_stopping_records_val_loss():
    model = make_essm(epochs=2, patience=1).fit(Y.iloc[:200], y_val=Y.iloc[200:260])
    assert 1 <= len(model.history_) <= 2
    for entry in model.history_:
        assert {"epoch", "train_loss", "val_loss"} <= set(entry)
        assert np.isfinite(entry["val_loss"]) and entry["val_loss"] > 0
    # the state after fit reflects y only, not y_val
    assert model.n_seen_ == 200
    assert model.predict().index[0] == Y.index[200]


def test_essm_y_val_overlapping_y_uses_rows_after_y_only():
    a = make_essm(epochs=1).fit(Y.iloc[:200], y_val=Y.iloc[200:260])
    b = make_essm(epochs=1).fit(Y.iloc[:200], y_val=Y.iloc[150:260])
    assert a.history_[0]["val_loss"] == pytest.approx(b.history_[0]["val_loss"], rel=1e-6)
    pd.testing.assert_frame_equal(a.predict(), b.predict())


def test_essm_validation_fraction():
    with_val = make_essm(validation_fraction=0.2).fit(Y.iloc[:N_FIT])
    assert "val_loss" in with_val.history_[0]
    without = make_essm(validation_fraction=0.0).fit(Y.iloc[:N_FIT])
    assert "val_loss" not in without.history_[0]


def test_y_val_with_a_gap_after_y_is_rejected(case):
    # y_val must follow y: a validation stretch that starts later would be glued onto y as if
    # the two were contiguous.
    with pytest.raises(ValueError, match="y_val"):
        case.make().fit(Y.iloc[:200], y_val=Y.iloc[210:270])


def test_y_val_errors(case):
    with pytest.raises(ValueError, match="no rows after"):
        case.make().fit(Y.iloc[:200], y_val=Y.iloc[100:200])
    with pytest.raises(ValueError, match="y_val columns"):
        case.make().fit(Y.iloc[:200], y_val=Y[["b", "a"]].iloc[200:260].rename(columns={"b": "c"}))
    with pytest.raises(ValueError, match=r"y_val: column 'a' is NaN"):
        case.make().fit(Y.iloc[:200], y_val=_nan(Y.iloc[200:260]).assign(a=np.nan))


# ----------------------------------------------------------------------------- bidirectional


def test_essm_bidirectional_fits_predicts_but_cannot_stream():
    model = make_essm(bidirectional=True).fit(Y.iloc[:N_FIT])
    out = model.predict()
    assert out.shape == (H, 2) and np.isfinite(out.to_numpy()).all()
    assert not model.can_stream and make_essm().can_stream and make_essm().can_forecast_windows
    with pytest.raises(StreamingNotSupported) as err:
        model.update(Y.iloc[N_FIT : N_FIT + 2])
    assert isinstance(err.value, NotImplementedError)
    assert "bidirectional" in str(err.value)
    assert tsessm.StreamingNotSupported is StreamingNotSupported
    pd.testing.assert_frame_equal(model.predict(), out)
    assert model.n_seen_ == N_FIT


# ----------------------------------------------------------------------------- length


def test_too_short_series_names_the_row_count(case):
    est = case.make(**case.short_kw)
    need = case.min_rows(est)
    assert need > 1
    with pytest.raises(ValueError) as err:
        est.fit(Y.iloc[: need - 1])
    assert f"{need - 1} rows" in str(err.value) and str(need) in str(err.value)
    est.fit(Y.iloc[:need])  # exactly enough works
    assert vals(est.predict()).shape == (H, 2)


def test_numpy_integer_settings_and_numpy_y_val_are_accepted():
    y = np.sin(np.arange(200) / 7)[:, None]
    model = make_essm(d_model=np.int64(8), horizon=np.int64(H), lookback=np.int64(LOOKBACK))
    model.fit(y[:150], y_val=y[150:])  # numpy steps carry no labels: y_val follows y
    assert "val_loss" in model.history_[-1] and model.predict().shape == (H, 1)


def test_cuda_device_is_refused_without_cuda_and_a_cuda_model_loads_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU
    with pytest.raises(ValueError, match="CUDA is not available"):
        make_essm(device="cuda").fit(np.sin(np.arange(120) / 5))
    model = make_essm().fit(np.sin(np.arange(120) / 5))
    model.set_params(device="cuda:0")  # as saved by a GPU run
    model.save(tmp_path / "gpu.pkl")
    loaded = ESSMForecaster.load(tmp_path / "gpu.pkl")
    # runs on the CPU; the parameter stays as saved (estimator parameters never change after __init__)
    assert loaded.device == "cuda:0" and loaded.device_.type == "cpu"
    np.testing.assert_allclose(loaded.predict(), model.predict(), rtol=1e-6)
    loaded.update(np.array([0.5]))
    assert np.isfinite(loaded.predict()).all()


def test_bidirectional_validation_is_windowed_not_leaking():
    """A non-causal net at position t reads t+1..t+H: it is scored on window ends only, so its
    validation loss equals the windowed forecasts' error at the validation origins."""
    y = np.cumsum(np.random.default_rng(0).standard_normal(300))[:, None]
    model = make_essm(bidirectional=True, epochs=1).fit(y[:240], y_val=y[240:])
    origins = np.arange(240, 300 - H)
    forecast = model.forecast_windows(y, origins, LOOKBACK)[..., 0]
    actual = np.stack([y[o + 1 : o + 1 + H, 0] for o in origins])
    scaled_mse = np.mean(((forecast - actual) / model.std_[0]) ** 2)
    assert model.history_[0]["val_loss"] == pytest.approx(scaled_mse, rel=1e-4)


# ----------------------------------------------------------------------------- one contract


def test_a_forecaster_must_implement_fit_predict_update():
    class Partial(BaseForecaster):
        def __init__(self, horizon: int = 2, target=None) -> None:
            self.horizon = horizon
            self.target = target

        def _fit(self, values, target_idx, val_values) -> None:
            self.idx_, self.last_ = target_idx, values[-1, target_idx]

        def _predict(self) -> np.ndarray:
            return np.tile(self.last_, (self.horizon, 1))

    with pytest.raises(TypeError, match="_update"):
        Partial()

    class Whole(Partial):
        def _update(self, values) -> None:
            self.last_ = values[-1, self.idx_]

    model = Whole()
    assert model.can_stream and not model.can_forecast_windows
    with pytest.raises(NotImplementedError, match="windowed"):
        model.fit(np.arange(10.0)).forecast_windows(np.arange(10.0)[:, None], [5], 3)


def test_parameters_never_change_after_init(case, tmp_path):
    """scikit-learn's rule: fit, update, save and load leave get_params() as given."""
    model = case.make()
    before = model.get_params()
    model.fit(Y.iloc[:N_FIT]).update(Y.iloc[N_FIT : N_FIT + 3])
    assert model.get_params() == before
    model.save(tmp_path / "m.tsm")
    assert type(model).load(tmp_path / "m.tsm").get_params() == before


def test_callbacks_are_a_parameter_called_every_epoch_and_not_saved(tmp_path):
    seen: list[dict] = []
    model = make_essm(epochs=2, callbacks=[seen.append]).fit(Y.iloc[:N_FIT])
    assert [entry["epoch"] for entry in seen] == [1, 2] and all("train_loss" in e for e in seen)
    assert clone(model).get_params()["callbacks"] == [seen.append]
    model.save(tmp_path / "m.tsm")  # code is never saved: the loaded model has the default
    assert ESSMForecaster.load(tmp_path / "m.tsm").callbacks is None
    with pytest.raises(TypeError, match="callbacks"):
        make_essm(callbacks=print).fit(Y.iloc[:N_FIT])


def test_backtest_forecasts_check_their_input(case):
    model = case.make().fit(Y.iloc[:N_FIT])
    rows = Y.to_numpy()
    with pytest.raises(ValueError, match=r"\(rows, 2\) for the columns \['a', 'b'\]"):
        model.forecast_one_pass(rows[:, :1])
    bad = rows.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7, column 'b' is nan"):
        model.forecast_windows(bad, [LOOKBACK], LOOKBACK)
    with pytest.raises(ValueError, match="forecast rows"):
        model.forecast_windows(rows, [LOOKBACK - 2], LOOKBACK)
    one_pass = model.forecast_one_pass(rows, [N_FIT - 1])
    assert one_pass.shape == (1, H, 2) and np.isfinite(one_pass).all()
