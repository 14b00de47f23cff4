"""The study and its workers: one Optuna study in an RDB storage, shared by every `tune` call that names it.

Optuna coordinates the workers. `MaxTrialsCallback` ends a worker's `optimize` once the study holds
`n_trials` trials finished or running, counting every worker's; the storage's heartbeat
(`heartbeat_interval`, `grace_period`), which `optimize` records while a trial runs, lets the next
trial's start fail a trial whose worker died, so its slot reopens. Two things are ours: a check as
each trial starts, so that two workers racing for the last slot cannot both take it (the loser ends
FAIL with user attribute `surplus`), and a wait for the trials other workers still run, so that every
worker returns with the whole study (and takes over a slot whose worker died meanwhile).
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import DBAPIError

from tsessm.redact import mask
from tsessm.tune_options import PRUNERS

log = logging.getLogger(__name__)

HEARTBEAT_S = 20  # a running trial records a heartbeat this often ...
GRACE_S = 120  # ... and counts as crashed (FAIL, its slot reopens) when none came for this long
POLL_S = 2.0  # how often a worker waiting for other workers' last trials looks again
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS = "another worker took the study's last slot first"


def open_study(storage: str, study_name: str, model: str, pruner: Any, seed: int | None) -> optuna.Study:
    """Create or load the study in an RDB storage with heartbeats on; it must tune `model`."""
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
        raise ValueError(f"study {study_name!r} in {mask(storage)} tunes {tuned!r}, not {model!r}")
    return study


def make_pruner(pruner: str | Any, epochs: int) -> optuna.pruners.BasePruner:
    """An Optuna pruner from its name ("median", "hyperband", "none"), or the pruner given."""
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":  # from the 2nd epoch on, once 5 trials have finished
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(int(epochs), 1), reduction_factor=3)
    if pruner in ("none", None):
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)} or an optuna pruner, got {pruner!r}")


def state_counts(study: optuna.Study) -> dict[str, int]:
    """How many of the study's trials are in each state, by state name."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


class _Surplus(Exception):
    """The trial lost the race for the study's last slot (it ends FAIL, and the worker goes on)."""


def optimize(study: optuna.Study, objective: Callable[[Any], float], n_trials: int,
                      timeout: float | None, callbacks: Sequence[Callable]) -> None:
    """Run trials until the study holds `n_trials` finished (complete or pruned) ones, counting
    every worker's, or `timeout` seconds have passed (no new trial starts after it).

    callbacks: `f(study, frozen_trial)` after each finished trial this worker runs.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    taken_states = (*FINISHED, TrialState.RUNNING)

    def claimed(trial: optuna.Trial) -> float:
        taken = study.get_trials(deepcopy=False, states=taken_states)
        if sum(t.number < trial.number for t in taken) >= n_trials:
            trial.set_user_attr("surplus", SURPLUS)
            raise _Surplus(SURPLUS)
        return objective(trial)

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state in FINISHED:
            for callback in callbacks:
                callback(study, trial)

    stop_when_full = optuna.study.MaxTrialsCallback(n_trials, states=taken_states)
    waiting = False
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        trials = study.get_trials(deepcopy=False, states=taken_states)
        finished = sum(t.state in FINISHED for t in trials)
        if finished >= n_trials:
            return
        if len(trials) < n_trials:
            waiting = False
            study.optimize(claimed, timeout=left, catch=(_Surplus,), callbacks=[report, stop_when_full])
            continue
        if not waiting:  # the last slots are running elsewhere: wait for them
            log.info("study is full: waiting for the trials other workers are running")
            waiting = True
        time.sleep(POLL_S if left is None else min(POLL_S, left))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # what optimize does as a trial starts: a dead worker's slot reopens
