"""LinearForecaster (NLinear / DLinear ridge): the closed form against scikit-learn's Ridge, the
normalisations, streaming against windowed forecasts, constant-size state. The public contract
runs on it in test_forecaster_contract.py."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.linear_model import Ridge

from tsessm import LinearForecaster
from tsessm.jobs import MODELS, make_model

H, L = 6, 24


def _series(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame(
        {"a": np.sin(2 * np.pi * t / 24) + t / 200 + 0.2 * rng.normal(size=n),
         "b": 10 + 3 * np.cos(2 * np.pi * t / 12) + rng.normal(size=n)},
        index=pd.date_range("2024-01-01", periods=n, freq="h"),
    )


DF = _series()
N_FIT = 300


def _reference(frame: pd.DataFrame, normalization: str, alpha: float = 1.0, kernel_size: int = 5):
    """sklearn's Ridge on windows built here, independently of the model: (ridge, features(window),
    mean, std) with the train rows' statistics per column."""
    values = frame.to_numpy()
    mean, std = values.mean(axis=0), values.std(axis=0)

    def features(windows: np.ndarray) -> np.ndarray:
        if normalization == "last":
            return windows - windows[:, -1:]
        if normalization == "decompose":  # DLinear's series_decomp: ends repeated, moving average
            before, after = (kernel_size - 1) // 2, kernel_size - 1 - (kernel_size - 1) // 2
            padded = np.hstack([np.repeat(windows[:, :1], before, 1), windows, np.repeat(windows[:, -1:], after, 1)])
            trend = sliding_window_view(padded, kernel_size, axis=1).mean(axis=-1)
            return np.hstack([windows - trend, trend])
        return windows

    X, Y = [], []
    for j in range(values.shape[1]):
        z = (values[:, j] - mean[j]) / std[j]
        w = sliding_window_view(z, L + H)
        X.append(features(w[:, :L]))
        Y.append(w[:, L:] - (w[:, L - 1 : L] if normalization == "last" else 0))
    ridge = Ridge(alpha=alpha).fit(np.vstack(X), np.vstack(Y))
    return ridge, features, mean, std


def _reference_forecast(ridge, features, mean, std, window: np.ndarray) -> np.ndarray:
    """(H, k) forecast of the reference from raw windows (L, k)."""
    out = []
    for j in range(window.shape[1]):
        z = (window[:, j] - mean[j]) / std[j]
        f = ridge.predict(features(z[None]))[0]
        if ridge.normalization == "last":
            f = f + z[-1]
        out.append(f * std[j] + mean[j])
    return np.stack(out, axis=1)


@pytest.mark.parametrize("normalization", ["last", "none", "decompose"])
def test_equals_sklearn_ridge_on_the_same_windows(normalization):
    train = DF.iloc[:N_FIT]
    model = LinearForecaster(horizon=H, lookback=L, alpha=1.0, normalization=normalization, kernel_size=5).fit(train)
    ridge, features, mean, std = _reference(train, normalization)
    ridge.normalization = normalization
    assert model.n_windows_ == 2 * (N_FIT - L - H + 1)
    np.testing.assert_allclose(model.ridge_coef_, ridge.coef_.T, atol=1e-8, rtol=0)
    np.testing.assert_allclose(model.ridge_intercept_, ridge.intercept_, atol=1e-8, rtol=0)
    values = DF.to_numpy()
    np.testing.assert_allclose(model.predict().to_numpy(),
                               _reference_forecast(ridge, features, mean, std, values[N_FIT - L : N_FIT]), atol=1e-8)
    origins = np.arange(L - 1, len(DF) - H, 17)
    got = model.forecast_windows(values, origins, L)
    want = np.stack([_reference_forecast(ridge, features, mean, std, values[o - L + 1 : o + 1]) for o in origins])
    np.testing.assert_allclose(got, want, atol=1e-8, rtol=0)


def test_the_map_is_shared_by_the_targets():
    """Channel independence with one map (NLinear's individual=False): a target's forecast reads its
    own window only, and the map fitted on both targets is the one fitted on their windows stacked."""
    model = LinearForecaster(horizon=H, lookback=L).fit(DF.iloc[:N_FIT])
    values = DF.to_numpy()
    base = model.forecast_windows(values, [N_FIT - 1], L)
    changed = values.copy()
    changed[N_FIT - 5 : N_FIT, 1] += 3.0  # only b's window
    moved = model.forecast_windows(changed, [N_FIT - 1], L)
    np.testing.assert_array_equal(moved[..., 0], base[..., 0])
    assert np.abs(moved[..., 1] - base[..., 1]).max() > 1e-3
    only_a = LinearForecaster(horizon=H, lookback=L).fit(DF[["a"]].iloc[:N_FIT])
    assert not np.allclose(only_a.coef_, model.coef_)  # b's windows count in the shared fit
    # MS: b is an input column that the map does not read
    with pytest.warns(UserWarning, match=r"ignores 1 input column\(s\) that are not targets \(columns \[1\]"):
        ms = LinearForecaster(horizon=H, lookback=L, target="a").fit(DF.iloc[:N_FIT])
    np.testing.assert_allclose(ms.coef_, only_a.coef_, atol=1e-12)


def test_nlinear_forecast_follows_a_level_shift():
    model = LinearForecaster(horizon=H, lookback=L, normalization="last").fit(DF.iloc[:N_FIT])
    values = DF.to_numpy()
    origins = np.arange(L - 1, len(DF) - H, 5)
    base = model.forecast_windows(values, origins, L)
    for shift in (-50.0, 7.5, 1e3):
        np.testing.assert_allclose(model.forecast_windows(values + shift, origins, L), base + shift, atol=1e-8)
    # and a live model that sees the shifted rows forecasts shifted too
    shifted = copy.deepcopy(model).update(DF.iloc[N_FIT : N_FIT + L] + 7.5)
    plain = copy.deepcopy(model).update(DF.iloc[N_FIT : N_FIT + L])
    np.testing.assert_allclose(shifted.predict().to_numpy(), plain.predict().to_numpy() + 7.5, atol=1e-8)
    # without the normalisation the map reads levels: the shift does not pass through
    levels = LinearForecaster(horizon=H, lookback=L, normalization="none").fit(DF.iloc[:N_FIT])
    moved = levels.forecast_windows(values + 7.5, origins, L) - levels.forecast_windows(values, origins, L)
    assert np.abs(moved - 7.5).max() > 0.1


def test_update_and_observe_equal_windowed_forecasts_at_the_same_origins():
    model = LinearForecaster(horizon=H, lookback=L).fit(DF.iloc[:N_FIT])
    values = DF.to_numpy()
    stream, chunks = copy.deepcopy(model), copy.deepcopy(model)
    for t in range(N_FIT, N_FIT + 40):
        got = stream.observe(values[t], DF.index[t])
        np.testing.assert_allclose(got, model.forecast_windows(values, [t], L)[0], atol=1e-10, rtol=0)
    chunks.update(DF.iloc[N_FIT : N_FIT + 13]).update(DF.iloc[N_FIT + 13 : N_FIT + 40])
    np.testing.assert_allclose(chunks.predict().to_numpy(), got, atol=1e-10, rtol=0)
    one_pass = model.forecast_one_pass(values, np.arange(L - 1, len(DF) - H))
    np.testing.assert_allclose(one_pass, model.forecast_windows(values, np.arange(L - 1, len(DF) - H), L), atol=1e-12)


def test_one_pass_pads_early_origins_with_the_first_row():
    model = LinearForecaster(horizon=H, lookback=L).fit(DF.iloc[:N_FIT])
    values = DF.to_numpy()
    padded = np.vstack([np.repeat(values[:1], L - 1, axis=0), values])
    early = model.forecast_one_pass(values, np.arange(L - 1))
    np.testing.assert_allclose(early, model.forecast_windows(padded, np.arange(L - 1) + L - 1, L), atol=1e-12)


def test_windowed_forecasts_need_the_models_lookback():
    model = LinearForecaster(horizon=H, lookback=L).fit(DF.iloc[:N_FIT])
    values = DF.to_numpy()
    with pytest.raises(ValueError, match=rf"lookback=12 .*lookback={L}"):
        model.forecast_windows(values, [50], 12)
    # a longer window is exact: the map reads its last `lookback` rows
    np.testing.assert_array_equal(model.forecast_windows(values, [50, 90], 2 * L),
                                  model.forecast_windows(values, [50, 90], L))


def test_dlinear_decomposition():
    rng = np.random.default_rng(1)
    t = np.arange(600)
    trend = np.cumsum(0.05 * rng.normal(size=600))  # a wandering level under a daily season
    y = pd.DataFrame({"y": trend + np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=600)},
                     index=pd.date_range("2024-01-01", periods=600, freq="h"))
    dlinear = LinearForecaster(horizon=H, lookback=L, normalization="decompose", kernel_size=5).fit(y.iloc[:500])
    assert dlinear.ridge_coef_.shape == (2 * L, H)  # the remainder's map, then the trend's
    ridge, features, mean, std = _reference(y.iloc[:500], "decompose", kernel_size=5)
    np.testing.assert_allclose(dlinear.ridge_coef_, ridge.coef_.T, atol=1e-8, rtol=0)
    # a different map from the plain linear one (the two penalties differ), and it forecasts well
    plain = LinearForecaster(horizon=H, lookback=L, normalization="none").fit(y.iloc[:500])
    assert not np.allclose(dlinear.coef_, plain.coef_)
    values = y.to_numpy()
    origins = np.arange(500, 600 - H)
    actual = np.stack([values[o + 1 : o + 1 + H] for o in origins])
    naive = np.repeat(values[origins][:, None], H, axis=1)
    assert np.mean((dlinear.forecast_windows(values, origins, L) - actual) ** 2) < np.mean((naive - actual) ** 2)
    # an even kernel is centred one step early and keeps the length
    even = LinearForecaster(horizon=H, lookback=L, normalization="decompose", kernel_size=4).fit(y)
    assert even.coef_.shape == (L, H)


def test_state_does_not_grow_with_the_stream(monkeypatch):
    """O(1) per row: the state is the last `lookback` rows whatever the history's length, and
    absorbing a row touches at most that many values."""
    model = LinearForecaster(horizon=H, lookback=L).fit(DF.iloc[:N_FIT])

    def state_size(m):
        return sum(np.asarray(v).nbytes for k, v in vars(m).items() if k.endswith("_") and isinstance(v, np.ndarray))

    before = state_size(model)
    touched = []
    original = np.concatenate

    def counting(arrays, *args, **kwargs):
        out = original(arrays, *args, **kwargs)
        touched.append(out.size)
        return out

    values = DF.to_numpy()
    with monkeypatch.context() as patch:
        patch.setattr(np, "concatenate", counting)
        for t in range(N_FIT, len(DF)):
            model.observe(values[t], DF.index[t])
    assert model.window_.shape == (L, 2)
    np.testing.assert_array_equal(model.window_, values[-L:])
    assert state_size(model) == before
    assert touched and max(touched) <= L * 2  # each row: one new window of lookback x targets values
    model.update(pd.concat([DF] * 5).set_axis(pd.date_range(DF.index[-1], periods=5 * len(DF) + 1, freq="h")[1:]))
    assert model.window_.shape == (L, 2) and state_size(model) == before


def test_future_covariates_are_ignored_with_a_warning():
    X = pd.DataFrame({"promo": np.arange(len(DF), dtype=float) % 7}, index=DF.index)
    with pytest.warns(UserWarning, match="ignores future_covariates"):
        model = LinearForecaster(horizon=H, lookback=L, future_covariates=["promo"])
        model.fit(DF.iloc[:N_FIT], X.iloc[:N_FIT])
    plain = LinearForecaster(horizon=H, lookback=L).fit(DF.iloc[:N_FIT])
    future = X.iloc[N_FIT : N_FIT + H]
    np.testing.assert_allclose(model.predict(X=future).to_numpy(), plain.predict().to_numpy(), atol=1e-12)


@pytest.mark.parametrize("name,kw", [("lookback", {"lookback": 0}), ("alpha", {"alpha": -1.0}),
                                     ("alpha", {"alpha": float("nan")}), ("alpha", {"alpha": True}),
                                     ("normalization", {"normalization": "revin"}),
                                     ("kernel_size", {"kernel_size": 0})])
def test_bad_parameters_are_named_at_fit(name, kw):
    model = LinearForecaster(**{"horizon": H, "lookback": L, **kw})  # __init__ only stores
    with pytest.raises(ValueError, match=name):
        model.fit(DF)
    assert not hasattr(model, "n_seen_")


def test_alpha_zero_is_least_squares():
    model = LinearForecaster(horizon=H, lookback=L, alpha=0).fit(DF.iloc[:N_FIT])
    assert np.isfinite(model.predict().to_numpy()).all()
    X, Y = model.training_windows(DF.iloc[:N_FIT].to_numpy())
    fitted = X @ model.ridge_coef_ + model.ridge_intercept_
    ridge = LinearForecaster(horizon=H, lookback=L, alpha=10.0).fit(DF.iloc[:N_FIT])
    in_sample = X @ ridge.ridge_coef_ + ridge.ridge_intercept_
    assert np.mean((fitted - Y) ** 2) < np.mean((in_sample - Y) ** 2)


def test_registered_by_name():
    assert "linear" in MODELS
    model = make_model("linear", horizon=3, lookback=8, normalization="decompose")
    assert isinstance(model, LinearForecaster) and model.get_params()["lookback"] == 8
    from tsessm.bench.options import MODELS as BENCH_MODELS

    assert "linear" in BENCH_MODELS
