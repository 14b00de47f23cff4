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

Serving needs tsessm importable in the serving environment (installed, or on PYTHONPATH):
``mlflow models serve -m models:/NAME@champion --env-manager local``.
"""
from __future__ import annotations

import copy
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

from tsessm.columns import TIME_COLUMNS
from tsessm.forecasters.base import BaseForecaster
from tsessm.redact import mask
from tsessm.mlflow_uri import bound_http_retries, is_model_uri, tracking_uri

ARTIFACT_KEY = "tsessm_model"
MODEL_FILE = "model.tsessm"
DEFAULT_ALIAS = "champion"

__all__ = [
    "TsessmPyfuncModel", "forecast_frame", "log_model", "register_model", "set_alias", "promote",
    "get_version", "load_forecaster", "is_model_uri",
]


# ----- the pyfunc ----------------------------------------------------------------------------
class TsessmPyfuncModel(mlflow.pyfunc.PythonModel):
    """A saved tsessm model file served as an MLflow pyfunc (semantics in the module docstring)."""

    def load_context(self, context: Any) -> None:
        self.model = BaseForecaster.load(context.artifacts[ARTIFACT_KEY])

    # pd.DataFrame is a hint MLflow takes as "no schema from hints": the signature rules.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        fh = (params or {}).get("fh")
        return forecast_frame(self.model, model_input, fh=fh)


# Logged as "models from code" (this file, not a cloudpickle of the class): loading imports tsessm.
_ENTRY_CODE = """\
# tsessm pyfunc entry point (MLflow "models from code"); the logic is tsessm.registry.
import mlflow
from tsessm.registry import TsessmPyfuncModel

mlflow.models.set_model(TsessmPyfuncModel())
"""


def _is_panel(model: Any) -> bool:
    from tsessm.forecasters.panel import PanelForecaster

    return isinstance(model, PanelForecaster)


def forecast_frame(model: Any, new_rows: Any = None, fh: int | Sequence[int] | None = None) -> pd.DataFrame:
    """The pyfunc's predict, usable directly: absorb `new_rows` in a copy of `model`, forecast.

    `model` is never changed. Returns the long frame described in the module docstring.
    """
    frame = _as_frame(new_rows)
    fh = _resolve_fh(frame, fh)
    if "fh" in frame.columns:
        frame = frame.drop(columns="fh")
    if _is_panel(model):
        return _panel_forecast(model, frame, fh)
    observations = _observations(model, frame)
    if observations is not None:
        model = copy.deepcopy(model)
        model.update(observations)
    return _tidy(model, model.predict(fh=fh), fh)


def _as_frame(new_rows: Any) -> pd.DataFrame:
    if new_rows is None:
        return pd.DataFrame()
    if isinstance(new_rows, pd.Series):
        return new_rows.to_frame()
    if type(new_rows).__module__.startswith("polars"):
        return new_rows.to_pandas()
    if isinstance(new_rows, dict):
        return pd.DataFrame(new_rows)
    if not isinstance(new_rows, pd.DataFrame):
        raise TypeError(f"new observations must be a pandas DataFrame, got {type(new_rows).__name__}")
    return new_rows


def _resolve_fh(frame: pd.DataFrame, fh: Any) -> list[int] | None:
    """Steps asked for by `fh` (params) or an `fh` column; None = every step."""
    column = None
    if "fh" in frame.columns:
        values = pd.to_numeric(frame["fh"], errors="coerce").dropna()
        if len(values):
            if not np.allclose(values, np.round(values)):
                raise ValueError(f"fh column must hold integers, got {values.tolist()}")
            column = sorted({int(v) for v in values})
    if fh is not None and not isinstance(fh, (int, np.integer)):
        fh = [int(v) for v in fh] or None  # [] (the params default) = every step
    if isinstance(fh, (int, np.integer)):
        fh = [int(fh)]
    if fh is not None and column is not None and sorted(fh) != column:
        raise ValueError(f"fh given twice and differently: params {fh}, column {column}")
    return fh if fh is not None else column


def _time_column(frame: pd.DataFrame, extra: Sequence[str | None] = ()) -> str | None:
    for name in (*extra, *TIME_COLUMNS):
        if name is not None and name in frame.columns:
            return name
    return None


def _observations(model: BaseForecaster, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The rows to absorb, as a frame the model's `update` takes; None when there are none."""
    if not hasattr(model, "columns_"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"{type(model).__name__} is not fitted")
    columns = list(model.columns_)
    fitted_name = getattr(getattr(model, "last_index_", None), "name", None)
    time_col = _time_column(frame, [fitted_name] if isinstance(fitted_name, str) else [])
    present = [c for c in frame.columns if c != time_col]
    if len(frame) == 0 or (not present and time_col is None):
        return None
    data = frame.dropna(how="all")  # rows that carried only fh
    if len(data) == 0:
        return None
    unknown = [c for c in present if c not in columns]
    missing = [c for c in columns if c not in present]
    if unknown or missing:
        raise ValueError(
            f"new observations need the model's columns {columns} and a time column "
            f"({', '.join(TIME_COLUMNS)}): missing {missing}, unexpected {unknown}"
        )
    values = data[columns].apply(pd.to_numeric, errors="raise").astype("float64")
    if model.input_kind_.kind.startswith("numpy"):
        return values.to_numpy()  # integer steps: rows follow by definition
    if time_col is not None:
        try:
            index = pd.DatetimeIndex(pd.to_datetime(data[time_col]), name=model.last_index_.name)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"column {time_col!r} does not parse as timestamps ({exc})") from None
    elif isinstance(data.index, pd.DatetimeIndex):
        index = data.index.rename(model.last_index_.name)
    else:
        raise ValueError(f"new observations need a time column ({', '.join(TIME_COLUMNS)}) or a DatetimeIndex")
    if index.tz is not None and model.last_index_.tz is None:
        index = index.tz_convert(None)
    return values.set_axis(index)


def _time_strings(index: Any) -> list[str]:
    if isinstance(index, pd.DatetimeIndex):
        return [t.isoformat() for t in index]
    return [str(int(t)) if isinstance(t, (int, np.integer)) else str(t) for t in index]


def _tidy(model: BaseForecaster, forecast: Any, fh: list[int] | None) -> pd.DataFrame:
    targets = [str(t) for t in model.target_columns_]
    clash = [t for t in targets if t in ("time", "step")]
    if clash:
        raise ValueError(f"a target named {clash[0]!r} clashes with the output's own columns (time, step)")
    steps = np.asarray(model._resolve_fh(fh), dtype="int64")
    if isinstance(forecast, np.ndarray):  # integer steps: 0-based position in everything seen so far
        values, times = forecast, pd.Index(model.n_seen_ - 1 + steps)
    elif type(forecast).__module__.startswith("polars"):
        time_col = model.input_kind_.time_col
        pdf = forecast.to_pandas()
        values, times = pdf[targets].to_numpy(), pd.DatetimeIndex(pdf[time_col])
    else:
        if isinstance(forecast, pd.Series):
            forecast = forecast.to_frame(targets[0])
        values, times = forecast[targets].to_numpy(), forecast.index
    out = pd.DataFrame({"time": _time_strings(times), "step": steps})
    for j, name in enumerate(targets):
        out[name] = np.asarray(values[:, j], dtype="float64")
    return out


def _panel_forecast(panel: Any, frame: pd.DataFrame, fh: list[int] | None) -> pd.DataFrame:
    time_col = _time_column(frame, [panel.time_col])
    data = frame.dropna(how="all")  # rows that carried only fh
    if len(data):
        if panel.id_col not in data.columns or time_col is None:
            raise ValueError(f"panel observations need the columns {panel.id_col!r} and a time column")
        data = data.rename(columns={time_col: panel.time_col})
        data[panel.time_col] = pd.to_datetime(data[panel.time_col])
        panel = copy.deepcopy(panel)
        panel.update(data)
    forecast = panel.predict(fh=fh)
    if type(forecast).__module__.startswith("polars"):
        forecast = forecast.to_pandas()
    steps = np.asarray(panel.model_._resolve_fh(fh), dtype="int64")
    out = pd.DataFrame({
        panel.id_col: forecast[panel.id_col].to_numpy(),
        "time": _time_strings(pd.DatetimeIndex(forecast[panel.time_col])),
        "step": np.tile(steps, len(forecast) // len(steps)),  # predict: one block of steps per series
    })
    for name in (str(t) for t in panel.target_columns_):
        out[name] = forecast[name].to_numpy(dtype="float64")
    return out


# ----- logging and the registry --------------------------------------------------------------
def _registry_uri() -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri()


def _client() -> Any:
    from mlflow import MlflowClient

    bound_http_retries()
    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=_registry_uri())


def _pip_requirements() -> list[str]:
    names = ("mlflow", "torch", "numpy", "pandas", "scikit-learn", "statsmodels", "polars", "cloudpickle")
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return pins


def default_input_example(model: Any) -> pd.DataFrame:
    """An input example with no rows (= forecast from the logged state), typed like real input."""
    if _is_panel(model):
        columns = {model.id_col: pd.Series([], dtype="object"), "time": pd.Series([], dtype="datetime64[ns]")}
    elif model.input_kind_.kind.startswith("numpy"):
        columns = {}
    else:
        columns = {"time": pd.Series([], dtype="datetime64[ns]")}
    for name in model.columns_:
        columns[str(name)] = pd.Series([], dtype="float64")
    return pd.DataFrame(columns)


def _signature(model: Any, example: pd.DataFrame, output: pd.DataFrame) -> Any:
    """Inferred from the example and its output; every input column optional (no rows is valid),
    the other accepted time-column names and an `fh` column added, `fh` as a params entry."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    with warnings.catch_warnings():  # "integer column" hint: `step` is never missing
        warnings.simplefilter("ignore", UserWarning)
        inferred = infer_signature(example, output)
    specs = [ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]
    names = {c.name for c in specs}
    time_spec = next((c for c in specs if c.name in TIME_COLUMNS), None)
    if time_spec is not None:
        specs += [ColSpec(time_spec.type, n, required=False) for n in TIME_COLUMNS if n not in names]
    if "fh" not in names:
        specs.append(ColSpec("long", "fh", required=False))
    # MLflow fills in a param's default on every call, so the default must mean "not given": [].
    params = ParamSchema([ParamSpec("fh", "long", default=[], shape=(-1,))])
    return ModelSignature(inputs=Schema(specs), outputs=inferred.outputs, params=params)


def log_model(model: Any, name: str = "model", registered_model_name: str | None = None,
              input_example: Any = None, *, extra_pip_requirements: Sequence[str] | None = None,
              await_registration_for: int = 300) -> Any:
    """Log a fitted tsessm model as a pyfunc in the active run (and register it if asked).

    input_example: new observations as the server would get them (default: a typed frame with
    no rows, i.e. "forecast from the logged state"). The signature is inferred from it and from
    its forecast. Returns MLflow's `ModelInfo`: `.model_uri` (loadable with `load_forecaster` and
    `mlflow.pyfunc.load_model`), `.run_id`, `.registered_model_version` (None unless registered).
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "model_" if _is_panel(model) else "n_seen_")
    example = default_input_example(model) if input_example is None else _as_frame(input_example)
    output = forecast_frame(model, example)
    signature = _signature(model, example, output)
    with tempfile.TemporaryDirectory(prefix="tsessm-log-") as tmp, warnings.catch_warnings():
        # MLflow's own pandas-3 deprecation noise while it writes the input example
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        path, code = Path(tmp) / MODEL_FILE, Path(tmp) / "tsessm_pyfunc.py"
        model.save(path)
        code.write_text(_ENTRY_CODE, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),  # "models from code": no cloudpickle of the class
            artifacts={ARTIFACT_KEY: str(path)},
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements() + list(extra_pip_requirements or []),
            registered_model_name=registered_model_name,
            await_registration_for=await_registration_for,
            metadata={"tsessm_class": type(model).__name__},
        )
    if info.registered_model_version is not None:  # an int from a sqlite store, a str over REST
        info.registered_model_version = int(info.registered_model_version)
    return info


def register_model(model_uri: str, name: str) -> int:
    """Register an already logged model (`ModelInfo.model_uri`, `runs:/<id>/model`) under `name`
    in the active MLflow registry (the one `tracking.start_run` set); returns the version."""
    version = mlflow.register_model(model_uri, name)
    return int(version.version)


def _not_found(exc: Exception) -> bool:
    """An unknown registered model (RESOURCE_DOES_NOT_EXIST) or alias (INVALID_PARAMETER_VALUE)."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in exc.message.lower())


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point `alias` of registered model `name` at `version` (moving it if another version had it)."""
    _client().set_registered_model_alias(name, alias, str(int(version)))


def get_version(name: str, alias: str = DEFAULT_ALIAS) -> int | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    try:
        return int(_client().get_model_version_by_alias(name, alias).version)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def promote(name: str, version: int | str, alias: str = DEFAULT_ALIAS) -> int | None:
    """Give `alias` (default "champion") to `version`; returns the version that held it before."""
    previous = get_version(name, alias)
    set_alias(name, alias, version)
    return previous


# ----- loading back --------------------------------------------------------------------------
def _model_file_in(directory: Path) -> Path:
    """The tsessm model file inside a downloaded MLflow model (or a plain artifact folder)."""
    mlmodel = directory / "MLmodel"
    if mlmodel.is_file():
        from mlflow.models import Model

        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        entry = (flavor.get("artifacts") or {}).get(ARTIFACT_KEY)
        if entry and (directory / entry["path"]).is_file():
            return directory / entry["path"]
    candidates = sorted(p for p in directory.rglob(MODEL_FILE) if p.is_file())
    if not candidates:
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        if len(files) == 1:
            return files[0]
        raise ValueError(f"no tsessm model file ({MODEL_FILE}) in {directory}")
    return candidates[0]


def load_forecaster(uri_or_path: str | os.PathLike, allow_pickle: bool = False) -> Any:
    """A fitted forecaster from a file path, a local MLflow model folder, or an MLflow URI.
    (allow_pickle: see `BaseForecaster.load`.)

    URIs: `models:/NAME@alias`, `models:/NAME/3`, `models:/<model_id>`, `runs:/<run_id>/model`
    (a pyfunc logged by `log_model`) or `runs:/<run_id>/file.tsm` (a model file logged as a
    plain artifact). Resolved against `$MLFLOW_TRACKING_URI` (default sqlite:///mlruns.db).
    """
    text = str(uri_or_path)
    if not is_model_uri(text) or text.startswith("file:"):
        path = Path(text[len("file://"):] if text.startswith("file://") else text)
        if path.is_dir():
            return BaseForecaster.load(_model_file_in(path), allow_pickle=allow_pickle)
        if not path.exists():
            raise FileNotFoundError(f"no such model file: {path}")
        return BaseForecaster.load(path, allow_pickle=allow_pickle)
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="tsessm-model-") as tmp:
        try:
            local = Path(download_artifacts(artifact_uri=text, dst_path=tmp, tracking_uri=tracking_uri(),
                                            registry_uri=_registry_uri()))
        except MlflowException as exc:
            raise ValueError(mask(f"cannot resolve {text} at {tracking_uri()}: {exc.message}")) from None
        return BaseForecaster.load(_model_file_in(local) if local.is_dir() else local, allow_pickle=allow_pickle)
