"""Hyperparameter search for the neural forecasters with Optuna, logged to MLflow.

`tune` runs trials of one study held in an Optuna storage: the default `sqlite:///optuna.db` is a
local file; any RDB URL (e.g. `postgresql://...`) lets several processes or machines share the
study -- start `tune` with the same storage and study name (and its own seed) in each, and
`n_trials` is the total they finish together; each returns once the study holds them all. A study
resumes where it stopped: rerun the same command after a crash.

Each trial fits the model on the train split, reports the validation loss after every epoch to
the pruner (median or Hyperband) and scores the best validation loss of its fit. Afterwards the
best parameters are refitted on train + validation and backtested on the test split (windowed
protocol). With tracking on, a parent MLflow run per `tune` call holds one nested run per trial.

ARIMA is not tuned here: it keeps its own AIC search (`order="auto"`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tsessm import jobs
from tsessm.redact import mask
from tsessm.tracking import NullTracker, start_run

log = logging.getLogger(__name__)

from tsessm.tune_options import DEFAULT_STORAGE, PRUNERS  # noqa: E402  (shared with the command line)
HEARTBEAT_S = 20  # a running trial writes a heartbeat this often ...
GRACE_S = 120  # ... and counts as crashed (FAIL, its slot reopens) when none came for this long
POLL_S = 2.0  # how often a worker waiting for other workers' last trials looks again

# Default search spaces. Every d_model / d_state choice is a multiple of every n_heads choice,
# so any combination builds (n_heads choices are narrowed further when d_model/d_state are pinned).
_GRIDS: dict[str, dict[str, list]] = {
    "essm": {
        "d_model": [32, 64, 128], "n_layers": [1, 2, 3, 4], "d_state": [16, 32, 64], "n_heads": [1, 2, 4, 8],
        "discretization": ["zoh", "bilinear"], "init": ["s4d-lin", "s4d-inv", "legs"],
        "lookback": [48, 96, 192, 336],
    },
    "lstm": {"d_model": [32, 64, 128], "n_layers": [1, 2, 3], "lookback": [48, 96, 192, 336]},
}
_LR = (1e-4, 1e-2)  # log-uniform
_DROPOUT = (0.0, 0.3)


def search_space(model_name: str, trial: Any, *, fixed: dict[str, Any] | None = None,
                 space: dict[str, Sequence] | None = None) -> dict[str, Any]:
    """Sample the tuned parameters of `model_name` ("essm" or "lstm") from an Optuna trial.

    fixed: parameters pinned to a value (not suggested, not in the study's params).
    space: categorical choices replacing a parameter's default range, e.g. {"lookback": [48, 96]}.
    Works with `optuna.trial.Trial` and `optuna.trial.FixedTrial`. Returns the sampled values.
    """
    _check_model(model_name)
    fixed, space = dict(fixed or {}), {k: list(v) for k, v in (space or {}).items()}
    unknown = sorted(set(space) - set(_GRIDS[model_name]) - {"lr", "dropout"})
    grids = {**_GRIDS[model_name], **{k: v for k, v in space.items() if k in _GRIDS[model_name]}}
    if unknown:
        raise ValueError(f"space names parameter(s) {', '.join(unknown)} that {model_name} does not tune")
    if "n_heads" in grids:  # heads that divide every d_model and d_state the study can pick
        widths = [fixed["d_model"]] if "d_model" in fixed else grids["d_model"]
        states = [fixed["d_state"]] if "d_state" in fixed else grids["d_state"]
        heads = [h for h in grids["n_heads"] if all(w % h == 0 for w in widths + states)]
        if not heads and "n_heads" not in fixed:
            raise ValueError(f"no n_heads choice in {grids['n_heads']} divides d_model {widths} "
                             f"and d_state {states}")
        grids["n_heads"] = heads
    params: dict[str, Any] = {}
    for name, choices in grids.items():
        if name in fixed:
            params[name] = fixed[name]
        elif name == "n_layers" and name not in space:
            params[name] = trial.suggest_int(name, min(choices), max(choices))
        else:
            params[name] = trial.suggest_categorical(name, choices)
    for name, (low, high), log in (("lr", _LR, True), ("dropout", _DROPOUT, False)):
        if name in fixed:
            params[name] = fixed[name]
        elif name in space:
            params[name] = trial.suggest_categorical(name, space[name])
        else:
            params[name] = trial.suggest_float(name, low, high, log=log)
    return params


def _check_model(model_name: str) -> None:
    if model_name == "arima":
        raise ValueError("ARIMA is not tuned by `tune`: it keeps its own AIC search (order='auto')")
    if model_name not in _GRIDS:
        raise ValueError(f"no search space for model {model_name!r}; tune one of {', '.join(_GRIDS)}")


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
        (needs `track`). callbacks: `f(study, frozen_trial)` after each trial this call runs.
    """
    _check_model(model)
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
    study, rdb = _open_study(storage, study_name, model, _make_pruner(pruner, epochs), seed)
    notes: list[str] = []

    with start_run(track, experiment, run_name=f"tune-{study_name}") as parent:
        parent.set_tags({"optuna.study_name": study_name, "optuna.storage": _safe_url(storage)})
        pruner_name = pruner if isinstance(pruner, str) else type(pruner).__name__
        parent.log_params({"model": model, "study_name": study_name, "storage": _safe_url(storage),
                           "n_trials": n_trials, "pruner": pruner_name, "space": space or {}, **base, **fixed,
                           **{k: v for k, v in probe.info.items() if k != "split"}})

        def objective(trial: Any) -> float:
            params = {**base, **fixed, **search_space(model, trial, fixed=fixed, space=space)}
            trial.set_user_attr("model_params", params)
            return _run_trial(trial, model, params, source_for(params["lookback"]), track, experiment, study_name)

        _optimize(study, rdb, objective, n_trials, timeout, callbacks)

        counts = _state_counts(study)
        parent.log_metrics({"n_complete": counts.get("COMPLETE", 0), "n_pruned": counts.get("PRUNED", 0)})
        result = TuneResult(study_name=study_name, storage=_safe_url(storage), model=model, best_params=None,
                            model_params=None, best_value=None, n_complete=counts.get("COMPLETE", 0),
                            n_pruned=counts.get("PRUNED", 0), run_id=parent.run_id, notes=notes)
        if result.n_complete == 0:
            notes.append("no trial completed (all pruned or none run): nothing to retrain")
            return result
        best = study.best_trial
        result.best_params, result.best_value = dict(best.params), float(best.value)
        result.model_params = dict(best.user_attrs["model_params"])
        parent.log_params({f"best.{k}": v for k, v in result.best_params.items()})
        parent.log_metrics({"best_val_loss": result.best_value})
        if retrain_best:
            epochs_best = int(best.user_attrs.get("best_epoch", result.model_params["epochs"]))
            refit_params = {**result.model_params, "epochs": epochs_best, "validation_fraction": 0.0}
            source = source_for(refit_params["lookback"])
            best_model = jobs.make_model(model, **refit_params)
            best_model.fit(source.frame.iloc[: source.val[1]])  # train + validation rows
            backtest, _ = jobs.evaluate(best_model, source, "windowed", refit_params["lookback"], parent,
                                        prefix="test_")
            result.best_model = best_model
            result.test_metrics = {k: float(backtest.scores[k]) for k in ("mse", "mae")}
            notes.append(f"best model refitted on train + validation rows 0:{source.val[1]} for {epochs_best} "
                         f"epoch(s) (the best trial's best epoch), backtested on test rows "
                         f"{source.test_start}:{source.test_stop}")
            if track:
                note, result.model_uri = _log_best_model(best_model, parent, register_as)
                notes.append(note)
    return result


# ----- the study ---------------------------------------------------------------------------
def _open_study(storage: str, study_name: str, model: str, pruner: Any, seed: int | None) -> tuple[Any, Any]:
    """Create or load the study; returns (study, its RDBStorage, which records heartbeats)."""
    import optuna
    from sqlalchemy.exc import DBAPIError

    engine_kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs,
                                                 heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            study = optuna.create_study(storage=rdb, study_name=study_name, direction="minimize",
                                        load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
                                        pruner=pruner)
            break
        except DBAPIError:  # workers starting together on a new database race to create its tables
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    tuned = study.user_attrs.get("model")
    if tuned is None:
        study.set_user_attr("model", model)
    elif tuned != model:
        raise ValueError(f"study {study_name!r} in {_safe_url(storage)} tunes {tuned!r}, not {model!r}")
    return study, rdb


def _make_pruner(pruner: str | Any, epochs: int) -> Any:
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":  # from the 2nd epoch on, once 5 trials have finished
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(int(epochs), 1), reduction_factor=3)
    if pruner in ("none", None):
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)} or an optuna pruner, got {pruner!r}")


def _state_counts(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _optimize(study: Any, rdb: Any, objective: Callable[[Any], float], n_trials: int,
              timeout: float | None, callbacks: Sequence[Callable]) -> None:
    """Ask/tell until the study holds `n_trials` finished (complete or pruned) trials, counting
    every worker's, or `timeout` seconds have passed.

    A trial numbered n runs only if fewer than `n_trials` lower-numbered trials are finished or
    running, so two workers racing for the last slot cannot both take it (the loser's trial ends
    FAIL with user attribute `surplus`). While the remaining slots are held by other workers'
    running trials, this worker waits: if one of them fails, it takes the slot over. A worker that
    dies leaves its trial RUNNING; once that trial's heartbeat is GRACE_S old it is failed too.
    """
    import optuna
    from optuna.trial import TrialState

    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    deadline = None if timeout is None else time.monotonic() + timeout
    study_id = rdb.get_study_id_from_name(study.study_name)
    waiting = False
    while deadline is None or time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fail_stale_trials is experimental; ask() warns about heartbeats
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False, states=(*finished_states, TrialState.RUNNING))
            if sum(t.state in finished_states for t in trials) >= n_trials:
                return
            if len(trials) >= n_trials:  # the last slots are running elsewhere: wait for them
                if not waiting:
                    log.info("study is full: waiting for the trials other workers are running")
                waiting = True
                time.sleep(POLL_S)
                continue
            waiting = False
            trial = study.ask()
        trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        with _heartbeat(rdb, trial_id):
            taken = study.get_trials(deepcopy=False, states=(*finished_states, TrialState.RUNNING))
            if sum(t.number < trial.number for t in taken) >= n_trials:
                trial.set_user_attr("surplus", "another worker took the study's last slot first")
                study.tell(trial, state=TrialState.FAIL)
                continue
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                frozen = study.tell(trial, state=TrialState.PRUNED)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            else:
                frozen = study.tell(trial, value)
        for callback in callbacks:
            callback(study, frozen)


@contextlib.contextmanager
def _heartbeat(rdb: Any, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every HEARTBEAT_S seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is harmless; the next one retries
                rdb.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ----- one trial ---------------------------------------------------------------------------
def _run_trial(trial: Any, model_name: str, params: dict[str, Any], source: jobs.DataSource,
               track: bool, experiment: str, study_name: str) -> float:
    """Fit on the train split, report each epoch's validation loss; the best one is the score."""
    import optuna

    pruned: optuna.TrialPruned | None = None
    with start_run(track, experiment, run_name=f"{study_name}-trial-{trial.number}", nested=True) as run:
        run.set_tags({"optuna.study_name": study_name, "optuna.trial_number": trial.number})
        run.log_params({"trial_number": trial.number, "model": model_name, **params, **source.info})

        def on_epoch(entry: dict) -> None:
            epoch = int(entry["epoch"])
            run.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=epoch)
            if "val_loss" in entry:
                trial.report(entry["val_loss"], step=epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} (val_loss {entry['val_loss']:.4g})")

        forecaster = jobs.make_model(model_name, **params)
        forecaster._epoch_callbacks = [on_epoch]
        start = time.perf_counter()
        try:
            forecaster.fit(source.train, y_val=source.validation)
        except optuna.TrialPruned as exc:
            pruned = exc
        except FloatingPointError as exc:  # a diverging configuration is a bad one, not a crash
            pruned = optuna.TrialPruned(str(exc))
        run.log_metrics({"fit_seconds": time.perf_counter() - start})
        if pruned is None:
            losses = [e["val_loss"] for e in forecaster.history_ if "val_loss" in e]
            if not losses:
                raise ValueError(f"the validation split of {source.name} has no row to score with horizon "
                                 f"{params['horizon']}; use a longer series or a shorter horizon")
            best = int(np.argmin(losses))
            if not math.isfinite(losses[best]):
                pruned = optuna.TrialPruned("validation loss is not finite")
            else:
                trial.set_user_attr("best_epoch", best + 1)
                run.log_metrics({"best_val_loss": losses[best], "best_epoch": best + 1})
        run.set_tags({"optuna.state": "PRUNED" if pruned else "COMPLETE"})
    if pruned is not None:
        raise pruned
    return float(losses[best])


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


def _safe_url(url: str) -> str:
    """The storage URL with any password hidden (it goes to logs and MLflow params)."""
    return mask(url)


# ----- command line ------------------------------------------------------------------------
