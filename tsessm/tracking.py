"""MLflow glue: one switch turns tracking on or off for the CLI, the jobs and the pipelines.

Default store: a local sqlite file (`sqlite:///mlruns.db`) with artifacts under `mlartifacts/`,
nothing to start. `MLFLOW_TRACKING_URI` pointing at an `mlflow server` works the same.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

DEFAULT_URI = "sqlite:///mlruns.db"
DEFAULT_EXPERIMENT = "tsessm"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    names = ("tsessm", "torch", "numpy", "pandas", "polars", "statsmodels", "scikit-learn", "optuna", "mlflow")
    versions = {}
    for name in names:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class NullTracker:
    """Tracking switched off: every call is a no-op."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_history(self, history: list[dict]) -> None: ...
    def log_artifact(self, path: str | os.PathLike) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...


class MLflowTracker(NullTracker):
    """Logs to the active MLflow run."""

    def __init__(self, mlflow_module: Any, run: Any) -> None:
        self._mlflow = mlflow_module
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow params are strings of bounded length; long values are cut, not dropped.
        self._mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_history(self, history: list[dict]) -> None:
        for entry in history:
            self.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=int(entry["epoch"]))

    def log_artifact(self, path: str | os.PathLike) -> None:
        self._mlflow.log_artifact(str(path))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})


@contextlib.contextmanager
def start_run(enabled: bool = True, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
              nested: bool = False) -> Iterator[NullTracker]:
    """A tracker for one run: MLflow when `enabled`, a no-op otherwise."""
    if not enabled:
        yield NullTracker()
        return
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if tracking_uri().startswith("sqlite:"):
            location = Path("mlartifacts").resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, nested=nested) as run:
        tracker = MLflowTracker(mlflow, run)
        tracker.set_tags({"git_commit": git_commit() or "unknown", **package_versions()})
        yield tracker
