"""Backtests (windowed and one-pass), metrics and the backtest plot."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from tsessm import ESSMForecaster, NaiveForecaster, StreamingNotSupported
from tsessm import datasets as D
from tsessm import metrics
from tsessm.backtest import BacktestResult, backtest
from tsessm.plotting import plot_backtest

H = 4
LOOKBACK = 16
T = 260
TEST_START = 200
ESSM_KW = dict(
    horizon=H, lookback=LOOKBACK, d_model=8, d_state=8, n_layers=2, epochs=1, steps_per_epoch=3,
    batch_size=8, dropout=0.0, verbose=0, random_state=0, device="cpu",
)


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    t = np.arange(T)
    return pd.DataFrame(
        {
            "a": np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=T),
            "b": 2.0 + np.cos(2 * np.pi * t / 12) + 0.2 * rng.normal(size=T),
        },
        index=pd.date_range("2023-06-01", periods=T, freq="h"),
    )


DF = _frame()


def ramp(n: int) -> pd.DataFrame:
    return pd.DataFrame({"y": np.arange(n, dtype=float)}, index=pd.date_range("2024-01-01", periods=n, freq="h"))


@pytest.fixture(scope="module")
def essm() -> ESSMForecaster:
    return ESSMForecaster(**ESSM_KW).fit(DF.iloc[:TEST_START])


@pytest.fixture(scope="module")
def essm_ms() -> ESSMForecaster:
    return ESSMForecaster(**ESSM_KW, target="b").fit(DF.iloc[:TEST_START])


# ----------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("mode", ["windowed", "one-pass"])
def test_naive_on_a_ramp_hand_computed(mode):
    n, test_start, h = 200, 150, 5
    y = ramp(n)
    model = NaiveForecaster(horizon=h).fit(y.iloc[:100])
    res = backtest(model, y, test_start=test_start, mode=mode)
    assert isinstance(res, BacktestResult)
    assert res.mode == mode
    assert res.targets == ["y"]
    n_windows = n - test_start - h + 1
    assert res.forecasts.shape == res.actuals.shape == (n_windows, h, 1)
    assert list(res.origins) == list(y.index[test_start - 1 : n - h])
    origins = np.arange(test_start - 1, n - h)
    np.testing.assert_array_equal(res.forecasts[:, :, 0], np.repeat(origins[:, None], h, axis=1))
    np.testing.assert_array_equal(res.actuals[:, :, 0], origins[:, None] + np.arange(1, h + 1))
    # every step-k forecast misses by exactly k; metrics are scaled by the train rows' std
    std = np.arange(test_start, dtype=float).std()  # train_rows defaults to test_start
    assert res.scores["mse"] == pytest.approx(np.mean(np.arange(1, h + 1) ** 2) / std**2, rel=1e-12)
    assert res.scores["mae"] == pytest.approx(np.mean(np.arange(1, h + 1)) / std, rel=1e-12)
    assert res.scores["n_windows"] == n_windows
    table = res.by_step
    np.testing.assert_allclose(table.mse.to_numpy(), np.arange(1, h + 1) ** 2 / std**2, rtol=1e-12)


def test_train_rows_sets_the_metric_scaler():
    y = ramp(200)
    model = NaiveForecaster(horizon=5).fit(y.iloc[:100])
    res = backtest(model, y, test_start=150, train_rows=100)
    std = np.arange(100, dtype=float).std()
    assert res.scores["mse"] == pytest.approx(11.0 / std**2, rel=1e-12)
    assert res.mean[0] == pytest.approx(49.5) and res.std[0] == pytest.approx(std)


@pytest.mark.parametrize("n,test_start,h", [(200, 150, 5), (120, 30, 1), (64, 40, 24), (50, 26, 24)])
def test_number_of_windows_is_the_informer_count(n, test_start, h):
    y = np.arange(n, dtype=float)
    model = NaiveForecaster(horizon=h).fit(y[:test_start])
    res = backtest(model, y, test_start=test_start)
    assert res.scores["n_windows"] == len(res.forecasts) == n - test_start - h + 1
    # the last window's final step is the last row of y
    assert res.actuals[-1, -1, 0] == n - 1
    # the first window's first step is row test_start
    assert res.actuals[0, 0, 0] == test_start


def test_seasonal_naive_windowed_needs_a_season_of_lookback():
    y = ramp(100)
    model = NaiveForecaster(horizon=3, season_length=4).fit(y.iloc[:50])
    res = backtest(model, y, test_start=60, lookback=4)
    # step k repeats the value from the last season: forecast(t, k) = t + k - 4
    origins = np.arange(59, 97)
    np.testing.assert_array_equal(res.forecasts[:, :, 0], origins[:, None] + np.arange(1, 4) - 4)
    with pytest.raises(ValueError, match="season_length"):
        backtest(model, y, test_start=60, lookback=2)


# ----------------------------------------------------------------------------- eSSM: both modes


@pytest.mark.parametrize("mode", ["windowed", "one-pass"])
def test_essm_backtest_shapes(essm, essm_ms, mode):
    n = T - TEST_START - H + 1
    res = backtest(essm, DF, test_start=TEST_START, mode=mode)
    assert res.forecasts.shape == res.actuals.shape == (n, H, 2)
    assert res.targets == ["a", "b"]
    assert np.isfinite(res.forecasts).all()
    assert list(res.origins) == list(DF.index[TEST_START - 1 : T - H])
    ms = backtest(essm_ms, DF, test_start=TEST_START, mode=mode)
    assert ms.forecasts.shape == (n, H, 1) and ms.targets == ["b"]
    np.testing.assert_array_equal(ms.actuals[:, :, 0], res.actuals[:, :, 1])


def test_essm_one_pass_last_origin_matches_streaming_predict(essm):
    # the one-pass forecast at an origin is what the fitted model predicts after seeing y up to it
    res = backtest(essm, DF, test_start=TEST_START, mode="one-pass")
    model = copy.deepcopy(essm)
    model.update(DF.iloc[TEST_START : T - H])
    np.testing.assert_allclose(res.forecasts[-1], model.predict().to_numpy(), atol=1e-5, rtol=0)


def test_windowed_depends_only_on_the_last_lookback_rows(essm):
    base = backtest(essm, DF, test_start=TEST_START, mode="windowed")
    far = DF.copy()
    far.iloc[TEST_START - LOOKBACK - 1, :] += 5.0  # just before the first window
    far.iloc[10, :] -= 5.0
    same = backtest(essm, far, test_start=TEST_START, mode="windowed")
    np.testing.assert_array_equal(same.forecasts, base.forecasts)
    # a row inside the first window does matter, to that window and the next ones only
    near = DF.copy()
    near.iloc[TEST_START - LOOKBACK, :] += 5.0  # the first row of the first window
    moved = backtest(essm, near, test_start=TEST_START, mode="windowed")
    assert np.abs(moved.forecasts[0] - base.forecasts[0]).max() > 1e-6
    np.testing.assert_array_equal(moved.forecasts[1:], base.forecasts[1:])


def test_one_pass_depends_on_the_full_history(essm):
    base = backtest(essm, DF, test_start=TEST_START, mode="one-pass")
    far = DF.copy()
    far.iloc[TEST_START - LOOKBACK - 1, :] += 5.0
    moved = backtest(essm, far, test_start=TEST_START, mode="one-pass")
    diff = np.abs(moved.forecasts - base.forecasts).max(axis=(1, 2))
    assert diff[0] > 1e-6
    assert diff[-1] > 0  # the perturbation is still remembered at the last origin


def test_windowed_forecast_is_a_one_pass_run_over_the_window(essm):
    res = backtest(essm, DF, test_start=TEST_START, mode="windowed")
    for i in (0, 17, len(res.origins) - 1):
        origin = TEST_START - 1 + i
        window = DF.iloc[origin - LOOKBACK + 1 : origin + 1 + H]
        single = backtest(essm, window, test_start=LOOKBACK, mode="one-pass")
        assert len(single.forecasts) == 1
        np.testing.assert_allclose(single.forecasts[0], res.forecasts[i], atol=1e-5, rtol=0)


def test_windowed_lookback_override(essm):
    short = backtest(essm, DF, test_start=TEST_START, lookback=8)
    assert short.forecasts.shape == (T - TEST_START - H + 1, H, 2)
    far = DF.copy()
    far.iloc[TEST_START - 9, :] += 5.0  # outside an 8-row window, inside the default 16-row one
    np.testing.assert_array_equal(backtest(essm, far, test_start=TEST_START, lookback=8).forecasts, short.forecasts)
    with pytest.raises(ValueError, match="test_start"):
        backtest(essm, DF, test_start=TEST_START, lookback=TEST_START + 1)


def test_bidirectional_essm_windowed_only():
    model = ESSMForecaster(**ESSM_KW, bidirectional=True).fit(DF.iloc[:TEST_START])
    res = backtest(model, DF, test_start=TEST_START, mode="windowed")
    assert res.forecasts.shape == (T - TEST_START - H + 1, H, 2)
    assert np.isfinite(res.forecasts).all()
    with pytest.raises(StreamingNotSupported):
        backtest(model, DF, test_start=TEST_START, mode="one-pass")


# ----------------------------------------------------------------------------- by_step and scores


def test_by_step_is_tidy_and_averages_to_scores(essm):
    res = backtest(essm, DF, test_start=TEST_START)
    table = res.by_step
    assert list(table.columns) == ["step", "target", "mse", "mae"]
    assert len(table) == H * 2
    assert sorted(set(table.step)) == list(range(1, H + 1))
    assert set(table.target) == {"a", "b"}
    assert not table.duplicated(["step", "target"]).any()
    assert table.mse.mean() == pytest.approx(res.scores["mse"], rel=1e-10)
    assert table.mae.mean() == pytest.approx(res.scores["mae"], rel=1e-10)
    # one row checked by hand
    f, a = res.scaled(res.forecasts), res.scaled(res.actuals)
    row = table[(table.step == 3) & (table.target == "b")].iloc[0]
    assert row.mse == pytest.approx(np.mean((f[:, 2, 1] - a[:, 2, 1]) ** 2), rel=1e-12)
    assert row.mae == pytest.approx(np.mean(np.abs(f[:, 2, 1] - a[:, 2, 1])), rel=1e-12)


def test_scores_are_on_train_scaled_values(essm):
    res = backtest(essm, DF, test_start=TEST_START, train_rows=150)
    np.testing.assert_allclose(res.mean, DF.iloc[:150].mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(res.std, DF.iloc[:150].std(ddof=0).to_numpy(), rtol=1e-12)
    raw = np.mean(((res.forecasts - res.actuals) / res.std) ** 2)
    assert res.scores["mse"] == pytest.approx(raw, rel=1e-10)


# ----------------------------------------------------------------------------- errors


def test_bad_mode(essm):
    with pytest.raises(ValueError, match="mode"):
        backtest(essm, DF, test_start=TEST_START, mode="rolling")


@pytest.mark.parametrize("test_start", [LOOKBACK - 1, 0, T - H + 1])
def test_test_start_out_of_range(essm, test_start):
    with pytest.raises(ValueError, match="test_start"):
        backtest(essm, DF, test_start=test_start)


def test_test_start_bounds_are_inclusive():
    y = ramp(40)
    model = NaiveForecaster(horizon=4).fit(y.iloc[:20])
    assert backtest(model, y, test_start=36).scores["n_windows"] == 1
    assert backtest(model, y, test_start=1).scores["n_windows"] == 36


def test_missing_column(essm):
    with pytest.raises(ValueError, match="'b'"):
        backtest(essm, DF[["a"]], test_start=TEST_START)


def test_bad_values_in_y(essm):
    bad = DF.copy()
    bad.iloc[230, 1] = np.nan
    with pytest.raises(ValueError, match=r"'b'.*row 230"):
        backtest(essm, bad, test_start=TEST_START)


def test_unfitted_model():
    with pytest.raises(NotFittedError):
        backtest(NaiveForecaster(horizon=H), DF, test_start=TEST_START)


# ----------------------------------------------------------------------------- metrics


def test_metrics_against_numpy():
    rng = np.random.default_rng(5)
    f, a = rng.normal(size=(7, 3, 2)), rng.normal(size=(7, 3, 2))
    assert isinstance(metrics.mse(f, a), float)
    assert metrics.mse(f, a) == pytest.approx(np.mean((f - a) ** 2), rel=1e-12)
    assert metrics.mae(f, a) == pytest.approx(np.mean(np.abs(f - a)), rel=1e-12)
    assert metrics.mse(a, a) == 0.0 and metrics.mae(a, a) == 0.0
    assert metrics.mse(np.zeros(3), np.array([1.0, 2.0, 2.0])) == pytest.approx(3.0)
    assert metrics.mae(np.zeros(3), np.array([1.0, -2.0, 3.0])) == pytest.approx(2.0)
    table = metrics.by_step(f, a, ["p", "q"])
    for _, row in table.iterrows():
        s, j = int(row.step) - 1, ["p", "q"].index(row.target)
        assert row.mse == pytest.approx(np.mean((f[:, s, j] - a[:, s, j]) ** 2), rel=1e-12)
        assert row.mae == pytest.approx(np.mean(np.abs(f[:, s, j] - a[:, s, j])), rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        metrics.by_step(f, a[:, :2], ["p", "q"])


# ----------------------------------------------------------------------------- plot


def test_plot_backtest_writes_png(essm, tmp_path):
    naive = NaiveForecaster(horizon=H).fit(DF.iloc[:TEST_START])
    results = {
        "naive": backtest(naive, DF, test_start=TEST_START),
        "essm": backtest(essm, DF, test_start=TEST_START),
    }
    path = tmp_path / "bt.png"
    plot_backtest(results, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000
    other = tmp_path / "bt_b.png"
    plot_backtest(results, other, target="b", step=2)
    assert other.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- real data


def test_etth1_naive_univariate_h24():
    """ETTh1 OT, S setting, H=24: the windowed naive baseline on the protocol's test split."""
    L, h = 96, 24
    frame = D.load("ETTh1")[["OT"]]
    borders = D.splits("ETTh1", L)
    train_start, train_stop = borders["train"]
    test_first, test_stop = borders["test"]
    assert (train_stop, test_first + L, test_stop) == (8640, 11520, 14400)
    model = NaiveForecaster(horizon=h, target="OT").fit(frame.iloc[train_start:train_stop])
    res = backtest(model, frame.iloc[:test_stop], test_start=test_first + L, train_rows=train_stop, lookback=L)
    assert res.scores["n_windows"] == 2880 - h + 1
    assert res.origins[0] == frame.index[11519]
    assert res.actuals[-1, -1, 0] == frame["OT"].iloc[test_stop - 1]
    np.testing.assert_allclose(res.std, frame["OT"].iloc[:train_stop].std(ddof=0), rtol=1e-12)
    assert 0.02 < res.scores["mse"] < 0.05  # about 0.034
