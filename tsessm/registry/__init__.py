"""MLflow Model Registry glue: log a fitted tsessm model as a pyfunc, move aliases, load it back.

    from tsessm import registry
    with tracking.start_run(True, "load") as tracker:
        info = tracker.log_model(model, registered_model_name="load-essm")   # or registry.log_model
    registry.promote("load-essm", info.registered_model_version)           # alias "champion"
    model = registry.load_forecaster("models:/load-essm@champion")          # a BaseForecaster again

The logged model is an ordinary MLflow pyfunc (`mlflow.pyfunc.load_model`, `mlflow models serve`).
Its input is a table of **new observations that follow the training data** (what the model last
saw when it was logged), its output one row per forecast step:

input   a DataFrame; each row one observation: a time column (``time``, ``ds``, ``date`` or
        ``timestamp``; or a DatetimeIndex in-process) and the model's columns by name. The rows are
        absorbed with ``update`` by a *copy* of the logged model, then the copy forecasts; the
        logged model itself never changes, so every request starts from the logged state and
        equal requests get equal answers. No rows (an empty frame, or rows that carry only
        ``fh``) = forecast from the logged state. A panel model also takes its id column; its
        rows may mix series.
fh      which steps (1-based, within 1..horizon) to return: ``params={"fh": [1, 24]}`` (in HTTP
        JSON: ``"params": {"fh": [1, 24]}``) or an ``fh`` column; default (or ``[]``) every step.
output  a DataFrame, one row per step: ``time`` (ISO 8601 string of the forecast timestamp; for
        models fitted on numpy arrays the 0-based row position, as a string, in the series seen
        so far: rows before + step - 1), ``step`` (1..horizon) and one
        float column per target; a panel model adds its id column first, one block per series.

Aliases (``champion``, ``challenger``, ...) name versions; stages are not used (deprecated in
MLflow). Which store: ``$MLFLOW_TRACKING_URI`` (or ``$MLFLOW_REGISTRY_URI``), else tsessm's
default ``sqlite:///mlruns.db`` (see `tsessm.tracking`).

A logged model installs: its artifacts hold a wheel of the tsessm that logged it, and its
requirements.txt (exact pins of tsessm's dependencies, then ``artifacts/tsessm-<version>+g<hash>-...whl``)
installs it, so ``mlflow models serve -m models:/NAME@champion --env-manager virtualenv`` (or ``uv``)
builds an environment that needs nothing else; ``--env-manager local`` uses the tsessm installed
where it runs. Time columns are declared ``Any`` in the signature: ISO strings, naive or tz-aware
datetimes pass the schema in process and over HTTP alike, and the model parses them. Bad input is an
`MlflowException` (HTTP 400) whose message names the problem, never a traceback.

Modules: `frames` (new observations in, the forecast frame out), `pyfunc` (the served model and
`log_model`), `wheel` (the wheel a logged model carries), `client` (the MLflow client, versions and
aliases), `loading` (`load_forecaster`).
MLflow loads with the pyfunc's names, on first use (PEP 562): `tsessm.tracking` takes
`load_forecaster` from here, and a plain model file loads without MLflow.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from tsessm.mlflow_uri import is_model_uri
from tsessm.registry.client import (DEFAULT_ALIAS, client, get_version, promote, register_model,
                                    registry_uri, set_alias)
from tsessm.registry.frames import default_input_example, forecast_frame
from tsessm.registry.loading import ARTIFACT_KEY, MODEL_FILE, load_forecaster

_PYFUNC = ("TsessmPyfuncModel", "log_model")  # they import mlflow (about a second): loaded on first use

__all__ = [
    "TsessmPyfuncModel", "forecast_frame", "log_model", "register_model", "set_alias", "promote",
    "get_version", "load_forecaster", "is_model_uri", "client", "registry_uri", "default_input_example",
    "DEFAULT_ALIAS", "ARTIFACT_KEY", "MODEL_FILE",
]


def __getattr__(name: str) -> Any:
    if name in _PYFUNC:
        return getattr(import_module("tsessm.registry.pyfunc"), name)
    raise AttributeError(f"module 'tsessm.registry' has no attribute {name!r}")
