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

Modules: `space` (the search spaces), `study` (the shared study and its workers), `trial` (one
trial's fit, pruning and MLflow run), `tuner` (`tune`, `TuneResult`; refit and log the best).
"""
from tsessm.tune_options import DEFAULT_STORAGE, PRUNERS
from tsessm.tuning.space import search_space
from tsessm.tuning.study import GRACE_S, HEARTBEAT_S, make_pruner  # set the two in tsessm.tuning.study
from tsessm.tuning.tuner import TuneResult, tune

__all__ = ["tune", "TuneResult", "search_space", "make_pruner", "DEFAULT_STORAGE", "PRUNERS", "HEARTBEAT_S",
           "GRACE_S"]
