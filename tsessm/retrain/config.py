"""The retrain TOML file: its schema (pydantic), and `RetrainConfig`, the settings a run uses.

Every problem is a `ConfigError` (a ValueError, exit 2) whose message names the file, the section
and the key: "retrain.toml: [promotion] holdout is required".
"""
from __future__ import annotations

import os
import re
import tempfile
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tsessm.jobs import MODELS, make_model, model_class

METRICS = ("mse", "mae")
READERS = ("pandas", "polars")
SELECTS = ("newest", "all")
MISSING = ("error", "ffill", "interpolate")
TUNABLE = ("essm", "lstm")
DEFAULT_EXPERIMENT = "tsessm-retrain"
LOCK_DIR_ENV = "TSESSM_LOCK_DIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ConfigError(ValueError):
    """The TOML config is missing, unreadable or invalid (exit 2)."""


def _default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "tsessm-retrain-locks")


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
    lock_dir: Path = field(default_factory=_default_lock_dir)
    path: Path | None = None  # the TOML file

    @property
    def horizon(self) -> int:
        return int(self.model_params()["horizon"])

    def model_params(self) -> dict[str, Any]:
        """The challenger's parameters: [model.params] + the target, a seed and no progress bar."""
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


# ----- the file's schema -------------------------------------------------------------------------
# Strict: TOML already has types, so "24" is not 24 and true is not 1. A check a type cannot say
# raises ValueError with the whole message; _message turns pydantic's other errors into ours.
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _names(value: Any, key: str) -> list[str]:
    if key == "target" and not isinstance(value, (str, list)):
        raise ValueError(f"[data] target must be str or list, got {value!r}")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"[data] {key} must be a column name or a non-empty list of them, got {value!r}")
    return list(items)


class _Data(_Section):
    path: str
    target: list[str]
    columns: list[str] | None = None  # default: the target(s)
    time_col: str | None = None
    select: Literal[SELECTS] = "newest"
    pattern: str = "*"
    reader: Literal[READERS] = "pandas"
    missing: Literal[MISSING] = "error"
    min_new_rows: int = Field(1, ge=0)

    @field_validator("target", "columns", mode="before")
    @classmethod
    def _column_names(cls, value: Any, info: Any) -> list[str]:
        return _names(value, info.field_name)

    @model_validator(mode="after")
    def _columns_hold_the_targets(self) -> _Data:
        columns = self.columns if self.columns is not None else list(self.target)
        missing = [t for t in self.target if t not in columns]
        if missing:
            raise ValueError(f"[data] columns must include the target(s); missing {missing}")
        if len(set(columns)) != len(columns):
            raise ValueError(f"[data] columns names a column twice: {columns}")
        self.columns = columns
        return self


class _Model(_Section):
    name: str
    params: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"[model] name must be one of {', '.join(MODELS)}, got {name!r}")
        return name

    @field_validator("params")
    @classmethod
    def _no_target(cls, params: dict[str, Any]) -> dict[str, Any]:
        if "target" in params:
            raise ValueError("[model.params] target: set the target in [data] target")
        return params


class _Tuning(_Section):
    n_trials: int = Field(ge=1)
    epochs: int | None = None
    timeout: int | float | None = None
    storage: str | None = None
    seed: int | None = None
    pruner: str | None = None
    space: dict[str, Any] | None = None

    @field_validator("space")
    @classmethod
    def _choices(cls, space: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, choices in (space or {}).items():
            if not isinstance(choices, list) or not choices:
                raise ValueError(f"[tuning.space] {key} must be a non-empty list of choices")
        return space


class _Promotion(_Section):
    holdout: int
    margin: int | float = 0.02
    metric: Literal[METRICS] = "mse"
    lookback: int | None = Field(None, ge=1)

    @field_validator("margin")
    @classmethod
    def _relative(cls, margin: int | float) -> float:
        if not 0 <= margin < 1:
            raise ValueError(f"[promotion] margin is a relative improvement in [0, 1), got {float(margin)}")
        return float(margin)


class _Registry(_Section):
    name: str
    experiment: str = DEFAULT_EXPERIMENT

    @field_validator("name")
    @classmethod
    def _safe(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"[registry] name {name!r}: use letters, digits, '_', '.', '-' "
                             "(it also names the lock file)")
        return name


class _Lock(_Section):
    dir: str | None = None


class _File(_Section):
    data: _Data
    model: _Model
    tuning: _Tuning | None = None  # absent or empty: fixed parameters
    promotion: _Promotion
    registry: _Registry
    lock: _Lock

    @model_validator(mode="before")
    @classmethod
    def _absent_sections_are_empty(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = {name: {} for name in SECTIONS} | raw
        if out["tuning"] == {}:
            out["tuning"] = None
        return out

    @model_validator(mode="after")
    def _tuned_model(self) -> _File:
        if self.tuning is not None and self.model.name not in TUNABLE:
            raise ValueError(f"[tuning] tunes {' or '.join(TUNABLE)}, not {self.model.name!r}; drop [tuning] "
                             "to train fixed parameters")
        return self


SECTIONS: dict[str, type[_Section]] = {"data": _Data, "model": _Model, "tuning": _Tuning, "promotion": _Promotion,
                                       "registry": _Registry, "lock": _Lock}


def _kinds(annotation: Any) -> list[str]:
    """The type names a key accepts, for "must be int or float": None left out, Literal is str."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [k for member in typing.get_args(annotation) for k in _kinds(member)]
    if annotation is type(None):
        return []
    if typing.get_origin(annotation) is Literal:
        return ["str"]
    origin = typing.get_origin(annotation) or annotation
    return [getattr(origin, "__name__", str(origin))]


def _message(exc: ValidationError) -> str:
    """The first problem of `exc` as one of our messages. Unknown sections and keys come first, as
    they explain the rest; then the sections in file order."""
    errors = exc.errors(include_url=False)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1)
    if unknown:
        return f"unknown section(s) {unknown}; sections are {', '.join(SECTIONS)}"
    for section in (str(e["loc"][0]) for e in errors if len(e["loc"]) == 1 and e["type"] == "model_type"):
        return f"[{section}] must be a table"
    for section, schema in SECTIONS.items():
        extra = sorted(str(e["loc"][1]) for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 2
                       and e["loc"][0] == section)
        if extra:
            return f"unknown key(s) {extra} in [{section}]; known: {', '.join(sorted(schema.model_fields))}"
    order = list(SECTIONS)
    error = min(errors, key=lambda e: order.index(e["loc"][0]) if e["loc"] and e["loc"][0] in order else -1)
    if error["type"] == "value_error":  # our own check: the message is whole
        return str(error["ctx"]["error"])
    section, key = str(error["loc"][0]), str(error["loc"][1])
    value = error["input"]
    if error["type"] == "missing":
        return f"[{section}] {key} is required"
    if error["type"] == "greater_than_equal":
        return f"[{section}] {key} must be >= {error['ctx']['ge']}"
    annotation = SECTIONS[section].model_fields[key].annotation
    if error["type"] == "literal_error" and isinstance(value, str):
        return f"[{section}] {key} must be one of {', '.join(typing.get_args(annotation))}, got {value!r}"
    return f"[{section}] {key} must be {' or '.join(_kinds(annotation))}, got {value!r}"


# ----- reading it --------------------------------------------------------------------------------
def load_config(path: str | os.PathLike) -> RetrainConfig:
    """Read and check a retrain TOML file; raises ConfigError naming the problem."""
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
    try:
        file = _File.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_message(exc)}") from None
    base = Path(base_dir)

    def path_of(text: str) -> Path:
        p = Path(os.path.expandvars(os.path.expanduser(text)))
        return (p if p.is_absolute() else base / p).resolve()

    data, promotion = file.data, file.promotion
    config = RetrainConfig(
        data_path=path_of(data.path), target=data.target, columns=data.columns, time_col=data.time_col,
        select=data.select, pattern=data.pattern, reader=data.reader, missing=data.missing,
        min_new_rows=data.min_new_rows, model=file.model.name, params=dict(file.model.params),
        tuning=file.tuning.model_dump(exclude_unset=True) if file.tuning else None,
        holdout=promotion.holdout, margin=promotion.margin, metric=promotion.metric,
        eval_lookback=promotion.lookback, registry_name=file.registry.name, experiment=file.registry.experiment,
        lock_dir=path_of(file.lock.dir) if file.lock.dir is not None else _default_lock_dir(), path=path,
    )
    try:  # parameter names and values fail here, before any data is read
        template = make_model(config.model, **config.model_params())
        template.check_params()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: [model] {exc}") from None
    if config.holdout < template.horizon:
        raise ConfigError(f"{where}: [promotion] holdout ({config.holdout} rows) must be at least the horizon "
                          f"({template.horizon})")
    return config
