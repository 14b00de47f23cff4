"""Calendar frequencies (issue 19, item 1): months, quarters, business days, weeks and hours across
daylight saving, as pandas offsets: inference, freq=, gaps, forecast timestamps, update/observe,
backtests, model files, the panel and the stream."""
import json

import numpy as np
import pandas as pd
import pytest

from tsessm import ARIMAForecaster, ESSMForecaster, NaiveForecaster
from tsessm.backtest import backtest
from tsessm.data import as_offset, future_index, infer_freq, same_freq, to_series
from tsessm.forecasters.base import BaseForecaster
from tsessm.forecasters.panel import PanelForecaster
from tsessm.stream import run_stream
from tsessm.stream.cli import main as stream_main
from tsessm.stream.grid import steps_between

H = 4


def essm(**kw):
    return ESSMForecaster(horizon=H, lookback=8, d_model=8, d_state=8, epochs=1, steps_per_epoch=2, verbose=0,
                          random_state=0, device="cpu", **kw)


MODELS = {
    "essm": essm,
    "arima": lambda **kw: ARIMAForecaster(horizon=H, **kw),
    "naive": lambda **kw: NaiveForecaster(horizon=H, **kw),
}


def frame(index, name="y"):
    t = np.arange(len(index), dtype=float)
    return pd.DataFrame({name: np.sin(t / 3) + 0.02 * t + 5.0}, index=index)


@pytest.fixture(scope="module")
def macro():
    """statsmodels' macrodata, quarterly from 1959Q1, indexed by quarter starts."""
    sm = pytest.importorskip("statsmodels.api")
    data = sm.datasets.macrodata.load_pandas().data
    index = pd.PeriodIndex.from_fields(year=data["year"].astype(int), quarter=data["quarter"].astype(int),
                                       freq="Q").to_timestamp(how="start")
    return pd.DataFrame({"realgdp": data["realgdp"].to_numpy(), "infl": data["infl"].to_numpy()},
                        index=pd.DatetimeIndex(index, name="quarter"))


def monthly(alias, n=72):
    return frame(pd.date_range("2015-01-01", periods=n, freq=alias, name="month"))


# ----- inference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["MS", "ME", "QS-OCT", "B", "W-SUN", "h", "15min", "D"])
def test_inferred_offset_and_future_index(alias):
    index = pd.date_range("2020-01-01", periods=30, freq=alias)
    s = to_series(pd.DataFrame({"y": np.arange(30.0)}, index=pd.DatetimeIndex(list(index))))  # no .freq
    assert same_freq(s.freq, alias)
    expected = pd.date_range(index[-1], periods=4, freq=alias)[1:]
    assert list(future_index(s.index, s.freq, np.array([1, 2, 3]))) == list(expected)


@pytest.mark.parametrize("alias", ["MS", "ME", "QS-OCT", "B", "W-SUN"])
def test_a_gap_is_named_and_filled_on_the_offsets_grid(alias):
    index = pd.date_range("2020-01-01", periods=30, freq=alias)
    holed = pd.DataFrame({"y": np.arange(30.0)}, index=index).drop(index[10])
    with pytest.raises(ValueError) as err:
        to_series(holed)  # pandas names no frequency here: the fallback finds the offset
    msg = str(err.value)
    assert "gap after row 9" in msg and str(index[9]) in msg and str(index[10]) in msg and str(index[11]) in msg
    s = to_series(holed, missing="interpolate")
    assert list(s.index) == list(index) and s.filled.sum() == 1 and s.filled[10]
    np.testing.assert_allclose(s.values[:, 0], np.arange(30.0))


def test_weekends_are_no_gap_in_business_days():
    index = pd.bdate_range("2024-01-01", periods=20)
    s = to_series(frame(index))
    assert isinstance(s.freq, pd.offsets.BusinessDay) and not s.filled.any()
    friday = index[index.day_of_week == 4][0]
    s = to_series(frame(index[index <= friday]))
    assert future_index(s.index, s.freq, np.array([1]))[0].day_of_week == 0  # Monday


def test_off_grid_and_unnamed_steps_ask_for_freq():
    index = pd.DatetimeIndex(["2024-01-01", "2024-02-01", "2024-03-15", "2024-04-01"])
    with pytest.raises(ValueError, match=r"irregular.*row \d.*freq="):
        to_series(frame(index))
    with pytest.raises(ValueError, match=r"irregular.*row 2.*off the MS grid"):
        to_series(frame(index), freq="MS")


def test_freq_alias_checked_and_integer_steps_kept():
    with pytest.raises(ValueError, match=r"freq='fortnightly'"):
        to_series(monthly("MS"), freq="fortnightly")
    with pytest.raises(ValueError, match="freq"):
        essm(freq="fortnightly").fit(monthly("MS"))
    assert to_series(np.arange(10.0)).freq == 1
    assert infer_freq(pd.RangeIndex(5)) == 1
    with pytest.raises(ValueError, match="integer steps"):
        NaiveForecaster(horizon=2, freq="MS").fit(np.arange(10.0))


def test_two_rows_of_months_are_monthly():
    s = to_series(frame(pd.DatetimeIndex(["2024-01-01", "2024-02-01"])))
    assert isinstance(s.freq, pd.offsets.MonthBegin)


def test_steps_between_on_calendar_offsets():
    jan, may = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-05-01")
    assert steps_between(jan, may, as_offset("MS")) == 4
    assert steps_between(jan, pd.Timestamp("2024-05-02"), as_offset("MS")) is None
    assert steps_between(pd.Timestamp("2024-01-05"), pd.Timestamp("2024-01-08"), as_offset("B")) == 1
    assert steps_between(jan, jan + pd.Timedelta("3h"), pd.Timedelta("1h")) == 3  # old files: a Timedelta


# ----- forecasters on months and quarters --------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("alias", ["MS", "ME"])
def test_monthly_fit_predict_update_observe_backtest(name, alias):
    y = monthly(alias)
    model = MODELS[name]().fit(y.iloc[:48])
    assert same_freq(model.freq_, alias)
    out = model.predict()
    assert list(out.index) == list(pd.date_range(y.index[47], periods=H + 1, freq=alias)[1:])
    model.update(y.iloc[48:52])
    assert model.predict().index[0] == y.index[52]
    forecast = model.observe(y.iloc[52].to_numpy(), time=y.index[52])
    assert forecast.shape == (H, 1) and model.last_index_[0] == y.index[52]
    assert model.predict().index[0] == y.index[53]
    with pytest.raises(ValueError, match=str(y.index[53].date())):  # a skipped month is a gap
        model.update(y.iloc[54:56])
    with pytest.raises(ValueError, match="expected"):
        model.observe([1.0], time=y.index[55])
    modes = ["windowed"] + (["one-pass"] if name != "naive" or model.can_stream else [])
    for mode in modes:
        result = backtest(model, y, test_start=48, mode=mode)
        assert result.forecasts.shape[1:] == (H, 1) and np.isfinite(result.forecasts).all()
        assert list(result.origins[:2]) == list(y.index[47:49])


@pytest.mark.parametrize("name", list(MODELS))
def test_quarterly_macrodata(name, macro):
    y = macro[["realgdp"]]
    model = MODELS[name]().fit(y.iloc[:180])
    assert same_freq(model.freq_, "QS-OCT")
    index = model.predict().index
    assert list(index) == list(pd.date_range(y.index[179], periods=H + 1, freq="QS-OCT")[1:])
    assert [ts.month for ts in index] == [(y.index[179].month - 1 + 3 * k) % 12 + 1 for k in range(1, H + 1)]
    model.update(y.iloc[180:190])
    model.observe(y.iloc[190].to_numpy())
    assert model.predict().index[0] == y.index[191]
    for mode in ("windowed", "one-pass"):
        result = backtest(model, y, test_start=180, mode=mode)
        assert np.isfinite(result.forecasts).all()


def test_a_missing_quarter_is_a_gap_naming_it(macro):
    y = macro[["infl"]].drop(macro.index[20])
    with pytest.raises(ValueError) as err:
        essm().fit(y)
    msg = str(err.value)
    assert "gap" in msg and str(macro.index[20]) in msg and str(macro.index[19]) in msg
    model = NaiveForecaster(horizon=H, missing="ffill").fit(y)
    assert model.n_seen_ == len(macro)


def test_freq_override(macro):
    y = macro[["infl"]]
    model = essm(freq="QS-OCT").fit(y.iloc[:100])
    assert model.freq_ == pd.tseries.frequencies.to_offset("QS-OCT")
    assert model.predict().index[0] == y.index[100]
    # a freq that the data do not follow is refused, naming the row
    with pytest.raises(ValueError, match=r"off the MS grid|gap"):
        NaiveForecaster(horizon=H, freq="MS").fit(y.iloc[:20])
    # a coarser freq the data do follow with gaps: every other month
    months = pd.date_range("2020-01-01", periods=24, freq="2MS")
    model = NaiveForecaster(horizon=2, freq="MS", missing="ffill").fit(frame(months))
    assert model.n_seen_ == 47 and model.predict().index[0] == months[-1] + pd.offsets.MonthBegin()


def test_business_days_skip_weekends_in_predict_and_update():
    index = pd.bdate_range("2024-01-01", periods=80)
    y = frame(index)
    friday = int(np.flatnonzero(index.day_of_week == 4)[-3])
    model = essm().fit(y.iloc[:friday + 1])
    assert isinstance(model.freq_, pd.offsets.BusinessDay)
    out = model.predict()
    assert list(out.index) == list(index[friday + 1:friday + 1 + H])
    assert out.index[0].day_of_week == 0
    model.update(y.iloc[friday + 1:friday + 3])  # Monday, Tuesday
    model.observe(y.iloc[friday + 3].to_numpy(), time=index[friday + 3])
    assert model.predict().index[0] == index[friday + 4]


def test_tz_aware_hours_across_daylight_saving():
    index = pd.date_range("2021-03-26", periods=120, freq="h", tz="Europe/Berlin", name="time")
    y = frame(index)
    cut = int(np.flatnonzero(index == pd.Timestamp("2021-03-28 00:00", tz="Europe/Berlin"))[0])
    model = essm().fit(y.iloc[:cut + 1])
    out = model.predict()
    assert list(out.index) == list(index[cut + 1:cut + 1 + H])  # 01:00, 03:00 (02:00 does not exist), ...
    assert out.index[1] == pd.Timestamp("2021-03-28 03:00", tz="Europe/Berlin")
    model.update(y.iloc[cut + 1:cut + 3])
    for row in range(cut + 3, cut + 6):
        model.observe(y.iloc[row].to_numpy(), time=index[row])
    assert model.predict().index[0] == index[cut + 6]
    for mode in ("windowed", "one-pass"):
        assert np.isfinite(backtest(model, y, test_start=cut, mode=mode).forecasts).all()


def test_polars_monthly_input():
    pl = pytest.importorskip("polars")
    y = monthly("MS", 40)
    frame_pl = pl.from_pandas(y.reset_index())
    model = essm().fit(frame_pl.head(36))
    assert isinstance(model.freq_, pd.offsets.MonthBegin)
    out = model.predict()
    assert isinstance(out, pl.DataFrame)
    assert out["month"].to_list() == list(pd.date_range("2018-01-01", periods=H, freq="MS").to_pydatetime())
    model.update(frame_pl.slice(36, 2))
    assert model.predict()["month"][0] == pd.Timestamp("2018-03-01").to_pydatetime()


# ----- model files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["MS", "ME", "QS-OCT", "B", "W-SUN", "h", "15min"])
def test_save_load_keeps_the_offset(alias, tmp_path):
    y = frame(pd.date_range("2020-01-06", periods=40, freq=alias, name="t"))
    model = NaiveForecaster(horizon=H).fit(y)
    model.save(tmp_path / "m.tsm")
    loaded = BaseForecaster.load(tmp_path / "m.tsm")
    assert loaded.freq_ == model.freq_ and type(loaded.freq_) is type(model.freq_)
    pd.testing.assert_frame_equal(loaded.predict(), model.predict())


def test_save_load_essm_monthly(tmp_path):
    y = monthly("ME")
    model = essm().fit(y.iloc[:60])
    model.save(tmp_path / "m.tsm")
    loaded = BaseForecaster.load(tmp_path / "m.tsm")
    pd.testing.assert_frame_equal(loaded.predict(), model.predict())
    loaded.update(y.iloc[60:62])
    assert loaded.predict().index[0] == y.index[62]


def test_old_files_with_a_timedelta_step_still_work(tmp_path):
    """Files of tsessm 0.3 hold freq_ as a Timedelta: predict, update and observe still step by it."""
    y = frame(pd.date_range("2024-01-01", periods=40, freq="h", name="t"))
    model = NaiveForecaster(horizon=H).fit(y.iloc[:30])
    model.freq_ = pd.Timedelta("1h")
    model.save(tmp_path / "old.tsm")
    loaded = BaseForecaster.load(tmp_path / "old.tsm")
    assert loaded.predict().index[0] == y.index[30]
    loaded.update(y.iloc[30:32])
    loaded.observe(y.iloc[32].to_numpy(), time=y.index[32])
    assert loaded.predict().index[0] == y.index[33]


# ----- panel ---------------------------------------------------------------------------------------
def long_panel(alias, ids=("a", "b"), n=40, start="2018-01-01"):
    parts = []
    for k, key in enumerate(ids):
        index = pd.date_range(start, periods=n, freq=alias)
        t = np.arange(n, dtype=float)
        parts.append(pd.DataFrame({"unique_id": key, "ds": index, "y": np.sin(t / 3 + k) + 3.0}))
    return pd.concat(parts, ignore_index=True)


def test_panel_with_monthly_series(tmp_path):
    df = long_panel("MS")
    fit_part = df.groupby("unique_id").head(36)
    panel = PanelForecaster(essm()).fit(fit_part)
    assert isinstance(panel.freq_, pd.offsets.MonthBegin)
    out = panel.predict()
    assert list(out.loc[out["unique_id"] == "a", "ds"]) == list(pd.date_range("2021-01-01", periods=H, freq="MS"))
    rest = df.groupby("unique_id").nth(range(36, 38)).reset_index(drop=True)
    panel.update(rest)
    assert panel.predict()["ds"].iloc[0] == pd.Timestamp("2021-03-01")
    skipped = df.groupby("unique_id").nth([39]).reset_index(drop=True)
    with pytest.raises(ValueError, match="2021-03-01"):
        panel.update(skipped)
    panel.save(tmp_path / "panel.tsm")
    loaded = BaseForecaster.load(tmp_path / "panel.tsm")
    pd.testing.assert_frame_equal(loaded.predict(), panel.predict())


def test_panel_refuses_mixed_frequencies():
    df = pd.concat([long_panel("MS", ids=("a",)), long_panel("W-SUN", ids=("b",))], ignore_index=True)
    with pytest.raises(ValueError, match="different frequencies"):
        PanelForecaster(essm()).fit(df)


# ----- stream --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def monthly_stream(tmp_path_factory):
    y = frame(pd.date_range("2010-01-01", periods=80, freq="MS", name="time"), name="sales")
    path = tmp_path_factory.mktemp("calendar_stream") / "model.tsm"
    essm().fit(y.iloc[:60]).save(path)
    return path, y


def records(frame_):
    return [{"time": ts.isoformat(), **{c: float(v) for c, v in row.items()}} for ts, row in frame_.iterrows()]


def test_stream_on_monthly_data(monthly_stream):
    path, y = monthly_stream
    new = y.iloc[60:]
    result = run_stream(str(path), records(new))
    assert result.status == "end" and result.counters.applied == len(new)
    assert [line["time"] for line in result.lines] == [ts.isoformat() for ts in new.index]
    model = BaseForecaster.load(path)
    model.update(new)
    np.testing.assert_allclose(result.lines[-1]["forecast"]["sales"], model.predict()["sales"].to_numpy(),
                               atol=1e-5, rtol=0)


def test_stream_missing_month_filled_or_refused(monthly_stream, tmp_path, capsys):
    path, y = monthly_stream
    new = y.iloc[60:]
    holed = new.drop(new.index[5])
    result = run_stream(str(path), records(holed), gap="ffill")
    assert result.status == "end" and result.counters.filled == 1
    assert [line["time"] for line in result.lines] == [ts.isoformat() for ts in new.index]
    assert result.lines[5].get("filled") is True
    csv = tmp_path / "holed.csv"
    holed.reset_index().to_csv(csv, index=False, float_format="%.17g")
    code = stream_main(["--model", str(path), "--input", str(csv), "--output", str(tmp_path / "o.jsonl"),
                        "--checkpoint", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 1 and "gap" in err and new.index[5].isoformat() in err and "--gap ffill" in err
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(lines) == 5
    # off the monthly grid: a bad record
    off = records(new.iloc[:2]) + [{"time": "2015-03-15T00:00:00", "sales": 1.0}]
    result = run_stream(str(path), off, on_bad_record="skip")
    assert result.counters.bad == 1 and result.counters.applied == 2
