"""What a retrain writes to the tracker and the registry's version tags, and what it reads back:
the last completed retrain of a model (its data fingerprint and end) from the run tags."""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from tsessm.backtest import BacktestResult
from tsessm.plotting import plot_backtest
from tsessm.retrain.config import METRICS, RetrainConfig
from tsessm.retrain.data import Dataset
from tsessm.retrain.gate import improvement
from tsessm.retrain.outcome import Outcome

log = logging.getLogger("tsessm.retrain")


def log_start(tracker: Any, config: RetrainConfig, dry_run: bool) -> None:
    """The run's model tag and the config's settings as params."""
    tracker.set_tags({"retrain.model": config.registry_name, "retrain.config": str(config.path or ""),
                      "retrain.dry_run": str(dry_run).lower()})
    tracker.log_params(config.flat())


def log_data(tracker: Any, data: Dataset) -> None:
    """The data's fingerprint, size and span (the next run's skip check reads the tags back)."""
    tracker.set_tags({"retrain.data_sha256": data.sha256, "retrain.data_rows": data.rows,
                      "retrain.data_end": data.end.isoformat(),
                      "retrain.data_files": ",".join(f.name for f in data.files)[:4000]})
    tracker.log_params({"data.rows": data.rows, "data.start": data.frame.index[0].isoformat(),
                        "data.end": data.end.isoformat(), "data.sha256": data.sha256})


def last_completed(run_id: str | None, name: str) -> dict[str, str] | None:
    """The newest completed retrain of `name` (promoted or not) in this run's experiment."""
    from mlflow import MlflowClient  # mlflow is heavy: only a run imports it

    client = MlflowClient()  # the tracking server start_run chose
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


def report_holdout(tracker: Any, config: RetrainConfig, results: dict[str, BacktestResult],
                   lookbacks: dict[str, int], champion_version: int | None, test_start: int, data: Dataset) -> None:
    """metrics.csv, by_step.csv and forecast.png in the run; the holdout metrics as run metrics."""
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


def tag_version(name: str, version: int, config: RetrainConfig, data: Dataset, run_id: str | None,
                score: float, champion_version: int | None, reason: str) -> None:
    """The promoted version's data, score, run and predecessor, as registry version tags."""
    from mlflow import MlflowClient  # mlflow is heavy: only a run imports it

    client = MlflowClient()  # the registry start_run chose (MLFLOW_REGISTRY_URI, else the tracking server)
    tags = {"data_sha256": data.sha256, "data_rows": data.rows, "data_end": data.end.isoformat(),
            f"holdout_{config.metric}": f"{score:.6g}", "retrain_run_id": run_id or "",
            "replaced_version": champion_version if champion_version is not None else "none"}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    client.update_model_version(name, str(version), description=f"retrain: {reason}"[:5000])


def log_outcome(tracker: Any, outcome: Outcome) -> None:
    """The decision as tags, params, an improvement metric and decision.json."""
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
        tracker.log_metrics({"improvement": improvement(outcome.challenger_score, outcome.champion_score)})
    tracker.log_dict({k: v for k, v in asdict(outcome).items()
                      if not (isinstance(v, float) and not math.isfinite(v))}, "decision.json")
