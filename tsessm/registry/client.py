"""The MLflow Model Registry: the client, registered versions and their aliases."""
from __future__ import annotations

import os
from typing import Any

from tsessm.mlflow_uri import bound_http_retries, tracking_uri

DEFAULT_ALIAS = "champion"


def registry_uri() -> str:
    """`$MLFLOW_REGISTRY_URI`, else the tracking store."""
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri()


def client() -> Any:
    """An MlflowClient for the tracking and registry stores, with bounded HTTP retries."""
    from mlflow import MlflowClient  # mlflow is heavy: loaded when the registry is used

    bound_http_retries()
    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=registry_uri())


def register_model(model_uri: str, name: str) -> int:
    """Register an already logged model (`ModelInfo.model_uri`, `runs:/<id>/model`) under `name`
    in the active MLflow registry (the one `tracking.start_run` set); returns the version."""
    import mlflow  # heavy: loaded when the registry is used

    version = mlflow.register_model(model_uri, name)
    return int(version.version)


def _not_found(exc: Exception) -> bool:
    """An unknown registered model (RESOURCE_DOES_NOT_EXIST) or alias (INVALID_PARAMETER_VALUE)."""
    from mlflow.exceptions import MlflowException  # heavy: only reached after an MLflow call failed

    if not isinstance(exc, MlflowException):
        return False
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in exc.message.lower())


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point `alias` of registered model `name` at `version` (moving it if another version had it)."""
    client().set_registered_model_alias(name, alias, str(int(version)))


def get_version(name: str, alias: str = DEFAULT_ALIAS) -> int | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    try:
        return int(client().get_model_version_by_alias(name, alias).version)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def promote(name: str, version: int | str, alias: str = DEFAULT_ALIAS) -> int | None:
    """Give `alias` (default "champion") to `version`; returns the version that held it before."""
    previous = get_version(name, alias)
    set_alias(name, alias, version)
    return previous
