"""`tune`: open or join the study, run this worker's trials, then refit, backtest and log the best."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna

from tsessm import jobs
from tsessm.redact import mask
from tsessm.tracking import NullTracker, start_run
from tsessm.tune_options import DEFAULT_STORAGE
from tsessm.tuning.space import check_model, search_space
from tsessm.tuning.study import make_pruner, open_study, optimize, state_counts
from tsessm.tuning.trial import run_trial


@dataclass
class TuneResult:
    """What `tune` found. Trial counts are the study's (all workers), not only this call's."""

    study_name: str
    storage: str  # URL with any password hidden
    model: str
    best_params: dict[str, Any] | None  # the tuned values of the best trial (None: no trial completed)
    model_params: dict[str, Any] | None  # every parameter the best model is built with
    best_value: float | None  # its best validation loss (MSE on scaled values)
    n_complete: int
    n_pruned: int
    test_metrics: dict[str, float] | None = None  # windowed test mse/mae of the retrained best model
    best_model: Any = None  # the retrained best forecaster
    run_id: str | None = None  # the parent MLflow run
    model_uri: str | None = None  # where the retrained model was logged (tracking on)
    notes: list[str] = field(default_factory=list)


def tune(
    data: str,
    *,
    model: str = "essm",
    n_trials: int = 20,
    horizon: int = 24,
    columns: list[str] | None = None,
    target: str | list[str] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    epochs: int = 10,
    timeout: float | None = None,
    pruner: str | Any = "median",
    seed: int | None = 0,
    track: bool = True,
    experiment: str = "tsessm-tune",
    data_dir: str | None = None,
    time_col: str | None = None,
    fixed_params: dict[str, Any] | None = None,
    space: dict[str, Sequence] | None = None,
    retrain_best: bool = True,
    register_as: str | None = None,
    callbacks: Sequence[Callable[[Any, Any], None]] = (),
) -> TuneResult:
    """Tune `model` on `data` (a benchmark name or a CSV/Parquet path) and return the best.

    n_trials: the number of finished trials (complete + pruned) the study should hold, counting
        every worker's; a call on a study that already has them runs none (and only retrains).
    storage, study_name: where the study lives (default `sqlite:///optuna.db`, and a name from the
        model, data and horizon); an existing study is resumed / joined.
    epochs: per trial (and the maximum resource of Hyperband). timeout: seconds after which this
        call starts no new trial. pruner: "median", "hyperband", "none" or an Optuna pruner.
    seed: TPE sampler seed and the models' random_state; give each concurrent worker its own
        seed (or None), or they replay the same first random samples.
    fixed_params: model parameters pinned for every trial (e.g. {"steps_per_epoch": 50}).
    space: categorical choices replacing default ranges (see `search_space`).
    retrain_best: refit the best parameters on train + validation for the best trial's best
        epoch count and backtest it on the test split; register_as: then register it in MLflow
        (needs `track`). callbacks: `f(study, frozen_trial)` after each trial this call finishes.
    """
    check_model(model)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    if register_as and not track:
        raise ValueError("register_as needs tracking (track=True): the model registry is MLflow's")
    fixed = dict(fixed_params or {})
    base = {"horizon": horizon, "target": target, "epochs": epochs, "random_state": seed, "verbose": 0}
    jobs.make_model(model, **{**base, **fixed})  # unknown parameter names fail here, before any study
    sources: dict[int, jobs.DataSource] = {}

    def source_for(lookback: int) -> jobs.DataSource:
        if lookback not in sources:
            sources[lookback] = jobs.open_data(data, lookback=lookback, columns=columns, data_dir=data_dir,
                                               time_col=time_col)
        return sources[lookback]

    probe = source_for(int(fixed.get("lookback", 1)))
    storage = storage or DEFAULT_STORAGE
    study_name = study_name or "-".join([model, Path(probe.name).stem, *(["+".join(columns)] if columns else []),
                                         f"h{horizon}"])
    study = open_study(storage, study_name, model, make_pruner(pruner, epochs), seed)

    with start_run(track, experiment, run_name=f"tune-{study_name}") as parent:
        parent.set_tags({"optuna.study_name": study_name, "optuna.storage": mask(storage)})
        pruner_name = pruner if isinstance(pruner, str) else type(pruner).__name__
        parent.log_params({"model": model, "study_name": study_name, "storage": mask(storage),
                           "n_trials": n_trials, "pruner": pruner_name, "space": space or {}, **base, **fixed,
                           **{k: v for k, v in probe.info.items() if k != "split"}})

        def objective(trial: optuna.Trial) -> float:
            params = {**base, **fixed, **search_space(model, trial, fixed=fixed, space=space)}
            trial.set_user_attr("model_params", params)
            return run_trial(trial, model, params, source_for(params["lookback"]), track, experiment, study_name)

        optimize(study, objective, n_trials, timeout, callbacks)

        counts = state_counts(study)
        parent.log_metrics({"n_complete": counts.get("COMPLETE", 0), "n_pruned": counts.get("PRUNED", 0)})
        result = TuneResult(study_name=study_name, storage=mask(storage), model=model, best_params=None,
                            model_params=None, best_value=None, n_complete=counts.get("COMPLETE", 0),
                            n_pruned=counts.get("PRUNED", 0), run_id=parent.run_id)
        if result.n_complete == 0:
            result.notes.append("no trial completed (all pruned or none run): nothing to retrain")
            return result
        best = study.best_trial
        result.best_params, result.best_value = dict(best.params), float(best.value)
        result.model_params = dict(best.user_attrs["model_params"])
        parent.log_params({f"best.{k}": v for k, v in result.best_params.items()})
        parent.log_metrics({"best_val_loss": result.best_value})
        if retrain_best:
            epochs_best = int(best.user_attrs.get("best_epoch", result.model_params["epochs"]))
            _refit_best(result, model, epochs_best, source_for, parent)
            if track:
                note, result.model_uri = _log_best_model(result.best_model, parent, register_as)
                result.notes.append(note)
    return result


def _refit_best(result: TuneResult, model: str, epochs: int, source_for: Callable[[int], jobs.DataSource],
                parent: NullTracker) -> None:
    """Refit the best parameters on train + validation for `epochs` and backtest on the test split."""
    params = {**result.model_params, "epochs": epochs, "validation_fraction": 0.0}
    source = source_for(params["lookback"])
    best_model = jobs.make_model(model, **params)
    best_model.fit(source.frame.iloc[: source.val[1]])  # train + validation rows
    backtest, _ = jobs.evaluate(best_model, source, "windowed", params["lookback"], parent, prefix="test_")
    result.best_model = best_model
    result.test_metrics = {k: float(backtest.scores[k]) for k in ("mse", "mae")}
    result.notes.append(f"best model refitted on train + validation rows 0:{source.val[1]} for {epochs} "
                        f"epoch(s) (the best trial's best epoch), backtested on test rows "
                        f"{source.test_start}:{source.test_stop}")


def _log_best_model(model: Any, run: NullTracker, register_as: str | None) -> tuple[str, str | None]:
    """Log the retrained model to the parent run; returns (a note, the logged model's URI).

    With `register_as` it is logged as a servable MLflow model and registered under that
    name; otherwise the model file is a run artifact.
    """
    if register_as:
        info = run.log_model(model, registered_model_name=register_as)
        note = f"best model logged as {info.model_uri}, registered as {register_as!r} version {info.registered_model_version}"
        return note, info.model_uri
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "best_model.tsm"
        model.save(path)
        run.log_artifact(path)
    uri = f"runs:/{run.run_id}/best_model.tsm"
    return f"best model saved as artifact {uri}", uri
