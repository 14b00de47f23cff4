"""Tests for tsessm.datasets against the shared benchmark files and generated files."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsessm import datasets as D

SHARED = Path(D.__file__).resolve().parents[1].parent / "shared" / "datasets"

# file rows and value columns (``date`` excluded) from the shared README table
TABLE = {
    "ETTh1": (17420, 7),
    "ETTh2": (17420, 7),
    "ETTm1": (69680, 7),
    "ETTm2": (69680, 7),
    "WTH": (35064, 12),
    "weather": (52696, 21),
}

def needs_shared(test):
    """The shared files are part of the test environment: their absence fails, never skips."""
    return test


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(D.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    """Every shared file, loaded (and checksum-verified) once for the module."""
    return {name: D.load(name, data_dir=SHARED) for name in TABLE}


def _write_ecl(path: Path, rows: int = 200, drop: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    cols = [f"MT_{i:03d}" for i in range(321)]
    df = pd.DataFrame(rng.random((rows, 321)) * 100, columns=cols)
    df.insert(0, "date", pd.date_range("2012-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"))
    if drop is not None:
        df = df.drop(columns=drop)
    df.to_csv(path, index=False)
    return df


# ------------------------------------------------------------------- shared files


@needs_shared
@pytest.mark.parametrize("name", list(TABLE))
def test_shape_index_dtypes(frames, name):
    df = frames[name]
    assert df.shape == TABLE[name]
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "date"
    assert (df.dtypes == np.float64).all()
    assert df.columns[-1] == D.target(name)
    spec = D.get_spec(name)
    assert (spec.n_rows, spec.n_columns) == TABLE[name]


@needs_shared
def test_index_ranges_and_quirks(frames):
    assert frames["ETTh1"].index[-1] == pd.Timestamp("2018-06-26 19:00")
    wth = frames["WTH"]  # M/D/YYYY H:MM parsed
    assert wth.index[0] == pd.Timestamp("2010-01-01 00:00")
    assert wth.index[-1] == pd.Timestamp("2013-12-31 23:00")
    assert (wth["RelativeHumidity"] == 0).sum() == 149
    weather = frames["weather"]
    assert weather.index[0] == pd.Timestamp("2020-01-01 00:10")
    assert weather.index.duplicated().sum() == 1
    assert [c for c in weather.columns if "\ufffd" in c] == [
        "SWDR (W/m\ufffd)", "PAR (\ufffdmol/m\ufffd/s)", "max. PAR (\ufffdmol/m\ufffd/s)"
    ]
    assert not any("\r" in c for c in weather.columns)
    assert (weather["OT"] == -9999).sum() == 50


@needs_shared
def test_load_returns_copy():
    a = D.load("ETTh1", data_dir=SHARED)
    a.iloc[0, 0] = -1e9
    assert D.load("ETTh1", data_dir=SHARED).iloc[0, 0] != -1e9


# ------------------------------------------------------------------- names


def test_aliases():
    assert D.get_spec("Weather").name == "WTH"
    assert D.get_spec("WEATHER").name == "WTH"
    assert D.get_spec("wth").name == "WTH"
    assert D.target("Weather") == "WetBulbCelsius"
    assert D.get_spec("weather").file == "weather.csv"
    assert D.target("weather") == "OT"
    assert D.get_spec("etth1").name == "ETTh1"
    assert D.target("ECL") == "MT_320"


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="ETTh1.*ECL"):
        D.get_spec("traffic")


def test_horizons():
    assert D.horizons("ETTh1") == D.horizons("ETTh2") == D.horizons("WTH") == (24, 48, 168, 336, 720)
    assert D.horizons("ETTm1") == D.horizons("ETTm2") == (24, 48, 96, 288, 672)
    assert D.horizons("ECL") == (48, 168, 336, 720, 960)
    assert D.horizons("weather") == (96, 192, 336, 720)


# ------------------------------------------------------------------- splits


def _sizes(s):
    return tuple(b - a for a, b in s.values())


@pytest.mark.parametrize(
    "name, n_rows, sizes",
    [
        ("ETTh1", None, (8640, 2880, 2880)),
        ("ETTh2", None, (8640, 2880, 2880)),
        ("ETTm1", None, (34560, 11520, 11520)),
        ("ETTm2", None, (34560, 11520, 11520)),
        ("WTH", None, (24544, 3508, 7012)),
        ("weather", None, (36887, 5270, 10539)),
        ("ECL", 26304, (18412, 2632, 5260)),
        ("ECL", None, (18412, 2632, 5260)),
    ],
)
def test_split_sizes(name, n_rows, sizes):
    s0 = D.splits(name, 0, n_rows=n_rows)
    assert _sizes(s0) == sizes
    assert s0["train"][0] == 0
    assert s0["train"][1] == s0["val"][0] and s0["val"][1] == s0["test"][0]
    s96 = D.splits(name, 96, n_rows=n_rows)
    assert s96["train"] == s0["train"]
    for k in ("val", "test"):
        assert s96[k] == (s0[k][0] - 96, s0[k][1])


def test_split_borders_ett():
    assert D.splits("ETTh1", 96) == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    assert D.splits("ETTm1", 0)["test"] == (46080, 57600)


@pytest.mark.parametrize("bad", [-1, 1.5, "96", True, 8641])
def test_split_bad_lookback(bad):
    with pytest.raises(ValueError, match="lookback"):
        D.splits("ETTh1", bad)


def test_split_lookback_limit_ratio():
    D.splits("ECL", 140, n_rows=200)  # num_train = 140
    with pytest.raises(ValueError, match="lookback"):
        D.splits("ECL", 141, n_rows=200)


# ------------------------------------------------------------------- checksums and search


@needs_shared
def test_tampered_copy_fails_checksum(tmp_path):
    text = gzip.decompress((SHARED / "ETTh1.csv.gz").read_bytes())
    lines = text.split(b"\n")
    lines[1] = lines[1].replace(b"5.827000141143799", b"5.9", 1)
    (tmp_path / "ETTh1.csv").write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError) as err:
        D.load("ETTh1", data_dir=tmp_path)
    msg = str(err.value)
    assert "ETTh1.csv" in msg and D.get_spec("ETTh1").sha256 in msg
    df = D.load("ETTh1", data_dir=tmp_path, verify=False)
    assert df.iloc[0, 0] == 5.9


def test_tampered_small_gz_fails(tmp_path):
    (tmp_path / "WTH.csv.gz").write_bytes(gzip.compress(b"date,WetBulbCelsius\n1/1/2010 0:00,1.0\n"))
    with pytest.raises(ValueError, match="WTH.csv.gz"):
        D.load("Weather", data_dir=tmp_path)
    df = D.load("WTH", data_dir=tmp_path, verify=False)
    assert df.index[0] == pd.Timestamp("2010-01-01") and df.shape == (1, 1)


def test_missing_file_message(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    monkeypatch.setenv(D.ENV_VAR, str(env_dir))
    with pytest.raises(FileNotFoundError) as err:
        D.load("ECL", data_dir=tmp_path / "given")
    msg = str(err.value)
    assert "ECL.csv" in msg
    for folder in D.search_dirs(tmp_path / "given"):
        assert str(folder) in msg
    assert str(tmp_path / "given") in msg and str(env_dir) in msg
    assert D.ENV_VAR in msg and "data_dir" in msg
    assert "archive.ics.uci.edu" in msg


def test_search_order(tmp_path, monkeypatch):
    given, env = tmp_path / "given", tmp_path / "env"
    given.mkdir()
    env.mkdir()
    _write_ecl(given / "ECL.csv", rows=20)
    _write_ecl(env / "ECL.csv", rows=30)
    monkeypatch.setenv(D.ENV_VAR, str(env))
    dirs = D.search_dirs(given)
    assert dirs[:2] == [given, env]
    assert dirs[2] == Path(D.__file__).resolve().parents[1] / "datasets"
    assert dirs[3] == SHARED
    assert len(D.load("ECL", data_dir=given)) == 20  # data_dir wins over the env variable
    assert len(D.load("ECL")) == 30  # env variable used without data_dir
    (given / "ECL.csv").unlink()
    assert len(D.load("ECL", data_dir=given)) == 30  # falls through to the env variable


@needs_shared
def test_env_var_with_gz(tmp_path, monkeypatch):
    shutil.copy(SHARED / "ETTh2.csv.gz", tmp_path / "ETTh2.csv.gz")
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path))
    assert D.load("ETTh2").shape == (17420, 7)


# ------------------------------------------------------------------- ECL


def test_ecl_generated(tmp_path):
    raw = _write_ecl(tmp_path / "ECL.csv", rows=200)
    df = D.load("ECL", data_dir=tmp_path)
    assert df.shape == (200, 321)
    assert list(df.columns) == [f"MT_{i:03d}" for i in range(321)]
    assert df.columns[-1] == D.target("ECL") == "MT_320"
    assert df.index.name == "date" and df.index[0] == pd.Timestamp("2012-01-01 00:00")
    assert df.index[-1] == pd.Timestamp("2012-01-01") + pd.Timedelta(hours=199)
    assert (df.dtypes == np.float64).all()
    np.testing.assert_allclose(df["MT_320"].to_numpy(), raw["MT_320"].to_numpy())
    parts = D.split_frames("ECL", 10, data_dir=tmp_path)
    assert [len(p) for p in parts.values()] == [140, 20 + 10, 40 + 10]


def test_ecl_missing_target(tmp_path):
    _write_ecl(tmp_path / "ECL.csv", rows=20, drop="MT_320")
    with pytest.raises(ValueError, match="MT_320"):
        D.load("ECL", data_dir=tmp_path)


def test_ecl_missing_date(tmp_path):
    _write_ecl(tmp_path / "ECL.csv", rows=20, drop="date")
    with pytest.raises(ValueError, match="'date'"):
        D.load("ECL", data_dir=tmp_path)


# ------------------------------------------------------------------- scaler and slices


@needs_shared
def test_scaler_fit_on_train_only(frames):
    df = frames["ETTh1"]
    scaler = D.train_scaler(df, "ETTh1", lookback=96)
    train = df.iloc[:8640]
    np.testing.assert_allclose(scaler.mean_, train.mean().to_numpy())
    np.testing.assert_allclose(scaler.scale_, train.std(ddof=0).to_numpy())
    assert not np.allclose(scaler.mean_, df.mean().to_numpy())
    assert list(scaler.feature_names_in_) == list(df.columns)


@needs_shared
def test_scaler_ratio_split(frames):
    df = frames["WTH"]
    scaler = D.train_scaler(df, "WTH")
    np.testing.assert_allclose(scaler.mean_, df.iloc[:24544].mean().to_numpy())


@needs_shared
def test_split_frames(monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(SHARED))
    parts = D.split_frames("ETTh1", 96)
    assert [len(p) for p in parts.values()] == [8640, 2880 + 96, 2880 + 96]
    assert parts["test"].index[96] == pd.Timestamp("2016-07-01") + pd.Timedelta(hours=11520)
