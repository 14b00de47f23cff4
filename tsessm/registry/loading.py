"""Loading a fitted forecaster back: from a model file, a local MLflow model folder, or an MLflow URI.

MLflow is imported only for URIs and MLflow model folders, so a plain model file loads fast.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from tsessm.forecasters.base import BaseForecaster
from tsessm.mlflow_uri import is_model_uri, tracking_uri
from tsessm.redact import mask
from tsessm.registry.client import registry_uri

ARTIFACT_KEY = "tsessm_model"  # the pyfunc's artifact: the model file written by `save()`
MODEL_FILE = "model.tsessm"


def load_forecaster(uri_or_path: str | os.PathLike, allow_pickle: bool = False) -> Any:
    """A fitted forecaster from what `--model` names: a file written by `save()`, a local MLflow
    model folder, or an MLflow URI. allow_pickle (`--trust-pickle`): also read the pickled files
    of tsessm 0.2 and older, which run code as they load (see `BaseForecaster.load`).

    URIs: `models:/NAME@alias`, `models:/NAME/3`, `models:/<model_id>`, `runs:/<run_id>/model`
    (a pyfunc logged by `log_model`) or `runs:/<run_id>/file.tsm` (a model file logged as a
    plain artifact). Resolved against `$MLFLOW_TRACKING_URI` (default sqlite:///mlruns.db).
    """
    text = str(uri_or_path)
    if not is_model_uri(text) or text.startswith("file:"):
        path = Path(text[len("file://"):] if text.startswith("file://") else text)
        if path.is_dir():
            return BaseForecaster.load(model_file_in(path), allow_pickle=allow_pickle)
        if not path.exists():
            raise FileNotFoundError(f"no such model file: {path}")
        return BaseForecaster.load(path, allow_pickle=allow_pickle)
    # mlflow is heavy: loaded for URIs only
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="tsessm-model-") as tmp:
        try:
            local = Path(download_artifacts(artifact_uri=text, dst_path=tmp, tracking_uri=tracking_uri(),
                                            registry_uri=registry_uri()))
        except MlflowException as exc:
            raise ValueError(mask(f"cannot resolve {text} at {tracking_uri()}: {exc.message}")) from None
        return BaseForecaster.load(model_file_in(local) if local.is_dir() else local, allow_pickle=allow_pickle)


def model_file_in(directory: Path) -> Path:
    """The tsessm model file inside a downloaded MLflow model (or a plain artifact folder)."""
    mlmodel = directory / "MLmodel"
    if mlmodel.is_file():
        from mlflow.models import Model  # heavy: loaded for MLflow model folders only

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
