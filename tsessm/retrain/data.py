"""The rows a retrain reads: a CSV/Parquet file, or a folder's newest file or all of them
concatenated and sorted by time (pandas or polars reader), validated and fingerprinted.

The fingerprint is the sha256 of the loaded rows (timestamps, column names, float64 values), so
the reader and the file layout do not change it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from tsessm.columns import TIME_COLUMNS
from tsessm.data import to_series
from tsessm.retrain.config import RetrainConfig
from tsessm.retrain.outcome import RetrainError, one_line

log = logging.getLogger("tsessm.retrain")

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


class DataError(RetrainError):
    def __init__(self, message: str) -> None:
        super().__init__("data", message)


@dataclass
class Dataset:
    """Validated rows: a DatetimeIndex and float64 columns (the config's columns, in order)."""

    frame: pd.DataFrame
    files: list[Path]
    sha256: str

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def end(self) -> pd.Timestamp:
        return self.frame.index[-1]


def data_files(config: RetrainConfig) -> list[Path]:
    """The file(s) the run reads: the path itself, or from a directory the newest / every data file."""
    source = config.data_path
    if source.is_file():
        return [source]
    if not source.exists():
        raise DataError(f"no such data file or directory: {source}")
    if not source.is_dir():
        raise DataError(f"{source} is neither a file nor a directory")
    files = [p for p in source.glob(config.pattern)
             if p.is_file() and not p.name.startswith(".") and p.name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)]
    if not files:
        raise DataError(f"no data files ({', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}) matching "
                        f"{config.pattern!r} in {source}")
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return files[-1:] if config.select == "newest" else files


def read_file(path: Path, config: RetrainConfig) -> pd.DataFrame:
    """One file's `config.columns`, indexed by its time column (not yet checked for gaps or NaN)."""
    is_csv = path.name.endswith(CSV_SUFFIXES)
    if not is_csv and not path.name.endswith(PARQUET_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; use {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
    kind = "CSV" if is_csv else "Parquet"
    try:
        if config.reader == "polars":
            table = pl.read_csv(path, infer_schema_length=None) if is_csv else pl.read_parquet(path)
            frame = table.to_pandas()
        else:
            # correctly rounded floats, the same values polars reads (pandas 3's default parser is)
            options = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
            frame = pd.read_csv(path, **options) if is_csv else pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"no such data file: {path}") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read it as {kind} ({type(exc).__name__}: {one_line(exc, 200)})") from None
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    time_col = config.time_col or next((c for c in TIME_COLUMNS if c in columns), None)
    if time_col is None or time_col not in columns:
        raise DataError(f"{path.name}: no time column {time_col or '(time, date, timestamp or ds)'}; "
                        f"columns are {', '.join(columns[:12])}")
    absent = [c for c in config.columns if c not in columns]
    if absent:
        raise DataError(f"{path.name}: missing required column(s) {absent}; columns are {', '.join(columns[:12])}")
    try:
        index = pd.DatetimeIndex(pd.to_datetime(frame[time_col]), name=time_col)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path.name}: column {time_col!r} does not parse as timestamps "
                        f"({one_line(exc, 160)})") from None
    if index.hasnans:
        raise DataError(f"{path.name}: missing timestamp in column {time_col!r} at row {int(index.isna().argmax())}")
    return frame[config.columns].set_axis(index)


def load_data(config: RetrainConfig) -> Dataset:
    """Read, concatenate (select = "all") and validate the data; raises DataError."""
    files = data_files(config)
    frames = [read_file(f, config) for f in files]
    frame = frames[0]
    if len(frames) > 1:
        frame = pd.concat(frames).sort_index(kind="stable")
        repeated = frame.reset_index().duplicated().to_numpy()  # a row exported twice: keep one
        frame = frame[~repeated]
        clash = frame.index.duplicated(keep=False)
        if clash.any():
            raise DataError(f"{len(files)} files disagree about the row at {frame.index[clash][0]} "
                            f"(different values for the same timestamp)")
    label = files[0].name if len(files) == 1 else f"{files[0].parent.name}/ ({len(files)} files)"
    try:
        series = to_series(frame, missing=config.missing, name=label)
    except (ValueError, TypeError) as exc:
        raise DataError(one_line(exc, 400)) from None
    if series.filled is not None and series.filled.any():
        log.info("%s: filled %d missing row(s) (missing=%s)", label, int(series.filled.sum()), config.missing)
    clean = pd.DataFrame(series.values, index=series.index, columns=series.columns)
    return Dataset(frame=clean, files=files, sha256=fingerprint(clean))


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the rows: column names, timestamps (int64 ns) and float64 values."""
    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(np.ascontiguousarray(frame.index.as_unit("ns").asi8).tobytes())
    digest.update(np.ascontiguousarray(frame.to_numpy(dtype="float64")).tobytes())
    return digest.hexdigest()


def rows_after(data: Dataset, end_text: str) -> int:
    """Rows of `data` after the timestamp `end_text` (all of them when it does not compare)."""
    try:
        end = pd.Timestamp(end_text)
    except (ValueError, TypeError):
        return data.rows
    index = data.frame.index
    if (index.tz is None) != (end.tz is None):
        return data.rows
    return int((index > end).sum())
