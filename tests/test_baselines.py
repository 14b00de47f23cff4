"""Baselines: LSTMNet's three views, LSTMForecaster's streaming contract, ARIMAForecaster's exact
fixed-parameter filtering (checked against statsmodels itself), order search and persistence."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from statsmodels.tsa.statespace.sarimax import SARIMAX

from tsessm.backtest import backtest
from tsessm.forecasters.arima import ARIMAForecaster
from tsessm.forecasters.lstm import LSTMForecaster
from tsessm.nn.lstm_net import LSTMNet
from views import assert_views_agree


def _ar_series(coefs, n, seed=0, mean=0.0):
    rng = np.random.default_rng(seed)
    burn = 100
    e = rng.normal(size=n + burn)
    y = np.zeros(n + burn)
    for t in range(len(coefs), n + burn):
        y[t] = sum(c * y[t - i - 1] for i, c in enumerate(coefs)) + e[t]
    return y[burn:] + mean


def _frame(values, columns):
    index = pd.date_range("2024-01-01", periods=len(values), freq="h")
    return pd.DataFrame(np.asarray(values).reshape(len(values), -1), index=index, columns=columns)


def _sm_forecast(y, params, horizon, order, seasonal_order=(0, 0, 0, 0), trend="c"):
    """statsmodels' own forecast after filtering `y` with fixed `params`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = SARIMAX(y, order=order, seasonal_order=seasonal_order, trend=trend)
        return np.asarray(mod.filter(params).forecast(horizon))


# ----- LSTMNet ------------------------------------------------------------------------------
def test_lstm_net_forward_step_prefill_agree():
    torch.manual_seed(0)
    net = LSTMNet(3, 2, horizon=5, d_model=16, n_layers=3, dropout=0.3).eval()
    x = torch.randn(2, 70, 3)
    y = assert_views_agree(net, x, split=31)
    assert y.shape == (2, 70, 5, 2) and y.dtype == torch.float32
    assert [s.shape for s in net.prefill(x)[1]] == [(2, 3, 16), (2, 3, 16)]  # batch first


def test_lstm_net_state_follows_parameters_and_is_causal():
    net = LSTMNet(2, 1, 3, d_model=8, n_layers=2).double()
    h, c = net.initial_state(4)
    assert h.dtype == torch.float64 and h.shape == (4, 2, 8) and not h.any() and not c.any()
    x = torch.randn(1, 30, 2, dtype=torch.float64)
    changed = x.clone()
    changed[:, 20:] += 1.0
    assert (net(x)[:, :20] - net(changed)[:, :20]).abs().max() < 1e-12
    net(x).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("kwargs", [{"d_model": 0}, {"n_layers": 0}, {"dropout": 1.0}, {"horizon": 0}])
def test_lstm_net_rejects_bad_sizes(kwargs):
    args = {"n_in": 1, "n_out": 1, "horizon": 2, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LSTMNet(**args)


# ----- LSTMForecaster -----------------------------------------------------------------------
def _tiny_lstm(**kwargs):
    params = dict(horizon=4, lookback=16, d_model=8, n_layers=2, epochs=2, steps_per_epoch=3, batch_size=8,
                  device="cpu", verbose=0, random_state=0)
    return LSTMForecaster(**{**params, **kwargs})


def _two_columns(n=240, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    target = np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=n)
    load = np.cos(2 * np.pi * t / 24) + 0.1 * rng.normal(size=n)
    return _frame(np.column_stack([load, target]), ["load", "ot"])


def test_lstm_forecaster_fit_predict_update_save_load(tmp_path):
    frame = _two_columns()
    model = _tiny_lstm(target="ot").fit(frame.iloc[:180])
    assert clone(model).get_params() == model.get_params()
    forecast = model.predict()
    assert forecast.shape == (4, 1) and list(forecast.columns) == ["ot"]
    assert forecast.index[0] == frame.index[180]

    chunk = frame.iloc[180:220]  # >= 16 rows: absorbed by one prefill
    model.save(tmp_path / "lstm.tsm")
    stepwise = LSTMForecaster.load(tmp_path / "lstm.tsm")
    np.testing.assert_array_equal(stepwise.predict().to_numpy(), forecast.to_numpy())
    model.update(chunk)
    for i in range(len(chunk)):
        stepwise.update(chunk.iloc[i : i + 1])
    np.testing.assert_allclose(stepwise.predict().to_numpy(), model.predict().to_numpy(), rtol=1e-5, atol=1e-5)
    # ... and equal to the convolution view over the whole history
    whole = model.forecast_one_pass(frame.iloc[:220].to_numpy())[-1]
    np.testing.assert_allclose(model.predict().to_numpy(), whole, rtol=1e-5, atol=1e-5)

    model.save(tmp_path / "lstm2.tsm")
    loaded = LSTMForecaster.load(tmp_path / "lstm2.tsm")
    np.testing.assert_array_equal(loaded.predict().to_numpy(), model.predict().to_numpy())
    loaded.update(frame.iloc[220:225])
    model.update(frame.iloc[220:225])
    np.testing.assert_array_equal(loaded.predict().to_numpy(), model.predict().to_numpy())


def test_lstm_forecaster_backtests_and_bad_params():
    frame = _two_columns()
    model = _tiny_lstm(target="ot").fit(frame.iloc[:150])
    for mode in ("windowed", "one-pass"):
        result = backtest(model, frame, test_start=200, train_rows=150, mode=mode)
        assert result.forecasts.shape == (len(frame) - 4 - 199, 4, 1)
        assert np.isfinite(result.scores["mse"])
    for bad in ({"d_model": 0}, {"n_layers": 0}):
        model = _tiny_lstm(**bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            model.fit(frame)
        assert not hasattr(model, "n_seen_")


# ----- ARIMAForecaster ----------------------------------------------------------------------
def test_arima_recovers_an_ar1_coefficient():
    y = _ar_series([0.7], 300, mean=2.0)
    model = ARIMAForecaster(horizon=6, order=(1, 0, 0), verbose=0).fit(y)
    params = model.params_[0]
    assert abs(params["ar.L1"] - 0.7) < 0.1
    assert abs(params["intercept"] / (1 - params["ar.L1"]) - 2.0) < 0.5
    assert model.predict().shape == (6, 1)
    assert model.orders_ == [((1, 0, 0), (0, 0, 0, 0))]


@pytest.mark.parametrize(
    "order, seasonal_order, trend",
    [((2, 0, 1), (0, 0, 0, 0), "c"), ((1, 1, 1), (0, 0, 0, 0), "c"), ((1, 1, 0), (0, 1, 1, 7), "n")],
)
def test_arima_update_filters_with_fixed_params_like_statsmodels(order, seasonal_order, trend):
    y = _ar_series([0.5, 0.3], 280, seed=1, mean=5.0)
    model = ARIMAForecaster(horizon=8, order=order, seasonal_order=seasonal_order, trend=trend, verbose=0)
    model.fit(y[:200])
    params = model.fits_[0].params.copy()
    np.testing.assert_allclose(
        model.predict()[:, 0], _sm_forecast(y[:200], params, 8, order, seasonal_order, trend), rtol=0, atol=1e-8
    )
    one_by_one = clone(model).fit(y[:200])
    model.update(y[200:260])
    for value in y[200:260]:
        one_by_one.update(np.array([value]))
    expected = _sm_forecast(y[:260], params, 8, order, seasonal_order, trend)
    np.testing.assert_allclose(model.predict()[:, 0], expected, rtol=0, atol=1e-8)
    np.testing.assert_allclose(one_by_one.predict()[:, 0], expected, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(model.fits_[0].params, params)  # no refit
    assert model.n_seen_ == 260


def test_arima_refit_every_reestimates_at_the_same_rows_however_chunked():
    y = _ar_series([0.6], 260, seed=2)
    model = ARIMAForecaster(horizon=3, order=(1, 0, 0), refit_every=25, verbose=0).fit(y[:200])
    stepwise = clone(model).fit(y[:200])
    before = model.fits_[0].params.copy()
    model.update(y[200:220])
    np.testing.assert_array_equal(model.fits_[0].params, before)  # 20 < 25 rows: no refit yet
    model.update(y[220:240])
    after = model.fits_[0].params
    assert not np.array_equal(after, before)
    for value in y[200:240]:
        stepwise.update(np.array([value]))
    np.testing.assert_allclose(stepwise.fits_[0].params, after, rtol=1e-10)
    np.testing.assert_allclose(stepwise.predict(), model.predict(), rtol=0, atol=1e-8)
    # the state after the refit is the filter over the whole history with the new parameters
    np.testing.assert_allclose(model.predict()[:, 0], _sm_forecast(y[:240], after, 3, (1, 0, 0)), rtol=0, atol=1e-8)
    assert model.since_refit_ == 15 and len(model.observed_) == 240


def test_arima_auto_order_uses_aic_within_the_bounds():
    y = _ar_series([0.5, -0.6], 300, seed=3)
    model = ARIMAForecaster(horizon=4, order="auto", max_order=(3, 1, 2), verbose=0).fit(y)
    (p, d, q), _ = model.orders_[0]
    assert d == 0 and p >= 2 and p <= 3 and q <= 2
    scores = model.order_scores_[0]
    assert len(scores) == 4 * 3 and all(order[1] == 0 for order in scores)
    assert min(scores, key=scores.get) == (p, d, q)
    walk = np.cumsum(np.random.default_rng(4).normal(size=300))
    model = ARIMAForecaster(horizon=4, order="auto", max_order=(1, 1, 1), verbose=0).fit(walk)
    assert model.orders_[0][0][1] == 1  # KPSS: a random walk needs one difference


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 1, 1)])
def test_arima_backtest_forecasts_match_statsmodels_from_each_origin(order):
    y = _ar_series([0.5, 0.3], 300, seed=5, mean=3.0)
    H, L = 12, 48
    model = ARIMAForecaster(horizon=H, order=order, verbose=0).fit(y[:200])
    params = model.fits_[0].params
    stream = model.forecast_one_pass(y[:, None])
    assert stream.shape == (300, H, 1)
    for t in (10, 120, 199, 250, 287):
        np.testing.assert_allclose(stream[t, :, 0], _sm_forecast(y[: t + 1], params, H, order), rtol=0, atol=1e-8)
    origins = np.array([L - 1, 150, 287])
    windows = model.forecast_windows(y[:, None], origins, L)
    for i, t in enumerate(origins):
        expected = _sm_forecast(y[t - L + 1 : t + 1], params, H, order)
        np.testing.assert_allclose(windows[i, :, 0], expected, rtol=0, atol=1e-8)
    for mode in ("windowed", "one-pass"):
        result = backtest(model, y, test_start=220, train_rows=200, lookback=L, mode=mode)
        assert result.forecasts.shape == (300 - H - 219, H, 1) and np.isfinite(result.scores["mse"])


def test_arima_models_each_target_and_ignores_inputs(tmp_path):
    a = _ar_series([0.7], 250, seed=6)
    b = _ar_series([-0.4], 250, seed=7, mean=1.0)
    noise = np.random.default_rng(8).normal(size=250)
    frame = _frame(np.column_stack([a, noise, b]), ["a", "x", "b"])
    model = ARIMAForecaster(horizon=5, target=["a", "b"], order=(1, 0, 0), verbose=0).fit(frame.iloc[:200])
    other = frame.copy()
    other["x"] = 0.0
    same = clone(model).fit(other.iloc[:200])
    np.testing.assert_array_equal(model.predict().to_numpy(), same.predict().to_numpy())
    assert list(model.predict().columns) == ["a", "b"]
    solo = ARIMAForecaster(horizon=5, order=(1, 0, 0), verbose=0).fit(b[:200])
    np.testing.assert_allclose(model.predict()["b"].to_numpy(), solo.predict()[:, 0], rtol=0, atol=1e-12)

    model.update(frame.iloc[200:230])
    model.save(tmp_path / "arima.tsm")
    loaded = ARIMAForecaster.load(tmp_path / "arima.tsm")
    pd.testing.assert_frame_equal(loaded.predict(), model.predict())
    loaded.update(frame.iloc[230:240])
    model.update(frame.iloc[230:240])
    pd.testing.assert_frame_equal(loaded.predict(), model.predict())
    assert (tmp_path / "arima.tsm").stat().st_size < 20_000  # parameters and state, not the data


@pytest.mark.parametrize(
    "params, name",
    [
        ({"order": (-1, 0, 1)}, "order"),
        ({"order": (1, 0)}, "order"),
        ({"order": "best"}, "order"),
        ({"order": (1.5, 0, 0)}, "order"),
        ({"seasonal_order": (1, 0, 0, 1)}, "seasonal_order"),
        ({"seasonal_order": (1, 0, 0)}, "seasonal_order"),
        ({"trend": "ct"}, "trend"),
        ({"max_order": (3, -1, 3), "order": "auto"}, "max_order"),
        ({"refit_every": 0}, "refit_every"),
        ({"horizon": 0}, "horizon"),
    ],
)
def test_arima_bad_params_raise_at_fit_and_leave_it_unfitted(params, name):
    model = ARIMAForecaster(verbose=0, **params)
    with pytest.raises(ValueError, match=name):
        model.fit(_ar_series([0.5], 100))
    assert not hasattr(model, "n_seen_")
