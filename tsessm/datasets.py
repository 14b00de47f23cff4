"""Benchmark datasets: registry, loading, standard splits and train-only scaling.

The long-horizon forecasting protocol (Informer / S4) uses fixed row borders
and a per-column standard scaler fitted on the train rows only. This module
knows those rules for every benchmark file; it never downloads anything.

Files are searched, in order, in ``data_dir``, ``$TSESSM_DATA_DIR``, the
project's ``datasets/`` folder and ``../shared/datasets`` next to the project.
Each folder may hold ``X.csv`` or ``X.csv.gz``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ENV_VAR",
    "get_spec",
    "horizons",
    "load",
    "search_dirs",
    "split_frames",
    "splits",
    "target",
    "train_scaler",
]

ENV_VAR = "TSESSM_DATA_DIR"

_ETT_PUBLISHED = "https://github.com/zhouhaoyi/ETDataset (folder ETT-small/)"


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the protocol needs to know about one benchmark file."""

    name: str
    file: str  # uncompressed file name; ``file + ".gz"`` is accepted too
    target: str
    freq: str  # pandas frequency string: "h", "15min", "10min"
    split: str  # "ett_hour", "ett_minute" or "ratio" (70/10/20)
    horizons: tuple[int, ...]
    published: str
    sha256: str | None = None  # of the uncompressed CSV; None = not checked
    n_rows: int | None = None  # known row count (header excluded)
    n_columns: int | None = None  # known value columns (``date`` excluded)
    date_format: str | None = None  # None = let pandas infer
    aliases: tuple[str, ...] = ()  # matched case-insensitively

    @property
    def files(self) -> tuple[str, str]:
        """Accepted file names, in the order they are tried within a folder."""
        return (self.file, self.file + ".gz")


_ISO = "%Y-%m-%d %H:%M:%S"
_ETT_H = (24, 48, 168, 336, 720)
_ETT_M = (24, 48, 96, 288, 672)

DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "ETTh1", "ETTh1.csv", "OT", "h", "ett_hour", _ETT_H, _ETT_PUBLISHED,
            "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
            17420, 7, _ISO,
        ),
        DatasetSpec(
            "ETTh2", "ETTh2.csv", "OT", "h", "ett_hour", _ETT_H, _ETT_PUBLISHED,
            "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
            17420, 7, _ISO,
        ),
        DatasetSpec(
            "ETTm1", "ETTm1.csv", "OT", "15min", "ett_minute", _ETT_M, _ETT_PUBLISHED,
            "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
            69680, 7, _ISO,
        ),
        DatasetSpec(
            "ETTm2", "ETTm2.csv", "OT", "15min", "ett_minute", _ETT_M, _ETT_PUBLISHED,
            "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd",
            69680, 7, _ISO,
        ),
        DatasetSpec(
            "WTH", "WTH.csv", "WetBulbCelsius", "h", "ratio", _ETT_H,
            "the Informer authors' repository README "
            "(https://github.com/zhouhaoyi/Informer2020) links WTH.csv; the data are "
            "NOAA Local Climatological Data, station 72462703011, 2010-2013",
            "153fead3ea2a83dc5c4127d3994af6b167322f6f5e292c99491f43a2caf14cd4",
            35064, 12, "%m/%d/%Y %H:%M", aliases=("WTH", "Weather"),
        ),
        DatasetSpec(
            "weather", "weather.csv", "OT", "10min", "ratio", (96, 192, 336, 720),
            "the Autoformer authors' repository README "
            "(https://github.com/thuml/Autoformer) links weather.csv; the data are "
            "from the Max Planck Institute for Biogeochemistry weather station, Jena, 2020",
            "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63",
            52696, 21, _ISO,
        ),
        DatasetSpec(
            "ECL", "ECL.csv", "MT_320", "h", "ratio", (48, 168, 336, 720, 960),
            "the Informer authors' repository README "
            "(https://github.com/zhouhaoyi/Informer2020) links ECL.csv; the data are "
            "UCI ElectricityLoadDiagrams20112014 "
            "(https://archive.ics.uci.edu/dataset/321/electricityloaddiagrams20112014)",
            None, 26304, 321, None,
        ),
    )
}

# Case-insensitive names. "weather" (lower case, exact) is the 10-minute file;
# every other spelling of "weather" means the Informer WTH file.
_ALIASES: dict[str, str] = {}
for _spec in DATASETS.values():
    if _spec.name != "weather":
        _ALIASES[_spec.name.casefold()] = _spec.name
    for _alias in _spec.aliases:
        _ALIASES[_alias.casefold()] = _spec.name


def get_spec(name: str) -> DatasetSpec:
    """Resolve a dataset name: exact names first, then aliases ignoring case."""
    if name in DATASETS:
        return DATASETS[name]
    if isinstance(name, str) and name.casefold() in _ALIASES:
        return DATASETS[_ALIASES[name.casefold()]]
    known = ", ".join(DATASETS)
    raise ValueError(
        f"unknown dataset {name!r}; known names: {known} "
        "(aliases, any case: 'Weather'/'WTH' -> WTH; 'weather' exactly is the 10-minute file)"
    )


def target(name: str) -> str:
    """The conventional target column (used by the S and MS settings)."""
    return get_spec(name).target


def horizons(name: str) -> tuple[int, ...]:
    """The forecasting horizons of the benchmark protocol for this dataset."""
    return get_spec(name).horizons


# --------------------------------------------------------------------------- loading


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data files, in order (missing folders included)."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    root = Path(__file__).resolve().parents[1]
    dirs.append(root / "datasets")
    dirs.append(root.parent / "shared" / "datasets")
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _find(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> Path:
    dirs = search_dirs(data_dir)
    for d in dirs:
        for fname in spec.files:
            p = d / fname
            if p.is_file():
                return p
    searched = "\n".join(f"  - {d}" for d in dirs)
    raise FileNotFoundError(
        f"dataset {spec.name!r}: neither {spec.file} nor {spec.file}.gz was found.\n"
        f"Folders searched, in order:\n{searched}\n"
        f"Put the file into one of them (the project's datasets/ folder is git-ignored for "
        f"raw files), set {ENV_VAR}=/path/to/folder, or pass --data-dir on the command line (data_dir=... "
        f"in Python).\n"
        f"Where to get it: {spec.published}."
    )


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, size: int, name: str, verify: bool) -> pd.DataFrame:
    """Parse one file (cached; ``mtime_ns`` and ``size`` invalidate stale entries)."""
    spec = DATASETS[name]
    raw = Path(path).read_bytes()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    if verify and spec.sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != spec.sha256:
            raise ValueError(
                f"checksum mismatch for {path} (dataset {spec.name}): sha256 of the "
                f"uncompressed CSV is {actual}, expected {spec.sha256}. The file is not "
                f"the published {spec.file}; replace it, or pass verify=False."
            )
    df = pd.read_csv(io.BytesIO(raw), encoding="utf-8")
    missing = [c for c in ("date", spec.target) if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} (dataset {spec.name}) lacks column(s) {', '.join(map(repr, missing))}; "
            f"expected a 'date' column and the target {spec.target!r}"
            + (" (Informer layout: date, MT_000 ... MT_320)" if spec.name == "ECL" else "")
        )
    try:
        index = pd.DatetimeIndex(pd.to_datetime(df.pop("date"), format=spec.date_format), name="date")
        df = df.astype(np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(f"cannot parse {path} (dataset {spec.name}): {err}") from err
    df.index = index
    return df


def load(name: str, data_dir: str | os.PathLike | None = None, verify: bool = True) -> pd.DataFrame:
    """Load a benchmark file as float64 columns (file order) on a DatetimeIndex "date".

    Column names are kept exactly as published (weather.csv has U+FFFD in three
    of them). The sha256 of the uncompressed bytes is checked when the spec has
    one and ``verify`` is true. Frames are cached per file; a copy is returned.
    """
    spec = get_spec(name)
    path = _find(spec, data_dir).resolve()
    st = path.stat()
    return _read(str(path), st.st_mtime_ns, st.st_size, spec.name, bool(verify)).copy()


# --------------------------------------------------------------------------- splits


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def splits(name: str, lookback: int, n_rows: int | None = None) -> dict[str, tuple[int, int]]:
    """Row borders ``[start, stop)`` of train/val/test by the Informer formulas.

    Val and test start ``lookback`` rows before their border so that the first
    forecast window begins exactly at the boundary. ``n_rows`` matters for the
    70/10/20 datasets (WTH, weather, ECL); it defaults to the known row count.
    """
    spec = get_spec(name)
    lookback = _check_int(lookback, "lookback", 0)
    n = spec.n_rows if n_rows is None else _check_int(n_rows, "n_rows", 1)
    if spec.split in ("ett_hour", "ett_minute"):
        k = 1 if spec.split == "ett_hour" else 4
        month = 30 * 24 * k
        b1 = [0, 12 * month - lookback, 16 * month - lookback]
        b2 = [12 * month, 16 * month, 20 * month]
        if n is not None and n < b2[-1]:
            raise ValueError(
                f"n_rows={n} is too few for the {spec.name} borders, which need {b2[-1]} rows"
            )
        return _borders(b1, b2, lookback, spec.name)
    return ratio_splits(n, lookback, spec.name)


def ratio_splits(n_rows: int, lookback: int, name: str = "the data") -> dict[str, tuple[int, int]]:
    """70/10/20 % of the rows (the Informer `Dataset_Custom` rule), val/test starting
    `lookback` rows before their border."""
    num_train, num_test = int(n_rows * 0.7), int(n_rows * 0.2)
    num_val = n_rows - num_train - num_test
    b1 = [0, num_train - lookback, n_rows - num_test - lookback]
    b2 = [num_train, num_train + num_val, n_rows]
    return _borders(b1, b2, lookback, name)


def _borders(b1: list[int], b2: list[int], lookback: int, name: str) -> dict[str, tuple[int, int]]:
    if min(b1) < 0:
        raise ValueError(
            f"lookback={lookback} is too long for {name}: the val split would start "
            f"at row {b1[1]}; lookback may be at most {b2[0]}"
        )
    return dict(zip(("train", "val", "test"), zip(b1, b2)))


def split_frames(
    name: str, lookback: int, data_dir: str | os.PathLike | None = None
) -> dict[str, pd.DataFrame]:
    """The train/val/test slices of the loaded frame (val/test include ``lookback`` rows)."""
    frame = load(name, data_dir=data_dir)
    borders = splits(name, lookback, n_rows=len(frame))
    return {k: frame.iloc[a:b] for k, (a, b) in borders.items()}


def train_scaler(frame: pd.DataFrame, name: str, lookback: int = 0) -> StandardScaler:
    """A per-column StandardScaler fitted on the train rows of ``frame`` only.

    It is fitted on a DataFrame, so it remembers the column names; give
    ``transform`` a DataFrame with the same columns (or use ``mean_``/``scale_``).
    """
    a, b = splits(name, lookback, n_rows=len(frame))["train"]
    return StandardScaler().fit(frame.iloc[a:b])
