"""Future-known covariates and calendar features: the model that knows the future input beats the
one that does not; ARIMA's exog equals statsmodels' SARIMAX(exog=...); clear errors for missing
future values; calendar features made from the timestamps alone."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.statespace.sarimax import SARIMAX

from tsessm import ARIMAForecaster, ESSMForecaster, LSTMForecaster, NaiveForecaster
from tsessm.backtest import backtest
from tsessm.calendar import calendar_columns, calendar_features, parse_calendar

T, FIT, H = 600, 500, 7
_rng = np.random.default_rng(0)
IDX = pd.date_range("2024-01-01", periods=T, freq="D")
PROMO = (_rng.random(T) < 0.15).astype(float)  # a planned promotion: known ahead
Y = pd.DataFrame({"sales": 0.3 * np.sin(np.arange(T) * 2 * np.pi / 30) + 3.0 * PROMO
                  + 0.2 * _rng.standard_normal(T)}, index=IDX)
X = pd.DataFrame({"promo": PROMO}, index=IDX)
KW = dict(horizon=H, lookback=28, d_model=16, d_state=16, epochs=8, verbose=0, random_state=0, device="cpu")


def _essm(**kw) -> ESSMForecaster:
    return ESSMForecaster(**{**KW, **kw})


@pytest.fixture(scope="module")
def essm_pair():
    with_future = _essm(future_covariates=["promo"]).fit(Y[:FIT], X[:FIT])
    without = _essm().fit(Y[:FIT], X[:FIT])  # promo as a past input only
    return with_future, without


def test_knowing_the_promotion_ahead_wins_by_a_wide_margin(essm_pair):
    with_future, without = essm_pair
    data = Y.join(X)
    known = backtest(with_future, data, test_start=FIT, train_rows=FIT).scores["mse"]
    assert backtest(with_future, Y, X, test_start=FIT, train_rows=FIT).scores["mse"] == known  # X apart, as in fit
    blind = backtest(without, data, test_start=FIT, train_rows=FIT).scores["mse"]
    assert known < 0.6 * blind, (known, blind)


def test_arima_with_exog_wins_and_equals_statsmodels_sarimax():
    model = ARIMAForecaster(horizon=H, order=(1, 0, 0), future_covariates=["promo"], verbose=0).fit(Y[:FIT], X[:FIT])
    params = model.params_[0]
    names = SARIMAX(Y.sales[:FIT].to_numpy(), exog=PROMO[:FIT, None], order=(1, 0, 0), trend="c").param_names
    assert set(params) == set(names) and abs(params["x1"] - 3.0) < 0.1
    vector = [params[n] for n in names]
    for end in (FIT, FIT + 10):  # after fit, then after an update with the new rows' exog
        if end > FIT:
            model.update(Y[FIT:end], X[FIT:end])
        mod = SARIMAX(Y.sales[:end].to_numpy(), exog=PROMO[:end, None], order=(1, 0, 0), trend="c")
        expected = mod.filter(vector).forecast(H, exog=PROMO[end : end + H, None])
        got = model.predict(X=X[end : end + H]).to_numpy()[:, 0]
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    data = Y.join(X)
    blind = ARIMAForecaster(horizon=H, order=(1, 0, 0), verbose=0).fit(Y[:FIT])
    with_exog = backtest(model, data, test_start=FIT + 20, train_rows=FIT).scores["mse"]
    without = backtest(blind, data, test_start=FIT + 20, train_rows=FIT).scores["mse"]
    assert with_exog < 0.2 * without


def test_arima_backtests_equal_its_own_step_by_step_forecasts():
    model = ARIMAForecaster(horizon=H, order=(1, 0, 1), future_covariates=["promo"], verbose=0).fit(Y[:FIT], X[:FIT])
    rows, _ = model.history_rows(Y.join(X))
    one_pass = model.forecast_one_pass(rows, [FIT - 1, FIT + 4])
    np.testing.assert_allclose(one_pass[0], model.predict(X=X[FIT : FIT + H]).to_numpy(), atol=1e-9)
    stepped = ARIMAForecaster(horizon=H, order=(1, 0, 1), future_covariates=["promo"], verbose=0)
    stepped.fit(Y[:FIT], X[:FIT]).update(Y[FIT : FIT + 5], X[FIT : FIT + 5])
    np.testing.assert_allclose(one_pass[1], stepped.predict(X=X[FIT + 5 : FIT + 5 + H]).to_numpy(), atol=1e-9)


def test_missing_or_short_future_values_are_named(essm_pair):
    model, blind = essm_pair
    with pytest.raises(ValueError, match=r"future_covariates \['promo'\].*predict\(X=\.\.\.\)"):
        model.predict()
    with pytest.raises(ValueError, match=r"lacks the future covariates \['promo'\] at step 6 .*step 7"):
        model.predict(X=X[FIT : FIT + 5])
    with pytest.raises(ValueError, match="lacks the future covariate column"):
        model.predict(X=X[FIT : FIT + H].rename(columns={"promo": "price"}))
    with pytest.raises(ValueError, match="has no future_covariates"):
        blind.predict(X=X[FIT : FIT + H])
    with pytest.raises(ValueError, match=r"future_covariates \['price'\] are not columns of X"):
        _essm(future_covariates=["price"]).fit(Y[:FIT], X[:FIT])
    assert model.predict(fh=[1, 3], X=X[FIT : FIT + 3]).shape == (2, 1)  # only the asked steps are needed


def test_observe_and_update_agree_and_save_load_keeps_the_future_map(essm_pair, tmp_path):
    model, _ = essm_pair
    model.save(tmp_path / "m.tsm")
    loaded = ESSMForecaster.load(tmp_path / "m.tsm")
    future = X[FIT + 1 : FIT + 1 + H]
    row = [Y.sales.iloc[FIT], PROMO[FIT]]
    with pytest.raises(ValueError, match="predict\\(X=...\\)"):
        loaded.observe(row)  # the forecast needs the promotion plan of the next H days
    by_observe = loaded.observe(row, future=future.to_numpy())
    by_update = model.update(Y[FIT : FIT + 1], X[FIT : FIT + 1]).predict(X=future).to_numpy()
    np.testing.assert_allclose(by_observe, by_update, atol=1e-5)


def test_naive_warns_that_it_ignores_future_covariates():
    with pytest.warns(UserWarning, match="ignores future_covariates"):
        model = NaiveForecaster(horizon=H, future_covariates=["promo"]).fit(Y[:FIT], X[:FIT])
    np.testing.assert_allclose(model.predict(X=X[FIT : FIT + H]).to_numpy()[:, 0], Y.sales.iloc[FIT - 1])


def test_arima_warns_about_past_covariates_it_ignores():
    with pytest.warns(UserWarning, match="ignores 1 input column"):
        ARIMAForecaster(horizon=H, order=(1, 0, 0), verbose=0).fit(Y[:FIT], X[:FIT])


# ----------------------------------------------------------------------------- calendar


def _weekly() -> pd.DataFrame:
    """Daily sales with a strong day-of-week profile and a holiday dip, little else."""
    idx = pd.date_range("2022-01-03", periods=560, freq="D")
    profile = np.array([0.0, 0.5, 1.0, 1.5, 3.0, 4.0, -2.0])
    noise = np.random.default_rng(1).standard_normal(len(idx)) * 0.3
    return pd.DataFrame({"sales": profile[idx.day_of_week] + noise}, index=idx)


def test_calendar_features_follow_a_weekly_pattern():
    data = _weekly()
    plain = ARIMAForecaster(horizon=H, order=(1, 0, 0), verbose=0).fit(data[:480])
    weekly = ARIMAForecaster(horizon=H, order=(1, 0, 0), calendar=["dayofweek"], verbose=0).fit(data[:480])
    forecast = weekly.predict()
    # the forecast follows the weekday profile of the coming week (Saturday high, Sunday low)
    by_day = dict(zip(forecast.index.day_of_week, forecast.sales))
    assert by_day[5] > by_day[4] > by_day[0] > by_day[6]
    assert backtest(weekly, data, test_start=480).scores["mse"] < 0.2 * backtest(plain, data, test_start=480).scores["mse"]
    essm = _essm(calendar=["dayofweek"], lookback=14, epochs=6).fit(data[:480])
    essm_plain = _essm(lookback=14, epochs=6).fit(data[:480])
    with_calendar = backtest(essm, data, test_start=480).scores["mse"]
    assert with_calendar < backtest(essm_plain, data, test_start=480).scores["mse"]
    assert with_calendar < 0.5 * backtest(NaiveForecaster(horizon=H).fit(data[:480]), data, test_start=480).scores["mse"]


def test_calendar_rows_come_from_the_timestamps_in_observe_and_update():
    data = _weekly()
    model = LSTMForecaster(horizon=H, lookback=14, d_model=8, epochs=1, verbose=0, random_state=0,
                           calendar={"dayofweek": "onehot", "month": "fourier"}).fit(data[:400])
    copy = LSTMForecaster(**model.get_params()).fit(data[:400])  # the same seed: the same model
    by_observe = copy.observe([data.sales.iloc[400]], time=data.index[400])
    by_update = model.update(data[400:401]).predict().to_numpy()
    np.testing.assert_allclose(by_observe, by_update, atol=1e-5)
    assert model.columns_[1:] == calendar_columns(parse_calendar({"dayofweek": "onehot", "month": "fourier"}))
    with pytest.raises(ValueError, match="one row of 1 numbers"):
        copy.observe([1.0] + [0.0] * 10)  # the calendar columns are not the caller's to give


def test_calendar_is_checked_and_needs_timestamps():
    with pytest.raises(ValueError, match="calendar: unknown feature 'season'"):
        _essm(calendar=["season"]).fit(Y[:FIT])
    with pytest.raises(ValueError, match="holiday' needs a country"):
        _essm(calendar=["holiday"]).fit(Y[:FIT])
    with pytest.raises(ValueError, match="holiday country 'XX'"):
        _essm(calendar={"holiday": "XX"}).fit(Y[:FIT])
    with pytest.raises(ValueError, match="need timestamps"):
        _essm(calendar=["hour"]).fit(Y.sales.to_numpy()[:FIT])


def test_calendar_feature_values():
    idx = pd.date_range("2024-07-03 22:00", periods=4, freq="h", tz="America/New_York")
    spec = parse_calendar({"hour": "fourier", "dayofweek": "onehot", "holiday": "US"})
    values = calendar_features(idx, spec)
    assert values.shape == (4, len(calendar_columns(spec)))
    assert values[:, -1].tolist() == [0.0, 0.0, 1.0, 1.0]  # 4 July, local time
    np.testing.assert_allclose(values[0, :2], [np.sin(2 * np.pi * 22 / 24), np.cos(2 * np.pi * 22 / 24)])
    wednesday, thursday = values[1, 6:12], values[2, 6:12]  # one-hot, Monday dropped
    assert wednesday.tolist() == [0, 1, 0, 0, 0, 0] and thursday.tolist() == [0, 0, 1, 0, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calendar_features(pd.date_range("2024-01-01", periods=3, freq="D"), parse_calendar(["month"]))


# ----------------------------------------------------------------------------- the stream


def test_a_stream_carries_known_ahead_values_and_makes_calendar_features(essm_pair, tmp_path):
    from tsessm.stream import run_stream

    model = _essm(future_covariates=["promo"], calendar=["dayofweek"], epochs=1).fit(Y[:FIT], X[:FIT])
    model.save(tmp_path / "m.tsm")
    new = range(FIT, FIT + 5)
    records = [{"time": IDX[t].isoformat(), "sales": float(Y.sales.iloc[t]), "promo": float(PROMO[t]),
                "future": {"promo": PROMO[t + 1 : t + 1 + H].tolist()}} for t in new]
    result = run_stream(str(tmp_path / "m.tsm"), records)
    assert result.status == "end" and result.counters.applied == 5
    reference = ESSMForecaster.load(tmp_path / "m.tsm")
    for t, line in zip(new, result.lines):
        reference.update(Y[t : t + 1], X[t : t + 1])
        expected = reference.predict(X=X[t + 1 : t + 1 + H]).sales.to_numpy()
        np.testing.assert_allclose(line["forecast"]["sales"], expected, atol=1e-5)
    lacking = [{k: v for k, v in records[0].items() if k != "future"}]
    bad = run_stream(str(tmp_path / "m.tsm"), lacking, on_bad_record="skip")
    assert bad.counters.bad == 1 and bad.counters.applied == 0


def test_future_values_far_outside_the_fit_are_refused_and_change_nothing(essm_pair):
    model, _ = essm_pair
    before = (model.n_seen_, model.predict(X=X).to_numpy().copy())  # X: the whole plan; its steps are read
    huge = np.full((H, 1), 1e300)
    t = model.n_seen_
    with pytest.raises(ValueError, match="future covariates"):
        model.observe([Y.sales.iloc[t], PROMO[t]], future=huge)
    with pytest.raises(ValueError, match="future covariates"):
        model.predict(X=pd.DataFrame({"promo": huge[:, 0]}, index=model.predict(X=X).index))
    assert model.n_seen_ == before[0]
    np.testing.assert_array_equal(model.predict(X=X).to_numpy(), before[1])


def test_predict_reads_only_the_forecast_steps_of_x(essm_pair):
    model, _ = essm_pair
    index = model.predict(X=X).index
    plan = X.copy()
    plan["other"] = np.nan  # a past covariate nobody knows ahead
    plan.iloc[10, 0] = np.nan  # a hole in an old row
    plan = plan.drop(plan.index[3])  # and a gap
    expected = model.predict(X=X.loc[index])
    pd.testing.assert_frame_equal(model.predict(X=plan), expected)
    pd.testing.assert_frame_equal(model.predict(X=plan.loc[index].sample(frac=1, random_state=0)), expected)
    rows, _ = model.history_rows(Y.join(X).iloc[: FIT + 20])
    assert model.forecast_one_pass(rows).shape == (FIT + 20 - H, H, 1)  # origins that have their future


def test_a_filled_gap_reads_the_known_values_at_the_filled_steps(tmp_path):
    from tsessm.stream import run_stream

    model = _essm(future_covariates=["promo"], epochs=1).fit(Y[:FIT], X[:FIT])
    model.save(tmp_path / "m.tsm")

    def record(t):
        return {"time": IDX[t].isoformat(), "sales": float(Y.sales.iloc[t]), "promo": float(PROMO[t]),
                "future": {"promo": PROMO[t + 1 : t + 1 + H].tolist()}}

    last = FIT + 4  # rows FIT + 1 .. FIT + 3 are missing: filled with the values of row FIT
    result = run_stream(str(tmp_path / "m.tsm"), [record(FIT), record(last)], gap="ffill")
    assert [line.get("filled", False) for line in result.lines] == [False, True, True, True, False]
    reference = ESSMForecaster.load(tmp_path / "m.tsm").update(Y[FIT : FIT + 1], X[FIT : FIT + 1])
    for step, line in zip(range(FIT + 1, last), result.lines[1:]):
        at = IDX[step : step + 1]
        reference.update(Y[FIT : FIT + 1].set_axis(at), X[FIT : FIT + 1].set_axis(at))
        # the plan at the filled step's next H steps: the record's own value up to its time, its
        # "future" after it -- the real plan, except that the missing rows' own promo is unknown
        plan = X[step + 1 : step + 1 + H].copy()
        plan.loc[plan.index <= IDX[last], "promo"] = PROMO[last]
        expected = reference.predict(X=plan).sales.to_numpy()
        np.testing.assert_allclose(line["forecast"]["sales"], expected, atol=1e-5)
