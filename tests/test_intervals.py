"""Prediction intervals and quantiles: ARIMA equals statsmodels; conformal coverage holds on a
stationary series; online recalibration follows a variance shift that a static calibration
misses; the calibration and the online state survive save/load and stream checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy.stats import norm
from statsmodels.tsa.statespace.sarimax import SARIMAX

from tsessm import ARIMAForecaster, ESSMForecaster, NaiveForecaster, PanelForecaster
from tsessm.backtest import backtest
from tsessm.intervals import Calibration, CoverageTracker, track_one_pass
from tsessm.plotting import plot_backtest

H = 6


def _ar1(n: int, seed: int, phi: float = 0.7, scale: np.ndarray | float = 1.0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(n) * scale
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = phi * y[t - 1] + noise[t]
    return y


def _frame(y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"y": y}, index=pd.date_range("2024-01-01", periods=len(y), freq="h"))


Y = _frame(_ar1(500, seed=0))


# ----------------------------------------------------------------------------- ARIMA: exact


@pytest.mark.parametrize("order", [(1, 0, 1), (1, 1, 0)])
def test_arima_intervals_equal_statsmodels_conf_int_after_fit_and_updates(order):
    model = ARIMAForecaster(horizon=H, order=order, verbose=0).fit(Y[:300])
    names = SARIMAX(Y.y[:300].to_numpy(), order=order, trend="c").param_names
    params = [model.params_[0][n] for n in names]
    for end in (300, 301, 320):
        if end > model.n_seen_:
            model.update(Y[model.n_seen_ : end])
        forecast = SARIMAX(Y.y[:end].to_numpy(), order=order, trend="c").filter(params).get_forecast(H)
        for coverage in (0.9, 0.5):
            got = model.predict_interval(coverage=coverage)
            assert list(got.columns) == [f"y-lo-{100 * coverage:g}", f"y-hi-{100 * coverage:g}"]
            np.testing.assert_allclose(got.to_numpy(), forecast.conf_int(alpha=1 - coverage), atol=1e-6, rtol=0)
        quantiles = model.predict_quantiles(alpha=(0.05, 0.5, 0.95)).to_numpy()
        expected = forecast.predicted_mean[:, None] + norm.ppf([0.05, 0.5, 0.95]) * forecast.se_mean[:, None]
        np.testing.assert_allclose(quantiles, expected, atol=1e-6, rtol=0)


def test_arima_intervals_with_exog_equal_statsmodels():
    x = (np.random.default_rng(3).random(len(Y)) < 0.2).astype(float)
    X = pd.DataFrame({"promo": x}, index=Y.index)
    y = Y.assign(y=Y.y + 2 * x)
    model = ARIMAForecaster(horizon=H, order=(1, 0, 0), future_covariates=["promo"], verbose=0).fit(y[:300], X[:300])
    names = SARIMAX(y.y[:300].to_numpy(), exog=x[:300, None], order=(1, 0, 0), trend="c").param_names
    params = [model.params_[0]["x1" if n == "x1" else n] for n in names]
    reference = SARIMAX(y.y[:300].to_numpy(), exog=x[:300, None], order=(1, 0, 0), trend="c").filter(params)
    expected = reference.get_forecast(H, exog=x[300:306, None]).conf_int(alpha=0.1)
    np.testing.assert_allclose(model.predict_interval(X=X[300:306]).to_numpy(), expected, atol=1e-6)


# ----------------------------------------------------------------------------- conformal


def test_split_conformal_coverage_holds_on_a_stationary_series():
    """Naive forecasts of an AR(1): the held-out tail's residuals calibrate the intervals; over
    2 000 later origins the coverage of each step is within a binomial tolerance of 90 %."""
    y = _frame(_ar1(4000, seed=1))
    model = NaiveForecaster(horizon=H).fit(y[:2000])  # calibrated on the last 30 % of the fit
    n = model.calibration_.count
    result = backtest(model, y, test_start=2000, mode="one-pass", coverage=0.9, online=False)
    per_step = result.by_step.coverage.to_numpy()
    # coverage given a calibration set of n is Beta-distributed around 0.9 (sd ~ sqrt(.09 / n));
    # 2 000 correlated test origins add about as much again: 4 sd of the two together
    tolerance = 4 * np.sqrt(0.09 / n + 0.09 / 2000 * 3)
    assert np.all(np.abs(per_step - 0.9) < tolerance), (per_step, tolerance)
    assert result.scores["coverage"] == pytest.approx(per_step.mean(), abs=1e-12)


def test_essm_intervals_and_quantiles_are_ordered_and_named():
    model = ESSMForecaster(horizon=H, lookback=24, d_model=8, d_state=8, epochs=2, verbose=0, random_state=0,
                           validation_fraction=0.2).fit(Y[:400])
    interval = model.predict_interval(coverage=0.8)
    point = model.predict()
    assert (interval["y-lo-80"] < point.y).all() and (point.y < interval["y-hi-80"]).all()
    quantiles = model.predict_quantiles(alpha=[0.1, 0.5, 0.9])
    assert list(quantiles.columns) == ["y-q-0.1", "y-q-0.5", "y-q-0.9"]
    assert (np.diff(quantiles.to_numpy(), axis=1) >= 0).all()
    wider = model.predict_interval(coverage=0.95).to_numpy()
    assert (wider[:, 1] - wider[:, 0] >= interval.to_numpy()[:, 1] - interval.to_numpy()[:, 0] - 1e-12).all()
    numpy_model = NaiveForecaster(horizon=H).fit(Y.y.to_numpy()[:300])
    assert numpy_model.predict_interval().shape == (H, 2)  # numpy: (len(fh), 2 k), lo then hi
    polars_model = NaiveForecaster(horizon=H).fit(pl.from_pandas(Y[:300].reset_index(names="time")))
    assert polars_model.predict_quantiles(alpha=0.5).columns == ["time", "y-q-0.5"]
    with pytest.raises(ValueError, match="coverage must be a number in"):
        model.predict_interval(coverage=90)
    with pytest.raises(ValueError, match="alpha must be quantile levels"):
        model.predict_quantiles(alpha=[0.5, 1.5])


# ----------------------------------------------------------------------------- online


def _shifted() -> pd.DataFrame:
    """An AR(1) whose noise triples at row 1500."""
    scale = np.where(np.arange(3500) < 1500, 1.0, 3.0)
    return _frame(_ar1(3500, seed=2, scale=scale))


def test_online_recalibration_restores_coverage_after_a_variance_shift():
    y = _shifted()
    model = NaiveForecaster(horizon=H).fit(y[:1000])
    online = backtest(model, y, test_start=1000, mode="one-pass", coverage=0.9, online=True)
    static = backtest(model, y, test_start=1000, mode="one-pass", coverage=0.9, online=False)

    def covered(result, start, stop):
        lo, hi, a = result.intervals[..., 0], result.intervals[..., 1], result.actuals
        inside = (a >= lo) & (a <= hi)
        return inside[start - 1000 : stop - 1000].mean(axis=(0, 2))  # per step

    settle = 500  # the bound on the re-adaptation: 500 observations after the shift
    assert covered(static, 1500 + settle, 3400).max() < 0.6  # static intervals stay too narrow
    assert np.all(np.abs(covered(online, 1500 + settle, 3400) - 0.9) < 0.04)
    assert np.all(np.abs(covered(online, 1000, 1500) - 0.9) < 0.06)  # and it stays calibrated before


def test_observe_tracks_like_the_backtest_and_state_survives_save_load(tmp_path):
    y = _shifted()
    model = NaiveForecaster(horizon=H).fit(y[:1000]).track_coverage(0.9)
    for t in range(1000, 1600):
        model.observe([y.y.iloc[t]])
    model.save(tmp_path / "m.tsm")
    loaded = NaiveForecaster.load(tmp_path / "m.tsm")
    assert isinstance(loaded.interval_tracker_, CoverageTracker) and isinstance(loaded.calibration_, Calibration)
    pd.testing.assert_frame_equal(loaded.predict_interval(), model.predict_interval())
    for t in range(1600, 1620):
        model.observe([y.y.iloc[t]])
        loaded.observe([y.y.iloc[t]])
    np.testing.assert_array_equal(loaded.interval_tracker_.half, model.interval_tracker_.half)
    # the same recalibration as the backtest's simulation of a stream
    fresh = NaiveForecaster(horizon=H).fit(y[:1000])
    result = backtest(fresh, y, test_start=1000, mode="one-pass", coverage=0.9)  # origins from row 999
    widths = (result.intervals[..., 1] - result.intervals[..., 0]) / 2
    np.testing.assert_allclose(model.interval_tracker_.half, widths[1619 - 999], atol=1e-9)


def test_stream_lines_carry_intervals_and_the_checkpoint_keeps_the_tracker(tmp_path):
    from tsessm.stream import run_stream

    y = _shifted()
    NaiveForecaster(horizon=H).fit(y[:1000]).save(tmp_path / "m.tsm")
    records = [{"time": t.isoformat(), "y": float(v)} for t, v in y.y.iloc[1000:1300].items()]
    whole = run_stream(str(tmp_path / "m.tsm"), records, coverage=0.9)
    first = run_stream(str(tmp_path / "m.tsm"), records[:150], coverage=0.9, checkpoint=tmp_path / "ck")
    second = run_stream(str(tmp_path / "m.tsm"), records[150:], coverage=0.9, checkpoint=tmp_path / "ck")
    assert second.resumed
    lines = [json.loads(json.dumps(line)) for line in first.lines + second.lines]
    assert lines == [json.loads(json.dumps(line)) for line in whole.lines]
    last = whole.lines[-1]
    assert set(last["interval"]["y"]) == {"lo", "hi"} and len(last["interval"]["y"]["lo"]) == H
    assert all(lo < f < hi for lo, f, hi in zip(last["interval"]["y"]["lo"], last["forecast"]["y"],
                                                 last["interval"]["y"]["hi"]))


def test_track_one_pass_uses_only_values_that_have_arrived():
    rng = np.random.default_rng(0)
    forecasts, actuals = rng.standard_normal((50, 3, 1)), rng.standard_normal((50, 3, 1))
    widths = track_one_pass(forecasts, actuals, CoverageTracker.start(0.9, np.ones((3, 1))))
    changed = actuals.copy()
    changed[30:] += 100  # values from origin 31 on: cannot move the widths of origins <= 30
    widths_changed = track_one_pass(forecasts, changed, CoverageTracker.start(0.9, np.ones((3, 1))))
    np.testing.assert_array_equal(widths[:31], widths_changed[:31])
    assert not np.allclose(widths[32:], widths_changed[32:])


# ----------------------------------------------------------------------------- metrics, plots, panel


def test_backtest_scores_and_the_band_plot(tmp_path):
    model = ARIMAForecaster(horizon=H, order=(1, 0, 0), verbose=0).fit(Y[:300])
    result = backtest(model, Y, test_start=320, train_rows=300, mode="one-pass", coverage=0.9)
    scores = result.scores
    assert {"coverage", "width", "pinball", "crps", "mape", "smape", "mase"} <= set(scores)
    assert 0.75 < scores["coverage"] <= 1 and scores["width"] > 0 and 0 < scores["crps"] < scores["mae"]
    naive = backtest(NaiveForecaster(horizon=H).fit(Y[:300]), Y, test_start=320, train_rows=300)
    assert scores["mase"] < naive.scores["mase"]
    plot_backtest({"arima": result}, tmp_path / "bt.png")
    assert (tmp_path / "bt.png").stat().st_size > 10_000


def test_panel_intervals_in_long_format():
    long = pd.concat([_frame(_ar1(300, seed=s)).assign(unique_id=f"s{s}").reset_index(names="ds")
                      for s in range(3)])
    panel = PanelForecaster(ESSMForecaster(horizon=H, lookback=24, d_model=8, d_state=8, epochs=1, verbose=0,
                                           random_state=0, target="y", validation_fraction=0.2)).fit(long)
    frame = panel.predict_interval(coverage=0.9)
    assert list(frame.columns) == ["unique_id", "ds", "y", "y-lo-90", "y-hi-90"] and len(frame) == 3 * H
    assert (frame["y-lo-90"] < frame.y).all() and (frame.y < frame["y-hi-90"]).all()


def test_observe_returns_the_interval_it_is_asked_for():
    model = NaiveForecaster(horizon=H).fit(Y[:300]).track_coverage(0.8)
    forecast, interval = model.observe([0.3], coverage=0.8)
    assert interval.shape == (H, 1, 2)
    expected = model.predict_interval(coverage=0.8).to_numpy()
    np.testing.assert_allclose(interval[:, 0], expected, atol=1e-12)
    np.testing.assert_allclose(forecast, model.predict().to_numpy())


def test_files_saved_before_intervals_say_so(tmp_path):
    model = NaiveForecaster(horizon=H).fit(Y[:300])
    for name in ("calibration_", "window_calibration_", "interval_tracker_"):
        del model.__dict__[name]  # as a file of tsessm 0.3 holds it
    model.save(tmp_path / "old.tsm")
    old = NaiveForecaster.load(tmp_path / "old.tsm")
    assert np.isfinite(old.predict().to_numpy()).all()
    with pytest.raises(ValueError, match="saved by a tsessm without interval calibration"):
        old.predict_interval()


def test_conformal_half_width_is_the_order_statistic():
    residuals = np.random.default_rng(0).standard_normal((36, 2, 1))
    calibration = Calibration.from_residuals(residuals)
    k = int(np.ceil(37 * 0.9))  # the 34th smallest of 36
    np.testing.assert_allclose(calibration.half_width(0.9), np.sort(np.abs(residuals), axis=0)[k - 1], rtol=1e-6)
    large = np.random.default_rng(1).standard_normal((5000, 2, 1))
    big = Calibration.from_residuals(large)
    exact = np.sort(np.abs(large), axis=0)[int(np.ceil(5001 * 0.9)) - 1]
    assert np.all(big.half_width(0.9) >= exact - 1e-6) and np.all(big.half_width(0.9) <= exact * 1.01)


def test_windowed_intervals_at_another_lookback():
    naive = NaiveForecaster(horizon=H).fit(Y[:300])  # its windows read only its last row: any lookback
    assert backtest(naive, Y, test_start=320, lookback=48, coverage=0.9).intervals is not None
    essm = ESSMForecaster(horizon=H, lookback=24, d_model=8, d_state=8, epochs=1, verbose=0, random_state=0,
                          validation_fraction=0.2).fit(Y[:300])
    with pytest.raises(ValueError, match="lookback=24; a backtest with lookback=48"):
        backtest(essm, Y, test_start=320, lookback=48, coverage=0.9)
