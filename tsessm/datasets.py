"""Benchmark datasets: registry, loading, standard splits and train-only scaling.

The long-horizon forecasting protocol (Informer / S4) uses fixed row borders
and a per-column standard scaler fitted on the train rows only. This module
knows those rules for every benchmark file.

Files are searched, in order, in ``data_dir``, ``$TSESSM_DATA_DIR``, the
project's ``datasets/`` folder, ``../shared/datasets`` next to the project and
the download cache. Each folder may hold ``X.csv`` or ``X.csv.gz``. A file found
there is used as it is, without any network access.

When no folder holds the file, :func:`load` downloads it once (:func:`fetch`)
from the data set's public source into the user cache (``$TSESSM_CACHE_DIR/datasets``,
default ``pooch.os_cache("tsessm")/datasets``, e.g. ``~/.cache/tsessm/datasets``)
and checks the sha256 of the uncompressed CSV; a download that is corrupted,
truncated or of the wrong shape is refused and removed. ``$TSESSM_DATA_URL``
(``base_url=``) points the download at a mirror that serves ``X.csv`` or
``X.csv.gz`` under one base URL; ``TSESSM_OFFLINE=1`` (``download=False``)
forbids network access.
"""
from __future__ import annotations

import datetime as _dt
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_CACHE_ENV_VAR",
    "DATASETS",
    "DatasetSpec",
    "DownloadError",
    "ENV_VAR",
    "OFFLINE_ENV_VAR",
    "URL_ENV_VAR",
    "cache_dir",
    "convert_lstnet_electricity",
    "fetch",
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
CACHE_ENV_VAR = "TSESSM_CACHE_DIR"  # tsessm's cache; downloads go to its datasets/ folder
DATA_CACHE_ENV_VAR = "TSESSM_DATA_CACHE"  # the download folder itself (wins over the above)
URL_ENV_VAR = "TSESSM_DATA_URL"  # a mirror's base URL: <base>/<file> or <base>/<file>.gz
OFFLINE_ENV_VAR = "TSESSM_OFFLINE"  # "1": never download

# Download sources. Every URL below serves the exact published bytes (the sha256 in
# the registry is of the uncompressed CSV and is checked after every download):
# - ETT*: the ETDataset repository itself, pinned to the commit whose ETTh1/ETTh2 bytes
#   were checked (1d16c8f); its tree lists ETTm1/ETTm2 with the git blob ids of the
#   files checked here (see the shared datasets README).
# - WTH: the Informer authors link the file on a cloud drive only, which serves no
#   stable direct URL. The copy used is a third-party repository's (xun468/Time-GNN,
#   pinned commit), byte-identical to an unrelated second copy; the registry hash
#   makes any other bytes fail loudly.
# - weather: the Autoformer authors link a cloud drive too; the copy used is the
#   gzip in ljnvs/HiCR-Mamba (pinned commit), the only complete copy found, which
#   decompresses to the registered bytes.
# - ECL: see _ECL_SOURCE below. Whether these repositories and commits stay online
#   is not in our hands: TSESSM_DATA_URL / base_url= point at any mirror instead.
_GH = "https://raw.githubusercontent.com"
_ETT_URL = f"{_GH}/zhouhaoyi/ETDataset/1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small/"
_WTH_URL = f"{_GH}/xun468/Time-GNN/95e785a7a1804931e8943b86143349552cb05d44/datasets/WTH.csv"
_WEATHER_URL = (f"{_GH}/ljnvs/HiCR-Mamba/d472c100956ed4373e9ca3700481ce88f8f1e4dd/"
                "datasets/weather/weather.csv.gz")
# ECL: no public direct URL serves the Informer ECL.csv itself (its authors link a cloud
# drive; the nhits-experiments zip that datasetsforecast's LongHorizon downloads holds a
# normalised long-format copy, not the raw values). The Informer file is the LSTNet
# electricity matrix (Lai et al. 2018: UCI ElectricityLoadDiagrams20112014, hourly, the
# 321 clients complete over 2012-2014, 26304 rows, no header) with a date column and
# the columns named MT_000 ... MT_320; convert_lstnet_electricity rebuilds that layout
# from the LSTNet repository's file. Its checksum cannot be known offline: the first
# download records the sha256 of the converted CSV (ECL.csv.json next to it) and every
# later load checks it.
_ECL_SOURCE = f"{_GH}/laiguokun/multivariate-time-series-data/master/electricity/electricity.txt.gz"
ECL_START = "2012-01-01 00:00:00"  # the first hour of the LSTNet / Informer span (2012-2014)

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
    url: str | None = None  # where fetch() downloads it from (a .gz is decompressed to check it)

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
            17420, 7, _ISO, url=_ETT_URL + "ETTh1.csv",
        ),
        DatasetSpec(
            "ETTh2", "ETTh2.csv", "OT", "h", "ett_hour", _ETT_H, _ETT_PUBLISHED,
            "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
            17420, 7, _ISO, url=_ETT_URL + "ETTh2.csv",
        ),
        DatasetSpec(
            "ETTm1", "ETTm1.csv", "OT", "15min", "ett_minute", _ETT_M, _ETT_PUBLISHED,
            "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
            69680, 7, _ISO, url=_ETT_URL + "ETTm1.csv",
        ),
        DatasetSpec(
            "ETTm2", "ETTm2.csv", "OT", "15min", "ett_minute", _ETT_M, _ETT_PUBLISHED,
            "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd",
            69680, 7, _ISO, url=_ETT_URL + "ETTm2.csv",
        ),
        DatasetSpec(
            "WTH", "WTH.csv", "WetBulbCelsius", "h", "ratio", _ETT_H,
            "the Informer authors' repository README "
            "(https://github.com/zhouhaoyi/Informer2020) links WTH.csv; the data are "
            "NOAA Local Climatological Data, station 72462703011, 2010-2013",
            "153fead3ea2a83dc5c4127d3994af6b167322f6f5e292c99491f43a2caf14cd4",
            35064, 12, "%m/%d/%Y %H:%M", aliases=("WTH", "Weather"), url=_WTH_URL,
        ),
        DatasetSpec(
            "weather", "weather.csv", "OT", "10min", "ratio", (96, 192, 336, 720),
            "the Autoformer authors' repository README "
            "(https://github.com/thuml/Autoformer) links weather.csv; the data are "
            "from the Max Planck Institute for Biogeochemistry weather station, Jena, 2020",
            "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63",
            52696, 21, _ISO, url=_WEATHER_URL,
        ),
        DatasetSpec(
            "ECL", "ECL.csv", "MT_320", "h", "ratio", (48, 168, 336, 720, 960),
            "the Informer authors' repository README "
            "(https://github.com/zhouhaoyi/Informer2020) links ECL.csv; the data are "
            "UCI ElectricityLoadDiagrams20112014 "
            "(https://archive.ics.uci.edu/dataset/321/electricityloaddiagrams20112014)",
            None, 26304, 321, None, url=_ECL_SOURCE,
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


class DownloadError(FileNotFoundError):
    """A benchmark file is not on disk and could not be downloaded (network, HTTP error,
    truncated transfer). Derives from FileNotFoundError: callers that skip missing data
    (the accuracy grid) skip it too. A download with the wrong bytes raises ValueError."""


def cache_dir() -> Path:
    """The download cache: ``$TSESSM_DATA_CACHE`` when set, else ``$TSESSM_CACHE_DIR/datasets``,
    by default ``pooch.os_cache("tsessm")/datasets`` (``~/.cache/tsessm/datasets`` on Linux)."""
    own = os.environ.get(DATA_CACHE_ENV_VAR)
    if own:
        return Path(own).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser() / "datasets"
    import pooch

    return Path(pooch.os_cache("tsessm")) / "datasets"


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data files, in order (missing folders included); the
    download cache comes last."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    root = Path(__file__).resolve().parents[1]
    dirs.append(root / "datasets")
    dirs.append(root.parent / "shared" / "datasets")
    dirs.append(cache_dir())
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _first(spec: DatasetSpec, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for fname in spec.files:
            p = d / fname
            if p.is_file():
                return p
    return None


def _missing_message(spec: DatasetSpec, dirs: list[Path], reason: str, base_url: str | None = None) -> str:
    searched = "\n".join(f"  - {d}" for d in dirs)
    base_url = base_url or os.environ.get(URL_ENV_VAR) or None
    source = f"the mirror {base_url}" if base_url else (spec.url or "its public source")
    return (
        f"dataset {spec.name!r}: neither {spec.file} nor {spec.file}.gz was found, and {reason}.\n"
        f"Folders searched, in order:\n{searched}\n"
        f"Put the file into one of them (the project's datasets/ folder is git-ignored for "
        f"raw files), set {ENV_VAR}=/path/to/folder, or pass --data-dir on the command line (data_dir=... "
        f"in Python).\n"
        f"Downloads go from {source} into {cache_dir()}; {URL_ENV_VAR}=https://your.mirror/folder "
        f"(base_url=...) fetches {spec.file} or {spec.file}.gz from a mirror, {OFFLINE_ENV_VAR}=1 "
        f"(download=False) never downloads.\n"
        f"Where to get it: {spec.published}."
    )


def _find(spec: DatasetSpec, data_dir: str | os.PathLike | None, download: bool | None = False,
          base_url: str | None = None) -> Path:
    dirs = search_dirs(data_dir)
    found = _first(spec, dirs)
    if found is not None:
        return found
    if download is None:
        download = not _offline()
    if not download:
        raise FileNotFoundError(_missing_message(
            spec, dirs, f"downloads are off (download=False or {OFFLINE_ENV_VAR}=1)", base_url))
    try:
        return fetch(spec.name, base_url=base_url)
    except DownloadError as err:
        raise DownloadError(_missing_message(spec, dirs, f"the download failed: {err}", base_url)) from err


def _record_path(path: Path) -> Path:
    """The JSON that records the sha256 of a downloaded file without a registry hash."""
    return path.with_name(path.name + ".json")


def _recorded_sha256(path: Path) -> str | None:
    record = _record_path(path)
    if not record.is_file():
        return None
    try:
        return str(json.loads(record.read_text())["sha256"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"unreadable checksum record {record}: {err}; delete it and {path.name} "
                         "to download the file again") from err


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, size: int, name: str, verify: bool,
          recorded: str | None = None) -> pd.DataFrame:
    """Parse one file (cached; ``mtime_ns`` and ``size`` invalidate stale entries)."""
    spec = DATASETS[name]
    raw = Path(path).read_bytes()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    if verify and (spec.sha256 is not None or recorded is not None):
        actual = hashlib.sha256(raw).hexdigest()
        if spec.sha256 is not None and actual != spec.sha256:
            raise ValueError(
                f"checksum mismatch for {path} (dataset {spec.name}): sha256 of the "
                f"uncompressed CSV is {actual}, expected {spec.sha256}. The file is not "
                f"the published {spec.file}; replace it, or pass verify=False."
            )
        if spec.sha256 is None and actual != recorded:
            raise ValueError(
                f"checksum mismatch for {path} (dataset {spec.name}): sha256 of the "
                f"uncompressed CSV is {actual}, but {_record_path(Path(path)).name} recorded "
                f"{recorded} when it was downloaded. The file changed since; delete it and "
                f"{_record_path(Path(path)).name} to download it again, or pass verify=False."
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


def load(name: str, data_dir: str | os.PathLike | None = None, verify: bool = True,
         download: bool | None = None, base_url: str | None = None) -> pd.DataFrame:
    """Load a benchmark file as float64 columns (file order) on a DatetimeIndex "date".

    Column names are kept exactly as published (weather.csv has U+FFFD in three
    of them). The sha256 of the uncompressed bytes is checked when the spec has
    one and ``verify`` is true; for ECL, whose published checksum is unknown, the
    sha256 recorded when the file was downloaded (``ECL.csv.json``) is checked.
    Frames are cached per file; a copy is returned.

    A file on the search path (:func:`search_dirs`) is used without any network
    access. Otherwise, unless ``download`` is False (default: True unless
    ``$TSESSM_OFFLINE`` is set), it is downloaded once into :func:`cache_dir`
    by :func:`fetch`, from ``base_url`` (or ``$TSESSM_DATA_URL``) when given.
    """
    spec = get_spec(name)
    path = _find(spec, data_dir, download, base_url).resolve()
    st = path.stat()
    recorded = _recorded_sha256(path) if (verify and spec.sha256 is None) else None
    return _read(str(path), st.st_mtime_ns, st.st_size, spec.name, bool(verify), recorded).copy()


# --------------------------------------------------------------------------- downloads


def convert_lstnet_electricity(raw: bytes, n_rows: int | None = 26304, start: str = ECL_START) -> bytes:
    """The Informer ``ECL.csv`` layout from the LSTNet ``electricity.txt(.gz)`` matrix.

    Input: one line per hour, 321 comma-separated values, no header, gzip or plain
    (Lai et al.: the UCI ElectricityLoadDiagrams20112014 clients complete over
    2012-2014, summed to hours). Output: a header ``date,MT_000,...,MT_320`` and one
    row per input line, dated hourly from ``start`` (2012-01-01 00:00, the first hour
    of the span), the values unchanged. ``n_rows`` (26304 = 1096 days x 24) is
    checked unless None. Raises ValueError for any other shape.
    """
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        values = pd.read_csv(io.BytesIO(raw), header=None, dtype=np.float64).to_numpy()
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"not an LSTNet electricity matrix: {err}") from err
    n_clients = DATASETS["ECL"].n_columns
    if values.ndim != 2 or values.shape[1] != n_clients or (n_rows is not None and len(values) != n_rows):
        want = f"({n_rows if n_rows is not None else 'any'}, {n_clients})"
        raise ValueError(f"the LSTNet electricity matrix has shape {values.shape}, expected {want}")
    if np.isnan(values).any():
        raise ValueError("the LSTNet electricity matrix has empty values")
    frame = pd.DataFrame(values, columns=[f"MT_{i:03d}" for i in range(n_clients)])
    dates = pd.date_range(start, periods=len(frame), freq="h")
    frame.insert(0, "date", dates.strftime("%Y-%m-%d %H:%M:%S"))
    return frame.to_csv(index=False, lineterminator="\n").encode()


def _candidates(spec: DatasetSpec, base_url: str | None) -> list[tuple[str, str]]:
    """(url, kind) to try in order; kind: "csv", "gz" or "lstnet" (ECL conversion)."""
    if base_url:
        base = base_url.rstrip("/")
        return [(f"{base}/{spec.file}", "csv"), (f"{base}/{spec.file}.gz", "gz")]
    if spec.url is None:
        raise DownloadError(f"no public source is known for {spec.file}")
    if spec.name == "ECL" and spec.url.endswith(".txt.gz"):
        return [(spec.url, "lstnet")]
    return [(spec.url, "gz" if spec.url.endswith(".gz") else "csv")]


def _download(url: str, dest: Path, known_sha256: str | None) -> None:
    """One HTTP(S) download through pooch into ``dest`` (pooch streams into a temporary
    file and removes it unless the transfer completed and the hash, when given, matched)."""
    import pooch
    import requests

    downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=60)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # pooch logs each download and unknown hashes at INFO
    try:
        pooch.retrieve(url, known_hash=f"sha256:{known_sha256}" if known_sha256 else None,
                       fname=dest.name, path=dest.parent, downloader=downloader)
    except ValueError as err:  # pooch: hash mismatch; the temporary file is gone
        raise ValueError(f"{url}: the download does not match the registered checksum, "
                         f"refused and removed ({err})") from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
        raise DownloadError(f"{url}: incomplete download (the connection closed early), "
                            f"refused and removed: {err}") from None
    except requests.exceptions.HTTPError as err:
        raise DownloadError(f"{url}: {err}") from err
    except requests.exceptions.RequestException as err:
        raise DownloadError(f"{url}: {type(err).__name__}: {err}") from None
    finally:
        logger.setLevel(level)


def _check_shape(spec: DatasetSpec, raw: bytes, url: str) -> None:
    """The downloaded CSV parses to the registered row and column counts."""
    try:
        frame = pd.read_csv(io.BytesIO(raw), encoding="utf-8")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{url}: not a CSV ({err}), refused and removed") from None
    shape = (spec.n_rows, (spec.n_columns or 0) + 1)
    if spec.n_rows is not None and spec.n_columns is not None and frame.shape != shape:
        raise ValueError(f"{url}: {frame.shape[0]} rows x {frame.shape[1]} columns, expected "
                         f"{shape[0]} x {shape[1]} (date included) for {spec.name}; refused and removed")
    if "date" not in frame.columns or spec.target not in frame.columns:
        raise ValueError(f"{url}: no 'date' or {spec.target!r} column; refused and removed")


def fetch(name: str, base_url: str | None = None, force: bool = False) -> Path:
    """Download a benchmark file into :func:`cache_dir` (once) and return its path.

    Sources: the registry's public URL (``get_spec(name).url``), or ``base_url`` /
    ``$TSESSM_DATA_URL``, a mirror serving ``<base>/<file>`` (e.g. ``.../ETTh1.csv``)
    or, when that answers 404, ``<base>/<file>.gz``. The bytes arrive in a temporary
    folder and enter the cache only after every check passed: the sha256 of the
    uncompressed CSV against the registry, a complete transfer, a valid gzip, the
    registered shape. A failed check raises ValueError (wrong bytes) or
    :class:`DownloadError` (network, HTTP, truncated transfer) and leaves nothing
    behind. ECL has no published checksum: its sha256 is recorded in
    ``ECL.csv.json`` on the first download and checked by every later :func:`load`.
    A cached file is returned without network access unless ``force``.
    """
    spec = get_spec(name)
    base_url = base_url or os.environ.get(URL_ENV_VAR) or None
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(cache / f".{spec.file}.lock")):  # one download per file at a time
        cached = _first(spec, [cache])
        if cached is not None and not force:
            return cached
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.file}-", dir=cache))
        try:
            return _fetch_into(spec, base_url, cache, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _fetch_into(spec: DatasetSpec, base_url: str | None, cache: Path, staging: Path) -> Path:
    import requests

    candidates = _candidates(spec, base_url)
    for i, (url, kind) in enumerate(candidates):
        stored = spec.file + (".gz" if kind == "gz" else "")
        dest = staging / (stored if kind != "lstnet" else Path(url).name)
        print(f"tsessm: downloading {spec.name} from {url} into {cache}", file=sys.stderr, flush=True)
        try:
            _download(url, dest, spec.sha256 if kind == "csv" else None)
        except DownloadError as err:
            cause = err.__cause__
            not_found = (isinstance(cause, requests.exceptions.HTTPError) and cause.response is not None
                         and cause.response.status_code == 404)
            if not_found and i + 1 < len(candidates):
                continue
            raise
        raw = dest.read_bytes()
        source_sha256 = hashlib.sha256(raw).hexdigest()  # of the bytes as served
        if kind == "gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as err:
                raise ValueError(f"{url}: not a complete gzip ({err}), refused and removed") from None
        elif kind == "lstnet":
            try:
                raw = convert_lstnet_electricity(raw, n_rows=spec.n_rows)
            except (ValueError, OSError, EOFError, zlib.error) as err:
                raise ValueError(f"{url}: {err}; refused and removed") from None
            dest = staging / spec.file
            dest.write_bytes(raw)
        actual = hashlib.sha256(raw).hexdigest()
        if spec.sha256 is not None and actual != spec.sha256:
            raise ValueError(f"{url}: sha256 of the uncompressed CSV is {actual}, expected "
                             f"{spec.sha256}; the download was refused and removed")
        _check_shape(spec, raw, url)
        final = cache / dest.name
        if spec.sha256 is None:  # record first: a file never sits in the cache unrecorded
            record = {
                "file": dest.name, "sha256": actual, "source": url, "source_sha256": source_sha256,
                "converted": "convert_lstnet_electricity (LSTNet matrix -> Informer layout)"
                if kind == "lstnet" else None,
                "downloaded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "note": "no checksum of the published file is known; sha256 (of the uncompressed "
                        "CSV) was recorded at the first download and is checked by every load",
            }
            tmp = staging / "record.json"
            tmp.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(tmp, _record_path(final))
        for other in spec.files:  # a forced download replaces the other spelling too
            if other != dest.name:
                for stale in (cache / other, _record_path(cache / other)):
                    if stale.exists():
                        stale.unlink()
        os.replace(dest, final)
        return final
    raise DownloadError(f"no source served {spec.file}")  # pragma: no cover - candidates is never empty


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
