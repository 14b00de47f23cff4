"""The MLflow pyfunc: a saved tsessm model file served by `mlflow models serve`, and `log_model`.

A logged model installs: its artifacts hold a wheel of the tsessm that fitted it, and its
requirements.txt points at that wheel (see `tsessm.registry.wheel`).
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from tsessm.columns import TIME_COLUMNS
from tsessm.forecasters.base import BaseForecaster
from tsessm.forecasters.panel import PanelForecaster
from tsessm.redact import mask
from tsessm.registry.frames import as_frame, default_input_example, forecast_frame
from tsessm.registry.loading import ARTIFACT_KEY, MODEL_FILE
from tsessm.registry.wheel import requirement_names, tsessm_wheel

WHEEL_KEY = "tsessm_wheel"  # the pyfunc's artifact: the wheel of the tsessm that logged the model
_logger = logging.getLogger(__name__)


class TsessmPyfuncModel(mlflow.pyfunc.PythonModel):
    """A saved tsessm model file served as an MLflow pyfunc (semantics in `tsessm.registry`)."""

    def load_context(self, context: Any) -> None:
        self.model = BaseForecaster.load(context.artifacts[ARTIFACT_KEY])

    # pd.DataFrame is a hint MLflow takes as "no schema from hints": the signature rules.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """The forecast frame; bad input raises an `MlflowException` (HTTP 400) whose message names
        the problem, with no traceback: `mlflow models serve` sends a traceback only for other errors,
        so those are logged here and answered with a short message (HTTP 500)."""
        try:
            fh = (params or {}).get("fh")
            return forecast_frame(self.model, model_input, fh=fh)
        except (ValueError, TypeError, KeyError, NotFittedError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise MlflowException.invalid_parameter_value(mask(message)) from None
        except MlflowException:
            raise
        except Exception as exc:
            _logger.exception("tsessm pyfunc: unexpected error in predict")
            raise MlflowException(f"the tsessm model failed on this input ({type(exc).__name__}); "
                                  "the server log has the details", error_code=INTERNAL_ERROR) from None


# Logged as "models from code" (this file, not a cloudpickle of the class): loading imports tsessm.
# Models logged before the registry became a package name `tsessm.registry` too: keep that import.
_ENTRY_CODE = """\
# tsessm pyfunc entry point (MLflow "models from code"); the logic is tsessm.registry.
import mlflow
from tsessm.registry import TsessmPyfuncModel

mlflow.models.set_model(TsessmPyfuncModel())
"""


def log_model(model: Any, name: str = "model", registered_model_name: str | None = None,
              input_example: Any = None, *, extra_pip_requirements: Sequence[str] | None = None,
              await_registration_for: int = 300) -> Any:
    """Log a fitted tsessm model as a pyfunc in the active run (and register it if asked).

    input_example: new observations as the server would get them (default: a typed frame with
    no rows, i.e. "forecast from the logged state"). The signature is inferred from it and from
    its forecast. Returns MLflow's `ModelInfo`: `.model_uri` (loadable with `load_forecaster` and
    `mlflow.pyfunc.load_model`), `.run_id`, `.registered_model_version` (None unless registered).
    """
    check_is_fitted(model, "model_" if isinstance(model, PanelForecaster) else "n_seen_")
    example = default_input_example(model) if input_example is None else as_frame(input_example)
    output = forecast_frame(model, example)
    signature = _signature(example, output)
    with tempfile.TemporaryDirectory(prefix="tsessm-log-") as tmp, warnings.catch_warnings():
        # MLflow's own pandas-3 deprecation noise while it writes the input example
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        path, code = Path(tmp) / MODEL_FILE, Path(tmp) / "tsessm_pyfunc.py"
        model.save(path)
        code.write_text(_ENTRY_CODE, encoding="utf-8")
        wheel = tsessm_wheel()
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),  # "models from code": no cloudpickle of the class
            artifacts={ARTIFACT_KEY: str(path), WHEEL_KEY: str(wheel)},
            signature=signature,
            input_example=example,
            # MLflow copies each artifact to artifacts/<its file name>; its virtualenv and uv env
            # managers run `pip install -r requirements.txt` inside the model folder, so this
            # relative path installs the wheel there (with --env-manager local pip never runs).
            pip_requirements=[*_pip_requirements(), f"artifacts/{wheel.name}", *(extra_pip_requirements or [])],
            registered_model_name=registered_model_name,
            await_registration_for=await_registration_for,
            metadata={"tsessm_class": type(model).__name__},
        )
    if info.registered_model_version is not None:  # an int from a sqlite store, a str over REST
        info.registered_model_version = int(info.registered_model_version)
    return info


def _pip_requirements() -> list[str]:
    """Exact pins of tsessm's dependencies (and MLflow's cloudpickle) as installed when logging, so the
    serving environment reproduces the one that fitted the model; the wheel itself is unpinned."""
    names = dict.fromkeys(["mlflow", "torch", "numpy", "pandas", "scikit-learn", "statsmodels", "polars",
                           "cloudpickle", *requirement_names()])
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return pins


def _signature(example: pd.DataFrame, output: pd.DataFrame) -> ModelSignature:
    """Inferred from the example and its output; every input column optional (no rows is valid),
    the other accepted time-column names and an `fh` column added, `fh` as a params entry.

    Time columns are declared `Any`: MLflow's `datetime` refuses ISO strings in process (and
    tz-aware stamps), `string` refuses datetimes; `forecast_frame` parses either, and names the
    column when it does not parse. So a frame of ISO strings gives the same forecast in process
    and over HTTP."""
    with warnings.catch_warnings():  # "integer column" hint: `step` is never missing
        warnings.simplefilter("ignore", UserWarning)
        inferred = infer_signature(example, output)
    specs = [ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]
    names = {c.name for c in specs}
    if any(c.name in TIME_COLUMNS for c in specs):
        specs = [ColSpec(AnyType(), c.name, required=False) if c.name in TIME_COLUMNS else c for c in specs]
        specs += [ColSpec(AnyType(), n, required=False) for n in TIME_COLUMNS if n not in names]
    if "fh" not in names:
        specs.append(ColSpec("long", "fh", required=False))
    # MLflow fills in a param's default on every call, so the default must mean "not given": [].
    params = ParamSchema([ParamSpec("fh", "long", default=[], shape=(-1,))])
    return ModelSignature(inputs=Schema(specs), outputs=inferred.outputs, params=params)
