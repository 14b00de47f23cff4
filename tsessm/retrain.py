"""Retraining with a promotion gate: train a challenger on the latest data, promote it only if it
beats the champion.

    tsessm retrain --config retrain.toml          # or: python pipelines/retrain.py --config ...
    tsessm schedule --cron "0 3 * * *" --config retrain.toml   # the same on a schedule

One run, driven by a TOML file (see pipelines/retrain.example.toml):

1. lock      one retrain per registered model name at a time (a file lock in `[lock] dir`);
             a second one exits 3: "another retrain of NAME is running".
2. data      read the latest data (a CSV/Parquet file, or a directory: its newest file or all of
             them concatenated and sorted by time; pandas or polars reader) and validate it:
             required columns, parseable increasing timestamps, no gaps, NaN or inf (unless
             `missing` repairs them). Its fingerprint is the sha256 of the loaded rows (timestamps,
             column names, float64 values), so the reader and the file layout do not change it.
3. skip?     the fingerprint and the last timestamp of the last *completed* retrain of this model
             (promoted or not) are tags of that MLflow run (`retrain.data_sha256`,
             `retrain.data_end`, looked up in the run's experiment): the same data again -> "data
             unchanged", fewer than `min_new_rows` rows newer than its data -> "skipped"; both exit 0.
4. train     a challenger on every row but the last `holdout` (fixed parameters, or a short Optuna
             search with `[tuning]`).
5. compare   challenger and champion (`models:/NAME@champion`, pinned to its version number) on the
             same most recent `holdout` rows: the windowed protocol, same origins and targets, same
             history, metrics on values scaled by the training rows' scaler.
6. decide    promote when there is no champion, or when the challenger's score is better by at
             least `margin` (relative: 0.02 = 2 % lower MSE). Promoting registers the challenger
             (after it absorbed the holdout rows, so it forecasts from the end of the data), moves
             `champion` to it and `previous` to the old champion. The champion alias is re-read
             first; if someone moved it meanwhile nothing is promoted.
7. report    metrics.csv, by_step.csv, forecast.png, decision.json, the challenger model and the
             decision (params `decision`, `reason`; tags `retrain.*`) in the MLflow run.

Exit status: 0 promoted, not promoted or skipped; 1 failed (data, training, evaluation,
tracking server; the registry is left as it was); 2 invalid config; 3 another retrain of the
same model holds the lock. Either way one line `retrain NAME: STATUS: reason` is printed.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from tsessm.columns import TIME_COLUMNS
from tsessm.redact import mask
from tsessm.scripts import run_script

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY = 0, 1, 2, 3
CHAMPION, PREVIOUS = "champion", "previous"
METRICS = ("mse", "mae")
READERS = ("pandas", "polars")
SELECTS = ("newest", "all")
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
DEFAULT_EXPERIMENT = "tsessm-retrain"
LOCK_DIR_ENV = "TSESSM_LOCK_DIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ConfigError(ValueError):
    """The TOML config is missing, unreadable or invalid (exit 2)."""


class RetrainError(Exception):
    """A run that cannot go on; `stage` says where (data, train, evaluate, promote, ...)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class DataError(RetrainError):
    def __init__(self, message: str) -> None:
        super().__init__("data", message)


class Interrupted(BaseException):
    """SIGTERM/SIGINT during a run (a BaseException, so library code does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


# ----- config ------------------------------------------------------------------------------------
@dataclass
class RetrainConfig:
    """The parsed TOML file. Relative paths are relative to the config file's folder."""

    data_path: Path
    target: list[str]
    model: str
    holdout: int
    registry_name: str
    columns: list[str] = field(default_factory=list)  # model inputs; default: the target(s)
    time_col: str | None = None  # default: time, date, timestamp or ds
    select: str = "newest"
    pattern: str = "*"
    reader: str = "pandas"
    missing: str = "error"
    min_new_rows: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None
    margin: float = 0.02
    metric: str = "mse"
    eval_lookback: int | None = None
    experiment: str = DEFAULT_EXPERIMENT
    lock_dir: Path = field(default_factory=lambda: Path(os.environ.get(LOCK_DIR_ENV) or
                                                        Path(tempfile.gettempdir()) / "tsessm-retrain-locks"))
    path: Path | None = None  # the TOML file

    @property
    def horizon(self) -> int:
        return int(self.model_params()["horizon"])

    def model_params(self) -> dict[str, Any]:
        """The challenger's parameters: [model.params] + the target, a seed and no progress bar."""
        from tsessm.jobs import model_class

        accepted = model_class(self.model)().get_params()
        params = dict(self.params)
        params["target"] = self.target[0] if len(self.target) == 1 else list(self.target)
        for key, default in (("random_state", 0), ("verbose", 0)):
            if key in accepted and key not in params:
                params[key] = default
        return params

    def flat(self) -> dict[str, Any]:
        """The settings as MLflow params."""
        out: dict[str, Any] = {
            "retrain.config": str(self.path) if self.path else "", "data.path": str(self.data_path),
            "data.select": self.select, "data.pattern": self.pattern, "data.reader": self.reader,
            "data.time_col": self.time_col or "auto", "data.target": ",".join(self.target),
            "data.columns": ",".join(self.columns), "data.missing": self.missing,
            "data.min_new_rows": self.min_new_rows, "model.name": self.model,
            "promotion.holdout": self.holdout, "promotion.margin": self.margin, "promotion.metric": self.metric,
            "promotion.lookback": self.eval_lookback or "own", "registry.name": self.registry_name,
        }
        out.update({f"model.{k}": v for k, v in self.params.items()})
        out.update({f"tuning.{k}": v for k, v in (self.tuning or {}).items()})
        return out


_SECTIONS = {
    "data": {"path", "select", "pattern", "reader", "time_col", "target", "columns", "missing", "min_new_rows"},
    "model": {"name", "params"},
    "tuning": {"n_trials", "epochs", "timeout", "storage", "seed", "pruner", "space"},
    "promotion": {"holdout", "margin", "metric", "lookback"},
    "registry": {"name", "experiment"},
    "lock": {"dir"},
}


def load_config(path: str | os.PathLike) -> RetrainConfig:
    """Read and check a retrain TOML file; raises ConfigError naming the problem."""
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc})") from None
    return config_from_dict(raw, base_dir=path.resolve().parent, path=path.resolve())


def config_from_dict(raw: dict[str, Any], base_dir: str | os.PathLike = ".", path: Path | None = None) -> RetrainConfig:
    """A RetrainConfig from the TOML structure (sections data, model, tuning, promotion, registry, lock)."""
    where = str(path or "config")
    base = Path(base_dir)

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{where}: {message}")

    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise fail(f"unknown section(s) {unknown}; sections are {', '.join(_SECTIONS)}")
    sections = {}
    for name, keys in _SECTIONS.items():
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise fail(f"[{name}] must be a table")
        extra = sorted(set(section) - keys)
        if extra:
            raise fail(f"unknown key(s) {extra} in [{name}]; known: {', '.join(sorted(keys))}")
        sections[name] = section
    data, model, tuning = sections["data"], sections["model"], sections["tuning"]
    promotion, reg, lock = sections["promotion"], sections["registry"], sections["lock"]

    def need(section: dict, sec: str, key: str, kind: type | tuple) -> Any:
        if key not in section:
            raise fail(f"[{sec}] {key} is required")
        return check(section[key], sec, key, kind)

    def check(value: Any, sec: str, key: str, kind: type | tuple) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise fail(f"[{sec}] {key} must be {names}, got {value!r}")
        return value

    def choice(section: dict, sec: str, key: str, options: Sequence[str], default: str) -> str:
        value = check(section.get(key, default), sec, key, str)
        if value not in options:
            raise fail(f"[{sec}] {key} must be one of {', '.join(options)}, got {value!r}")
        return value

    def names(value: Any, sec: str, key: str) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            raise fail(f"[{sec}] {key} must be a column name or a non-empty list of them, got {value!r}")
        return list(items)

    def path_of(text: str) -> Path:
        p = Path(os.path.expandvars(os.path.expanduser(text)))
        return (p if p.is_absolute() else base / p).resolve()

    cfg_kwargs: dict[str, Any] = {"path": path}
    cfg_kwargs["data_path"] = path_of(need(data, "data", "path", str))
    cfg_kwargs["target"] = target = names(need(data, "data", "target", (str, list)), "data", "target")
    columns = names(data["columns"], "data", "columns") if "columns" in data else list(target)
    missing_targets = [t for t in target if t not in columns]
    if missing_targets:
        raise fail(f"[data] columns must include the target(s); missing {missing_targets}")
    if len(set(columns)) != len(columns):
        raise fail(f"[data] columns names a column twice: {columns}")
    cfg_kwargs["columns"] = columns
    if "time_col" in data:
        cfg_kwargs["time_col"] = check(data["time_col"], "data", "time_col", str)
    cfg_kwargs["select"] = choice(data, "data", "select", SELECTS, "newest")
    cfg_kwargs["pattern"] = check(data.get("pattern", "*"), "data", "pattern", str)
    cfg_kwargs["reader"] = choice(data, "data", "reader", READERS, "pandas")
    cfg_kwargs["missing"] = choice(data, "data", "missing", ("error", "ffill", "interpolate"), "error")
    cfg_kwargs["min_new_rows"] = check(data.get("min_new_rows", 1), "data", "min_new_rows", int)
    if cfg_kwargs["min_new_rows"] < 0:
        raise fail("[data] min_new_rows must be >= 0")

    from tsessm.jobs import MODELS, make_model

    cfg_kwargs["model"] = name = need(model, "model", "name", str)
    if name not in MODELS:
        raise fail(f"[model] name must be one of {', '.join(MODELS)}, got {name!r}")
    cfg_kwargs["params"] = params = dict(check(model.get("params", {}), "model", "params", dict))
    if "target" in params:
        raise fail("[model.params] target: set the target in [data] target")

    if tuning:
        n_trials = need(tuning, "tuning", "n_trials", int)
        if n_trials < 1:
            raise fail("[tuning] n_trials must be >= 1")
        if name not in ("essm", "lstm"):
            raise fail(f"[tuning] tunes essm or lstm, not {name!r}; drop [tuning] to train fixed parameters")
        for key, kind in (("epochs", int), ("timeout", (int, float)), ("storage", str), ("seed", int),
                          ("pruner", str), ("space", dict)):
            if key in tuning:
                check(tuning[key], "tuning", key, kind)
        for key, choices in tuning.get("space", {}).items():
            if not isinstance(choices, list) or not choices:
                raise fail(f"[tuning.space] {key} must be a non-empty list of choices")
        cfg_kwargs["tuning"] = dict(tuning)

    cfg_kwargs["holdout"] = holdout = need(promotion, "promotion", "holdout", int)
    cfg_kwargs["margin"] = margin = float(check(promotion.get("margin", 0.02), "promotion", "margin", (int, float)))
    if not 0 <= margin < 1:
        raise fail(f"[promotion] margin is a relative improvement in [0, 1), got {margin}")
    cfg_kwargs["metric"] = choice(promotion, "promotion", "metric", METRICS, "mse")
    if "lookback" in promotion:
        cfg_kwargs["eval_lookback"] = check(promotion["lookback"], "promotion", "lookback", int)
        if cfg_kwargs["eval_lookback"] < 1:
            raise fail("[promotion] lookback must be >= 1")

    cfg_kwargs["registry_name"] = reg_name = need(reg, "registry", "name", str)
    if not _NAME.match(reg_name):
        raise fail(f"[registry] name {reg_name!r}: use letters, digits, '_', '.', '-' (it also names the lock file)")
    cfg_kwargs["experiment"] = check(reg.get("experiment", DEFAULT_EXPERIMENT), "registry", "experiment", str)
    if "dir" in lock:
        cfg_kwargs["lock_dir"] = path_of(check(lock["dir"], "lock", "dir", str))

    config = RetrainConfig(**cfg_kwargs)
    try:  # parameter names and values fail here, before any data is read
        template = make_model(name, **config.model_params())
        template._check_params()
    except (ValueError, TypeError) as exc:
        raise fail(f"[model] {exc}") from None
    if holdout < template.horizon:
        raise fail(f"[promotion] holdout ({holdout} rows) must be at least the horizon ({template.horizon})")
    return config


# ----- data --------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Validated rows: a DatetimeIndex and float64 columns (the config's columns, in order)."""

    frame: Any  # pd.DataFrame
    files: list[Path]
    sha256: str

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def end(self) -> Any:
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


def _read_file(path: Path, config: RetrainConfig) -> Any:
    import pandas as pd

    is_csv = path.name.endswith(CSV_SUFFIXES)
    if not is_csv and not path.name.endswith(PARQUET_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; use {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}")
    kind = "CSV" if is_csv else "Parquet"
    try:
        if config.reader == "polars":
            import polars as pl

            table = pl.read_csv(path, infer_schema_length=None) if is_csv else pl.read_parquet(path)
            frame = table.to_pandas()
        else:
            # correctly rounded floats, the same values polars reads (pandas 3's default parser is)
            options = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
            frame = pd.read_csv(path, **options) if is_csv else pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"no such data file: {path}") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read it as {kind} ({type(exc).__name__}: {_one_line(exc, 200)})") from None
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
        raise DataError(f"{path.name}: column {time_col!r} does not parse as timestamps ({_one_line(exc, 160)})") from None
    if index.hasnans:
        raise DataError(f"{path.name}: missing timestamp in column {time_col!r} at row {int(index.isna().argmax())}")
    return frame[config.columns].set_axis(index)


def load_data(config: RetrainConfig) -> Dataset:
    """Read, concatenate (select = "all") and validate the data; raises DataError."""
    import pandas as pd

    from tsessm.data import to_series

    files = data_files(config)
    frames = [_read_file(f, config) for f in files]
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
        raise DataError(_one_line(exc, 400)) from None
    if series.filled is not None and series.filled.any():
        log.info("%s: filled %d missing row(s) (missing=%s)", label, int(series.filled.sum()), config.missing)
    clean = pd.DataFrame(series.values, index=series.index, columns=series.columns)
    return Dataset(frame=clean, files=files, sha256=fingerprint(clean))


def fingerprint(frame: Any) -> str:
    """sha256 of the rows: column names, timestamps (int64 ns) and float64 values."""
    import numpy as np

    digest = hashlib.sha256()
    digest.update(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(np.ascontiguousarray(frame.index.as_unit("ns").asi8).tobytes())
    digest.update(np.ascontiguousarray(frame.to_numpy(dtype="float64")).tobytes())
    return digest.hexdigest()


# ----- outcome -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one retrain did. status: promoted, not_promoted, skipped, dry_run, failed, busy, config_error."""

    name: str
    status: str
    reason: str
    exit_code: int
    stage: str | None = None  # where a failure happened
    run_id: str | None = None
    champion_before: int | None = None
    champion_after: int | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    data_sha256: str | None = None
    data_rows: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def line(self) -> str:
        """The one line printed for the run."""
        status = self.status.replace("_", " ")
        where = f"{self.stage}: " if self.status == "failed" and self.stage else ""
        return mask(f"retrain {self.name}: {status}: {where}{self.reason}")


def _one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----- signals: stop cleanly, but never in the middle of a promotion ----------------------------
_critical = threading.Event()
_pending: list[int] = []
_interrupted: list[int] = []


def _on_signal(signum: int, frame: Any) -> None:
    if _interrupted:
        return  # already stopping (SIGINT from the terminal and SIGTERM from a scheduler, say)
    if _critical.is_set():
        _pending.append(signum)  # raised when the promotion is done
        return
    _interrupted.append(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def _promotion_section() -> Iterator[None]:
    """From the first registry write of a promotion on, signals wait: the promotion and its report
    complete (a few registry and tracking calls), then the process exits as it would have."""
    _critical.set()
    yield


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """SIGINT/SIGTERM end the run as failed ("interrupted"), the MLflow run marked FAILED and the
    lock released; a promotion under way completes first. Main thread only (else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending.clear()
    _interrupted.clear()
    _critical.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _critical.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if _pending:
            log.warning("%s arrived during the promotion; it completed first", signal.Signals(_pending[0]).name)


# ----- the run -----------------------------------------------------------------------------------
def lock_path(config: RetrainConfig) -> Path:
    """The lock file of `config`'s registered model (one retrain per model name at a time)."""
    return config.lock_dir / f"retrain-{config.registry_name}.lock"


class _EndAsFailed(Exception):
    """Raised inside the MLflow run so that it ends with status FAILED."""


def run_retrain(config: RetrainConfig | str | os.PathLike, *, force: bool = False, dry_run: bool = False) -> Outcome:
    """Run the pipeline once (see the module docstring); never raises for a failed run.

    force: retrain even if the data is unchanged or has too few new rows (the margin still gates).
    dry_run: train, compare and report, but leave the registry alone.
    """
    if not isinstance(config, RetrainConfig):
        try:
            config = load_config(config)
        except ConfigError as exc:
            return Outcome(name=Path(config).name, status="config_error", reason=str(exc), exit_code=EXIT_CONFIG)
    from filelock import FileLock, Timeout

    path = lock_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0)
        lock.acquire()
    except Timeout:
        return Outcome(config.registry_name, "busy", f"another retrain of {config.registry_name} is running "
                       f"(lock {path})", EXIT_BUSY)
    except OSError as exc:
        return Outcome(config.registry_name, "failed", f"cannot take the lock {path}: {_one_line(exc)}",
                       EXIT_FAILED, stage="lock")
    try:
        return _run_locked(config, force=force, dry_run=dry_run)
    finally:
        lock.release()


def _run_locked(config: RetrainConfig, *, force: bool, dry_run: bool) -> Outcome:
    from tsessm.tracking import start_run, tracking_uri

    name = config.registry_name
    outcome: Outcome | None = None
    entered = False
    try:
        with start_run(True, config.experiment, run_name=f"retrain-{name}") as tracker:
            entered = True
            try:
                outcome = _pipeline(config, tracker, force=force, dry_run=dry_run)
            except RetrainError as exc:
                outcome = Outcome(name, "failed", _one_line(exc, 500), EXIT_FAILED, stage=exc.stage)
            except FloatingPointError as exc:  # the trainer's divergence check
                outcome = Outcome(name, "failed", _one_line(exc, 500), EXIT_FAILED, stage="train")
            except Interrupted as exc:
                outcome = Outcome(name, "failed", str(exc), 128 + exc.signum, stage="interrupted")
            except Exception as exc:
                outcome = Outcome(name, "failed", f"{type(exc).__name__}: {_one_line(exc, 500)}", EXIT_FAILED,
                                  stage=getattr(exc, "_retrain_stage", "internal"))
            outcome.run_id = tracker.run_id
            _log_outcome(tracker, outcome)
            if not outcome.ok:
                raise _EndAsFailed
    except _EndAsFailed:
        pass
    except Interrupted as exc:  # while the run was being opened or closed
        if outcome is None or outcome.status != "promoted":
            outcome = Outcome(name, "failed", str(exc), 128 + exc.signum, stage="interrupted")
    except Exception as exc:
        if not entered:  # e.g. the tracking server is down: nothing was read, trained or changed
            outcome = Outcome(name, "failed", f"cannot start an MLflow run at {_safe_uri(tracking_uri())}: "
                              f"{_tracking_error(exc)}", EXIT_FAILED, stage="tracking")
        elif outcome is None:
            outcome = Outcome(name, "failed", f"lost the tracking server: {_tracking_error(exc)}", EXIT_FAILED,
                              stage="tracking")
        else:  # the run's report could not be written; what the registry holds is in the reason
            outcome.reason += f" (the report was not logged: {_one_line(exc, 200)})"
            outcome.exit_code, outcome.status, outcome.stage = EXIT_FAILED, "failed", "tracking"
    return outcome


def _tracking_error(exc: BaseException) -> str:
    """MLflow's long HTTP errors, root cause first ("[Errno 111] Connection refused; API request ...")."""
    text = " ".join(str(exc).split())
    cause = re.search(r"\[Errno -?\d+\] [^\"'()\]]+", text)
    return f"{cause.group(0).strip()}; {_one_line(text, 200)}" if cause else _one_line(text, 300)


def _safe_uri(uri: str) -> str:
    return mask(uri)


def _stage(stage: str):
    """Tag exceptions raised in a block with the stage they came from."""

    @contextlib.contextmanager
    def block() -> Iterator[None]:
        try:
            yield
        except RetrainError:
            raise
        except Exception as exc:
            if not hasattr(exc, "_retrain_stage"):
                with contextlib.suppress(Exception):
                    exc._retrain_stage = stage
            raise

    return block()


def _pipeline(config: RetrainConfig, tracker: Any, *, force: bool, dry_run: bool) -> Outcome:
    from tsessm import registry

    name = config.registry_name
    tracker.set_tags({"retrain.model": name, "retrain.config": str(config.path or ""),
                      "retrain.dry_run": str(dry_run).lower()})
    tracker.log_params(config.flat())

    # -- data
    start = time.perf_counter()
    data = load_data(config)
    tracker.log_metrics({"load_seconds": time.perf_counter() - start})
    tracker.set_tags({"retrain.data_sha256": data.sha256, "retrain.data_rows": data.rows,
                      "retrain.data_end": data.end.isoformat(),
                      "retrain.data_files": ",".join(f.name for f in data.files)[:4000]})
    tracker.log_params({"data.rows": data.rows, "data.start": data.frame.index[0].isoformat(),
                        "data.end": data.end.isoformat(), "data.sha256": data.sha256})
    log.info("%s: %d rows up to %s from %s (sha256 %s)", name, data.rows, data.end,
             ", ".join(f.name for f in data.files), data.sha256[:12])
    base = dict(name=name, data_sha256=data.sha256, data_rows=data.rows)

    with _stage("tracking"):
        last = _last_completed(tracker.run_id, name)
    if last is not None and not force:
        if last["sha256"] == data.sha256:
            return Outcome(status="skipped", exit_code=EXIT_OK, reason=(
                f"data unchanged since run {last['run_id']} (sha256 {data.sha256[:12]}, {data.rows} rows); "
                "nothing to do (--force retrains anyway)"), **base)
        new_rows = _rows_after(data, last["end"])
        if new_rows < config.min_new_rows:
            return Outcome(status="skipped", exit_code=EXIT_OK, reason=(
                f"{new_rows} new row(s) since run {last['run_id']} (data up to {last['end']}); "
                f"min_new_rows is {config.min_new_rows}"), **base)
        tracker.log_params({"data.new_rows": new_rows})

    # -- rows: train on all but the holdout, compare on the holdout
    test_start = data.rows - config.holdout
    if test_start < 1:
        raise DataError(f"{data.rows} rows leave none for training with a holdout of {config.holdout}")

    # -- the champion (pinned to its version number: an alias move mid-run cannot change it)
    with _stage("registry"):
        champion_version = registry.get_version(name, CHAMPION)
    champion = None
    if champion_version is not None:
        uri = f"models:/{name}/{champion_version}"
        try:
            champion = registry.load_forecaster(uri)
        except Exception as exc:
            raise RetrainError("champion", f"cannot load the champion {uri}: {_one_line(exc, 300)}") from None
    base["champion_before"] = base["champion_after"] = champion_version
    tracker.set_tags({"retrain.champion_version_before": champion_version or "none"})

    # -- the challenger
    challenger, fit_seconds, tuned = _train_challenger(config, data, test_start, tracker)
    tracker.log_metrics({"fit_seconds": fit_seconds})

    # -- the holdout comparison
    results, lookbacks = {}, {}
    with _stage("evaluate"):
        lookbacks["challenger"] = _eval_lookback(challenger, config)
        results["challenger"] = _holdout(challenger, data, test_start, lookbacks["challenger"], "challenger")
    import numpy as np

    if not np.isfinite(results["challenger"].forecasts).all():
        raise RetrainError("evaluate", "the challenger's holdout forecasts are not finite")
    challenger_score = float(results["challenger"].scores[config.metric])
    champion_score = None
    if champion is not None:
        _check_comparable(champion, challenger, champion_version)
        lookbacks["champion"] = _eval_lookback(champion, config)
        with _stage("evaluate"):
            results["champion"] = _holdout(champion, data, test_start, lookbacks["champion"],
                                           f"champion v{champion_version}")
        finite = np.isfinite(results["champion"].forecasts).all()
        champion_score = float(results["champion"].scores[config.metric]) if finite else math.inf
    base.update(challenger_score=challenger_score, champion_score=champion_score)
    _report(tracker, config, results, lookbacks, champion_version, test_start, data)

    # -- the decision
    promote, reason = _decide(config, challenger_score, champion_score, champion_version)
    log.info("%s: %s", name, reason)
    # the challenger absorbs the holdout rows (no refit) so that it forecasts from the end of the data
    with _stage("train"):
        challenger.update(data.frame.iloc[test_start:])
    with _stage("tracking"):
        info = tracker.log_model(challenger, name="model")
    if tuned:
        tracker.set_tags({"retrain.tuned": "true"})
    if dry_run:  # not a completed retrain: the next real run does not count it as "the last one"
        return Outcome(status="dry_run", exit_code=EXIT_OK,
                       reason=f"would {'promote' if promote else 'not promote'}: {reason}", **base)
    if not promote:
        return Outcome(status="not_promoted", exit_code=EXIT_OK, reason=reason, **base)

    # -- promotion
    with _stage("promote"):
        current = registry.get_version(name, CHAMPION)
        if current != champion_version:
            raise RetrainError("promote", f"@{CHAMPION} moved from v{champion_version} to v{current} during this "
                               "retrain; not promoting (run again to compare with the new champion)")
        with _promotion_section():
            version = registry.register_model(info.model_uri, name)
            _tag_version(name, version, config, data, tracker.run_id, challenger_score, champion_version, reason)
            if champion_version is not None:
                registry.set_alias(name, PREVIOUS, champion_version)
            registry.set_alias(name, CHAMPION, version)
    base["champion_after"] = version
    after = f"; v{champion_version} is @{PREVIOUS}" if champion_version is not None else ""
    return Outcome(status="promoted", exit_code=EXIT_OK,
                   reason=f"version {version} is @{CHAMPION} ({reason}){after}", **base)


def _rows_after(data: Dataset, end_text: str) -> int:
    import pandas as pd

    try:
        end = pd.Timestamp(end_text)
    except (ValueError, TypeError):
        return data.rows
    index = data.frame.index
    if (index.tz is None) != (end.tz is None):
        return data.rows
    return int((index > end).sum())


def _last_completed(run_id: str | None, name: str) -> dict[str, str] | None:
    """The newest completed retrain of `name` (promoted or not) in this run's experiment."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`retrain.model` = '{name}' and tags.`retrain.completed` = 'true'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    return {"run_id": runs[0].info.run_id, "sha256": tags.get("retrain.data_sha256", ""),
            "end": tags.get("retrain.data_end", "")}


def _train_challenger(config: RetrainConfig, data: Dataset, test_start: int, tracker: Any) -> tuple[Any, float, bool]:
    from tsessm.jobs import make_model

    train = data.frame.iloc[:test_start]
    params = config.model_params()
    tuned = False
    if config.tuning:
        with _stage("tune"):
            params = _tune(config, train, params, data.sha256, tracker)
        tuned = True
    with _stage("train"):
        model = make_model(config.model, **params)
    log.info("%s: training %s on rows 0:%d", config.registry_name, type(model).__name__, test_start)
    start = time.perf_counter()
    try:
        model.fit(train)
    except (ValueError, TypeError) as exc:
        raise RetrainError("train", _one_line(exc, 400)) from None
    seconds = time.perf_counter() - start
    tracker.log_history(getattr(model, "history_", []))
    return model, seconds, tuned


def _tune(config: RetrainConfig, train: Any, params: dict[str, Any], sha256: str, tracker: Any) -> dict[str, Any]:
    """A short Optuna search on the training rows (tsessm.tuning.tune); returns the best model's params."""
    from tsessm.tuning import tune

    options = config.tuning or {}
    pinned = {k: v for k, v in params.items() if k not in ("horizon", "target", "epochs", "random_state", "verbose")}
    with tempfile.TemporaryDirectory(prefix="tsessm-retrain-tune-") as tmp:
        path = Path(tmp) / "train.csv"
        time_col = train.index.name or "time"
        train.rename_axis(time_col).reset_index().to_csv(path, index=False)
        result = tune(
            str(path), model=config.model, n_trials=int(options["n_trials"]), horizon=int(params.get("horizon", 24)),
            target=params["target"], columns=list(config.columns), time_col=time_col,
            storage=options.get("storage") or f"sqlite:///{Path(tmp) / 'optuna.db'}",
            study_name=f"retrain-{config.registry_name}-{sha256[:12]}",
            epochs=int(options.get("epochs", params.get("epochs", 10))), timeout=options.get("timeout"),
            pruner=options.get("pruner", "median"), seed=options.get("seed", params.get("random_state", 0)),
            track=False, fixed_params=pinned, space=options.get("space"), retrain_best=False,
        )
    if result.model_params is None:
        raise RetrainError("tune", f"no tuning trial completed ({result.n_complete} complete, "
                           f"{result.n_pruned} pruned)")
    tracker.log_params({f"tuned.{k}": v for k, v in (result.best_params or {}).items()})
    tracker.log_metrics({"tune_best_val_loss": result.best_value, "tune_n_complete": result.n_complete,
                         "tune_n_pruned": result.n_pruned})
    return dict(result.model_params)


def _eval_lookback(model: Any, config: RetrainConfig) -> int:
    """Rows a windowed forecast sees: [promotion] lookback, else the model's own."""
    if config.eval_lookback:
        return config.eval_lookback
    if getattr(model, "lookback", None):
        return int(model.lookback)
    if getattr(model, "season_length", None):
        return int(model.season_length)
    return 96


def _holdout(model: Any, data: Dataset, test_start: int, lookback: int, who: str) -> Any:
    from tsessm.backtest import backtest

    if lookback > test_start:
        raise RetrainError("evaluate", f"the {who} needs {lookback} rows before the holdout; there are {test_start}")
    try:
        return backtest(model, data.frame, test_start=test_start, train_rows=test_start, lookback=lookback,
                        mode="windowed")
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise RetrainError("evaluate", f"{who}: {_one_line(exc, 300)}") from None


def _check_comparable(champion: Any, challenger: Any, version: int) -> None:
    problems = []
    if champion.horizon != challenger.horizon:
        problems.append(f"horizon {champion.horizon} vs {challenger.horizon}")
    if list(champion.target_columns_) != list(challenger.target_columns_):
        problems.append(f"targets {list(champion.target_columns_)} vs {list(challenger.target_columns_)}")
    if problems:
        raise RetrainError("evaluate", f"champion v{version} and the challenger forecast different things "
                           f"({'; '.join(problems)}): not comparable. Replace the champion deliberately "
                           "(e.g. tsessm train --register NAME) or use a new registry name")


def _decide(config: RetrainConfig, challenger: float, champion: float | None, version: int | None) -> tuple[bool, str]:
    metric = config.metric
    if champion is None:
        return True, f"first model: no @{CHAMPION} yet; holdout {metric} {challenger:.4g}"
    if not math.isfinite(champion):
        return True, f"champion v{version}'s holdout forecasts are not finite; challenger {metric} {challenger:.4g}"
    improvement = (champion - challenger) / champion if champion > 0 else (0.0 if challenger >= champion else math.inf)
    versus = (f"holdout {metric} {challenger:.4g} vs champion v{version} {champion:.4g}: "
              f"{improvement:+.1%} (margin {config.margin:.1%})")
    if improvement > 0 and improvement >= config.margin:
        return True, versus
    return False, f"{versus}; @{CHAMPION} stays v{version}"


def _report(tracker: Any, config: RetrainConfig, results: dict[str, Any], lookbacks: dict[str, int],
            champion_version: int | None, test_start: int, data: Dataset) -> None:
    """metrics.csv, by_step.csv and forecast.png in the run; the holdout metrics as run metrics."""
    import pandas as pd

    from tsessm.plotting import plot_backtest

    rows, steps = [], []
    for role, result in results.items():
        version = f"v{champion_version}" if role == "champion" else "new"
        scores = result.scores
        rows.append({"role": role, "version": version, "lookback": lookbacks[role], "mse": scores["mse"],
                     "mae": scores["mae"], "n_windows": scores["n_windows"]})
        steps.append(result.by_step.assign(role=role))
        tracker.log_metrics({f"{role}_mse": scores["mse"], f"{role}_mae": scores["mae"]}
                            if all(math.isfinite(scores[k]) for k in METRICS) else {})
    tracker.log_metrics({"holdout_rows": config.holdout, "holdout_windows": rows[0]["n_windows"]})
    with tempfile.TemporaryDirectory(prefix="tsessm-retrain-") as tmp:
        table = pd.DataFrame(rows)
        table.to_csv(Path(tmp) / "metrics.csv", index=False)
        pd.concat(steps).to_csv(Path(tmp) / "by_step.csv", index=False)
        labels = {("challenger" if r == "challenger" else f"champion v{champion_version}"): res
                  for r, res in results.items()}
        plot_backtest(labels, Path(tmp) / "forecast.png")
        for artifact in ("metrics.csv", "by_step.csv", "forecast.png"):
            tracker.log_artifact(Path(tmp) / artifact)
    log.info("holdout rows %d:%d\n%s", test_start, data.rows, table.to_string(index=False))


def _tag_version(name: str, version: int, config: RetrainConfig, data: Dataset, run_id: str | None,
                 score: float, champion_version: int | None, reason: str) -> None:
    from tsessm.registry import _client

    client = _client()
    tags = {"data_sha256": data.sha256, "data_rows": data.rows, "data_end": data.end.isoformat(),
            f"holdout_{config.metric}": f"{score:.6g}", "retrain_run_id": run_id or "",
            "replaced_version": champion_version if champion_version is not None else "none"}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    client.update_model_version(name, str(version), description=f"retrain: {reason}"[:5000])


def _log_outcome(tracker: Any, outcome: Outcome) -> None:
    completed = outcome.status in ("promoted", "not_promoted")
    tags = {"retrain.decision": outcome.status, "retrain.reason": outcome.reason[:5000],
            "retrain.completed": str(completed).lower(), "mlflow.note.content": outcome.line()[:5000]}
    if outcome.stage:
        tags["retrain.stage"] = outcome.stage
    if outcome.status == "promoted":
        tags["retrain.promoted_version"] = outcome.champion_after
    tracker.set_tags(tags)
    tracker.log_params({"decision": outcome.status, "reason": outcome.reason})
    if outcome.champion_score is not None and outcome.challenger_score is not None \
            and math.isfinite(outcome.champion_score) and outcome.champion_score > 0:
        tracker.log_metrics({"improvement": (outcome.champion_score - outcome.challenger_score) / outcome.champion_score})
    tracker.log_dict({k: v for k, v in asdict(outcome).items()
                      if not (isinstance(v, float) and not math.isfinite(v))}, "decision.json")


# ----- command line ------------------------------------------------------------------------------
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the retrain TOML file (see pipelines/retrain.example.toml)")
    p.add_argument("--force", action="store_true",
                   help="retrain even if the data is unchanged or has fewer than min_new_rows new rows")
    p.add_argument("--dry-run", action="store_true", help="train, compare and report, but leave the registry alone")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def add_retrain_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `retrain` on the `tsessm` sub-command parsers; dispatch with run_retrain_command(args)."""
    p = subparsers.add_parser(
        "retrain", help="retrain a registered model on the latest data; promote it only if it beats the champion",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    return p


def run_retrain_command(args: argparse.Namespace) -> int:
    """Run `tsessm retrain` from parsed arguments: prints one line, returns the exit status."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in job logs
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        log.setLevel(logging.INFO)
    with handle_signals():
        try:
            outcome = run_retrain(args.config, force=args.force, dry_run=args.dry_run)
        except Interrupted as exc:  # a signal outside the run (loading the config, taking the lock)
            outcome = Outcome("?", "failed", str(exc), 128 + exc.signum, stage="interrupted")
    print(outcome.line(), file=sys.stdout if outcome.ok else sys.stderr, flush=True)
    return outcome.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tsessm.retrain --config retrain.toml` (what `tsessm retrain` runs)."""
    return run_script("tsessm retrain", __doc__, _add_arguments, run_retrain_command, argv)


if __name__ == "__main__":
    sys.exit(main())
