"""MLflow glue: one switch turns tracking on or off for the CLI, the jobs and the pipelines.

Default store: a local sqlite file (`sqlite:///mlruns.db`) with artifacts under `mlartifacts/`,
nothing to start. `MLFLOW_TRACKING_URI` pointing at an `mlflow server` works the same.
`tracker.log_model(model, registered_model_name=...)` logs a servable pyfunc and registers it
(`tsessm.registry` has the aliases and `load_forecaster("models:/NAME@champion")`, which this
module re-exports for `--model`). MLflow itself is imported when a run starts.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from tsessm import registry
from tsessm.mlflow_uri import DEFAULT_URI, bound_http_retries, is_model_uri, tracking_uri  # noqa: F401
from tsessm.redact import mask
from tsessm.registry import load_forecaster  # noqa: F401  (what `--model` names: a file or an MLflow URI)

DEFAULT_EXPERIMENT = "tsessm"


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
    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None: ...
    def log_figure(self, figure: Any, artifact_file: str) -> None: ...

    def log_model(self, model: Any, registered_model_name: str | None = None, name: str = "model",
                  input_example: Any = None) -> Any:
        """Log a fitted model as an MLflow pyfunc (see `tsessm.registry.log_model`); None when off."""
        return None


class MLflowTracker(NullTracker):
    """Logs to the active MLflow run."""

    def __init__(self, mlflow_module: Any, run: Any) -> None:
        self._mlflow = mlflow_module
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        # a parameter is public to anyone who reads the run: a URL in one never keeps its password
        params = {k: mask(v) if isinstance(v, str) else v for k, v in params.items()}
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
        self._mlflow.set_tags({k: mask(v) for k, v in tags.items()})

    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None:
        """A JSON (or .yaml) artifact, e.g. a results table or a config."""
        self._mlflow.log_dict(dictionary, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as an image artifact (e.g. "forecast.png")."""
        self._mlflow.log_figure(figure, artifact_file)

    def log_model(self, model: Any, registered_model_name: str | None = None, name: str = "model",
                  input_example: Any = None) -> Any:
        """Log `model` as a pyfunc in this run, registered under `registered_model_name` if given.

        Returns MLflow's ModelInfo (`.model_uri`, `.registered_model_version`).
        """
        return registry.log_model(model, name=name, registered_model_name=registered_model_name,
                         input_example=input_example)


def _sqlite_setup_lock(uri: str) -> contextlib.AbstractContextManager:
    """A lock beside a local sqlite store, held while the store and the experiment are created.

    Two processes that open a fresh `mlruns.db` at once (e.g. the accuracy grid run as two
    processes) otherwise both create the schema and one fails in its migration, or both create
    the experiment and one gets RESOURCE_ALREADY_EXISTS. Other stores need no lock.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        return contextlib.nullcontext()
    db_path = Path(uri[len(prefix):].split("?", 1)[0])
    return FileLock(str(db_path) + ".lock", timeout=300)


@contextlib.contextmanager
def start_run(enabled: bool = True, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
              nested: bool = False) -> Iterator[NullTracker]:
    """A tracker for one run: MLflow when `enabled`, a no-op otherwise."""
    if not enabled:
        yield NullTracker()
        return
    import mlflow  # heavy (about a second): loaded when tracking is on

    bound_http_retries()
    mlflow.set_tracking_uri(tracking_uri())
    # Under `mlflow run`, MLFLOW_RUN_ID names the run (and its experiment) to log into.
    if not os.environ.get("MLFLOW_RUN_ID") or nested:
        with _sqlite_setup_lock(tracking_uri()):
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
