"""Input validation and conversion: tsessm.data.to_series / to_output and friends."""
from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal as pl_assert_frame_equal

from tsessm.data import (
    Series,
    future_index,
    infer_freq,
    resolve_target,
    to_output,
    to_series,
    with_covariates,
)

N = 48


def hourly(n: int = N, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h")


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {"a": np.arange(N, dtype=float), "b": rng.normal(size=N)}, index=hourly()
    )


def roundtrip(s: Series):
    return to_output(s.values, s.columns, s.index, s)


# ----------------------------------------------------------------------------- good inputs


def test_pandas_frame_roundtrip(frame):
    s = to_series(frame)
    assert s.kind == "pandas"
    assert s.columns == ["a", "b"]
    assert s.values.dtype == np.float64 and s.values.shape == (N, 2)
    np.testing.assert_array_equal(s.values, frame.to_numpy())
    assert isinstance(s.index, pd.DatetimeIndex) and s.index.equals(frame.index)
    assert pd.Timedelta(s.freq) == pd.Timedelta("1h")
    assert not s.filled.any() and len(s.filled) == N
    assert len(s) == N
    out = roundtrip(s)
    assert isinstance(out, pd.DataFrame)
    pd.testing.assert_frame_equal(out, frame, check_freq=False)


def test_pandas_integer_columns_become_strings():
    df = pd.DataFrame(np.ones((5, 2)), index=hourly(5), columns=[3, 7])
    s = to_series(df)
    assert s.columns == ["3", "7"]


@pytest.mark.parametrize("missing", [None, np.nan])
def test_missing_column_label_becomes_a_string(missing):
    df = pd.DataFrame(np.ones((5, 2)), index=hourly(5), columns=["a", missing])
    columns = to_series(df).columns
    assert columns[0] == "a" and isinstance(columns[1], str)


def test_pandas_series_roundtrip():
    y = pd.Series(np.linspace(0.0, 1.0, N), index=hourly(), name="load")
    s = to_series(y)
    assert s.kind == "pandas-series"
    assert s.columns == ["load"]
    assert s.values.shape == (N, 1)
    out = roundtrip(s)
    assert isinstance(out, pd.Series)
    pd.testing.assert_series_equal(out, y, check_freq=False)


def test_unnamed_pandas_series_gets_column_y():
    y = pd.Series(np.arange(5.0), index=hourly(5))
    assert to_series(y).columns == ["y"]


def test_pandas_integer_index_is_steps():
    df = pd.DataFrame({"a": np.arange(6.0)}, index=pd.Index(np.arange(10, 16)))
    s = to_series(df)
    assert s.freq == 1
    assert list(s.index) == list(range(10, 16))


def test_polars_roundtrip(frame):
    pf = pl.from_pandas(frame.reset_index(names="time"))
    s = to_series(pf)
    assert s.kind == "polars"
    assert s.time_col == "time"
    assert s.columns == ["a", "b"]
    np.testing.assert_array_equal(s.values, frame.to_numpy())
    assert list(s.index) == list(frame.index)
    assert pd.Timedelta(s.freq) == pd.Timedelta("1h")
    out = roundtrip(s)
    assert isinstance(out, pl.DataFrame)
    assert out.columns == ["time", "a", "b"]
    pl_assert_frame_equal(out, pf)


def test_polars_time_column_anywhere_and_any_name(frame):
    pf = pl.from_pandas(frame.reset_index(names="stamp")).select("a", "stamp", "b")
    s = to_series(pf)
    assert s.time_col == "stamp"
    assert s.columns == ["a", "b"]
    assert list(s.index) == list(frame.index)


def test_polars_date_column_is_accepted():
    pf = pl.DataFrame(
        {"day": pl.date_range(pl.date(2024, 1, 1), pl.date(2024, 1, 5), eager=True), "v": [1.0, 2, 3, 4, 5]}
    )
    s = to_series(pf)
    assert s.time_col == "day"
    assert pd.Timedelta(s.freq) == pd.Timedelta("1D")
    np.testing.assert_array_equal(s.values[:, 0], [1, 2, 3, 4, 5])


def test_numpy_1d_roundtrip():
    y = np.linspace(-1.0, 1.0, N)
    s = to_series(y)
    assert s.kind == "numpy-1d"
    assert s.columns == ["0"]
    assert s.values.shape == (N, 1)
    assert s.freq == 1
    assert list(s.index) == list(range(N))
    out = roundtrip(s)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, y[:, None])


def test_numpy_2d_roundtrip():
    y = np.arange(3 * N, dtype=np.int32).reshape(N, 3)
    s = to_series(y)
    assert s.kind == "numpy-2d"
    assert s.columns == ["0", "1", "2"]
    assert s.values.dtype == np.float64
    out = roundtrip(s)
    assert isinstance(out, np.ndarray) and out.shape == (N, 3)
    np.testing.assert_array_equal(out, y.astype(float))


def test_to_output_future_index_pandas(frame):
    s = to_series(frame)
    steps = np.array([1, 2, 3])
    idx = future_index(s.index, s.freq, steps)
    expected = pd.date_range(frame.index[-1] + pd.Timedelta("1h"), periods=3, freq="h")
    assert list(idx) == list(expected)
    out = to_output(np.zeros((3, 1)), ["a"], idx, s)
    assert list(out.columns) == ["a"] and list(out.index) == list(expected)
    out.columns.name = "renamed by the caller"  # in place: must not reach the next forecast
    assert to_output(np.zeros((3, 1)), ["a"], idx, s).columns.name is None


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Berlin"])
@pytest.mark.parametrize("unit", ["s", "us", "ns"])
def test_future_index_keeps_time_zone_and_absolute_steps(tz, unit):
    # 2021-03-28 crosses the Berlin spring-forward hour: steps are absolute time, not wall time
    idx = pd.date_range("2021-03-28 00:00", periods=2, freq="h", tz=tz, name="when").as_unit(unit)
    steps = np.array([1, 2, 5])
    out = future_index(idx, pd.Timedelta("1h"), steps)
    expected = [idx[-1] + k * pd.Timedelta("1h") for k in steps]
    assert list(out) == expected and out.tz == idx.tz and out.name == "when"


def test_future_index_integer_steps():
    s = to_series(np.zeros(10))
    idx = future_index(s.index, s.freq, np.array([1, 3]))
    assert list(idx) == [10, 12]


def test_infer_freq_is_smallest_step():
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:15", "2024-01-01 01:00", "2024-01-01 01:15"])
    assert infer_freq(idx) == pd.Timedelta("15min")
    assert infer_freq(pd.RangeIndex(5)) == 1


def test_explicit_freq_for_single_row():
    one = pd.DataFrame({"a": [1.0]}, index=hourly(1))
    s = to_series(one, freq=pd.Timedelta("1h"))
    assert len(s) == 1 and s.freq == pd.Timedelta("1h")


# ----------------------------------------------------------------------------- bad values


def test_nan_names_column_and_row(frame):
    frame.iloc[7, 1] = np.nan
    with pytest.raises(ValueError) as err:
        to_series(frame)
    msg = str(err.value)
    assert "'b'" in msg and "row 7" in msg and "NaN" in msg
    assert str(frame.index[7]) in msg


def test_nan_numpy_names_row():
    y = np.ones((10, 2))
    y[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"'1'.*NaN.*row 4"):
        to_series(y)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_names_column_and_row(frame, bad):
    frame.iloc[11, 0] = bad
    with pytest.raises(ValueError, match=r"'a'.*infinite.*row 11"):
        to_series(frame)


def test_inf_is_not_filled_by_missing_policy(frame):
    frame.iloc[3, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        to_series(frame, missing="ffill")


def test_duplicate_timestamp(frame):
    idx = frame.index.tolist()
    idx[5] = idx[4]
    frame.index = pd.DatetimeIndex(idx)
    with pytest.raises(ValueError, match=r"duplicate timestamp at row 5"):
        to_series(frame)


def test_unsorted_timestamps(frame):
    idx = frame.index.tolist()
    idx[8], idx[9] = idx[9], idx[8]
    frame.index = pd.DatetimeIndex(idx)
    with pytest.raises(ValueError, match=r"not increasing at row 9"):
        to_series(frame)


def test_missing_timestamp(frame):
    idx = frame.index.tolist()
    idx[2] = pd.NaT
    frame.index = pd.DatetimeIndex(idx)
    with pytest.raises(ValueError, match=r"missing timestamp at row 2"):
        to_series(frame)


def test_off_grid_timestamp():
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 02:30", "2024-01-01 03:30"])
    df = pd.DataFrame({"a": np.arange(4.0)}, index=idx)
    with pytest.raises(ValueError, match=r"irregular.*row 2"):
        to_series(df)


@pytest.fixture
def gapped(frame) -> pd.DataFrame:
    """Rows 10, 11, 12 removed: a gap after row 9."""
    return frame.drop(frame.index[10:13])


def test_gap_is_an_error_naming_the_gap(gapped, frame):
    with pytest.raises(ValueError) as err:
        to_series(gapped)
    msg = str(err.value)
    assert "gap" in msg
    assert "row 9" in msg
    assert str(frame.index[9]) in msg  # last observation before the gap
    assert str(frame.index[13]) in msg  # the next observation
    assert "ffill" in msg  # says how to fill it


def test_gap_ffill(gapped, frame):
    s = to_series(gapped, missing="ffill")
    assert len(s) == N
    assert list(s.index) == list(frame.index)
    expected_filled = np.zeros(N, bool)
    expected_filled[10:13] = True
    np.testing.assert_array_equal(s.filled, expected_filled)
    np.testing.assert_array_equal(s.values[10:13], np.repeat(frame.to_numpy()[9:10], 3, axis=0))
    keep = ~expected_filled
    np.testing.assert_array_equal(s.values[keep], gapped.to_numpy())


def test_gap_interpolate(gapped, frame):
    s = to_series(gapped, missing="interpolate")
    assert len(s) == N
    assert s.filled.sum() == 3 and s.filled[10:13].all()
    # column a is a linear ramp, so interpolation restores it exactly
    np.testing.assert_allclose(s.values[:, 0], frame["a"].to_numpy())
    b9, b13 = frame["b"].iloc[9], frame["b"].iloc[13]
    np.testing.assert_allclose(s.values[10:13, 1], b9 + (b13 - b9) * np.array([1, 2, 3]) / 4)


def test_gap_in_integer_steps_is_filled():
    df = pd.DataFrame({"a": [0.0, 1.0, 4.0]}, index=pd.Index([0, 1, 4]))
    with pytest.raises(ValueError, match="gap after row 1"):
        to_series(df)
    s = to_series(df, missing="interpolate")
    np.testing.assert_allclose(s.values[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(s.filled, [False, False, True, True, False])


def test_nan_ffill_and_interpolate(frame):
    frame.iloc[5, 0] = np.nan
    ff = to_series(frame, missing="ffill")
    assert ff.values[5, 0] == frame.iloc[4, 0]
    it = to_series(frame, missing="interpolate")
    assert it.values[5, 0] == pytest.approx(5.0)  # column a is the ramp 0, 1, 2, ...
    assert not np.isnan(ff.values).any() and not np.isnan(it.values).any()


@pytest.mark.parametrize("missing", ["ffill", "interpolate"])
def test_leading_nan_has_nothing_to_fill_from(frame, missing):
    frame.iloc[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"'b'.*row 0.*no earlier value"):
        to_series(frame, missing=missing)


def test_unknown_missing_policy(frame):
    with pytest.raises(ValueError, match="missing"):
        to_series(frame, missing="zero")


# ----------------------------------------------------------------------------- bad structure


def test_non_numeric_column_is_type_error(frame):
    frame["label"] = ["x"] * N
    with pytest.raises(TypeError, match=r"'label'.*not numeric"):
        to_series(frame)


def test_bool_column_is_type_error(frame):
    frame["flag"] = True
    with pytest.raises(TypeError, match=r"'flag'"):
        to_series(frame)


def test_polars_non_numeric_column(frame):
    pf = pl.from_pandas(frame.reset_index(names="time")).with_columns(pl.lit("x").alias("tag"))
    with pytest.raises(TypeError, match=r"'tag'"):
        to_series(pf)


def test_duplicate_column_names():
    df = pd.DataFrame(np.ones((4, 2)), index=hourly(4), columns=["a", "a"])
    with pytest.raises(ValueError, match=r"'a'.*more than once"):
        to_series(df)


def test_polars_without_datetime_column():
    with pytest.raises(ValueError, match=r"exactly one Datetime column, found 0"):
        to_series(pl.DataFrame({"a": [1.0, 2.0, 3.0]}))


def test_polars_with_two_datetime_columns(frame):
    pf = pl.from_pandas(frame.reset_index(names="t1")).with_columns(pl.col("t1").alias("t2"))
    with pytest.raises(ValueError) as err:
        to_series(pf)
    msg = str(err.value)
    assert "found 2" in msg and "t1" in msg and "t2" in msg


def test_string_index_is_type_error():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=["x", "y", "z"])
    with pytest.raises(TypeError, match="DatetimeIndex"):
        to_series(df)


def test_float_index_is_type_error():
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=[0.5, 1.5, 2.5])
    with pytest.raises(TypeError, match="index"):
        to_series(df)


@pytest.mark.parametrize(
    "empty",
    [
        pd.DataFrame({"a": []}, index=pd.DatetimeIndex([])),
        pd.DataFrame(index=hourly(5)),
        pd.Series([], dtype=float, index=pd.DatetimeIndex([])),
        pl.DataFrame({"t": pl.Series([], dtype=pl.Datetime), "a": pl.Series([], dtype=pl.Float64)}),
        np.empty((0, 2)),
        np.array([]),
    ],
    ids=["pandas-no-rows", "pandas-no-columns", "pandas-series", "polars", "numpy-2d", "numpy-1d"],
)
def test_empty_input(empty):
    with pytest.raises(ValueError, match="empty"):
        to_series(empty)


def test_numpy_3d_is_value_error():
    with pytest.raises(ValueError, match=r"1-D or 2-D.*\(2, 3, 4\)"):
        to_series(np.zeros((2, 3, 4)))


@pytest.mark.parametrize("arr", [np.array(["a", "b"]), np.array([1 + 2j, 3j]), np.array([True, False])])
def test_numpy_non_real_dtype_is_type_error(arr):
    with pytest.raises(TypeError):
        to_series(arr)


@pytest.mark.parametrize("bad", [{"a": [1.0, 2.0]}, "1,2,3", 3.0, None])
def test_unsupported_type_is_type_error(bad):
    with pytest.raises(TypeError, match="pandas DataFrame"):
        to_series(bad)


def test_name_appears_in_messages(frame):
    frame.iloc[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"^y_new: "):
        to_series(frame, name="y_new")


# ----------------------------------------------------------------------------- targets, covariates


def test_resolve_target():
    cols = ["a", "b", "c"]
    assert resolve_target(cols, None) == cols
    assert resolve_target(cols, "b") == ["b"]
    assert resolve_target(cols, ["c", "a"]) == ["c", "a"]
    assert resolve_target(["0", "1"], 1) == ["1"]


def test_resolve_target_unknown_column():
    with pytest.raises(ValueError) as err:
        resolve_target(["a", "b"], "OT")
    assert "'OT'" in str(err.value) and "a, b" in str(err.value)
    with pytest.raises(ValueError, match="'zz'"):
        resolve_target(["a", "b"], ["a", "zz"])


def test_resolve_target_empty_or_repeated():
    with pytest.raises(ValueError, match="empty"):
        resolve_target(["a", "b"], [])
    with pytest.raises(ValueError, match="twice"):
        resolve_target(["a", "b"], ["a", "a"])


def test_with_covariates(frame):
    y = to_series(frame[["a"]])
    X = to_series(frame[["b"]])
    both = with_covariates(y, X)
    assert both.columns == ["a", "b"]
    np.testing.assert_array_equal(both.values, frame.to_numpy())
    with pytest.raises(ValueError, match="same timestamps"):
        with_covariates(y, to_series(frame[["b"]].iloc[:-1]))
    with pytest.raises(ValueError, match=r"'a'"):
        with_covariates(y, to_series(frame[["a"]]))


def test_every_reader_picks_the_same_time_column(tmp_path):
    """A file with both `date` and `time` is indexed by `time` (TIME_COLUMNS' order) by `train`'s
    reader and by `retrain`'s alike; they used to disagree (date first in one, time in the other)."""
    from tsessm.columns import TIME_COLUMNS
    from tsessm.data import read_table
    from tsessm.retrain import RetrainConfig, read_file

    n = 30
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="D"),
                          "time": pd.date_range("2024-01-01", periods=n, freq="h"), "load": np.arange(n, dtype=float)})
    path = tmp_path / "both.csv"
    frame.to_csv(path, index=False)
    assert TIME_COLUMNS[0] == "time"
    by_train = read_table(str(path))
    config = RetrainConfig(data_path=path, target=["load"], model="naive", holdout=5, registry_name="x")
    by_retrain = read_file(path, config)
    by_retrain = by_retrain if isinstance(by_retrain, pd.DataFrame) else by_retrain.to_pandas()
    assert by_train.index.name == "time" and by_train.index[1] == pd.Timestamp("2024-01-01 01:00")
    retrain_index = by_retrain.index if isinstance(by_retrain.index, pd.DatetimeIndex) else by_retrain["time"]
    assert pd.Timestamp(retrain_index[1]) == pd.Timestamp("2024-01-01 01:00")
