"""Where MLflow is and how to talk to it: a small bottom module that `tracking` and `registry` share."""
from __future__ import annotations

import os

DEFAULT_URI = "sqlite:///mlruns.db"


# MLflow retries an unreachable server 7 times with exponential backoff (minutes) by default; a
# job should fail in seconds and say so. Values the user set in the environment are kept.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def bound_http_retries() -> None:
    """Bounded retries and timeouts for MLflow's HTTP calls (unless set in the environment)."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


def is_model_uri(text: str | os.PathLike) -> bool:
    """True for an MLflow URI (`models:/NAME@alias`, `runs:/...`, `s3://...`), False for a path."""
    text = str(text)
    return "://" in text or text.startswith(("models:/", "runs:/", "mlflow-artifacts:/"))
