"""One trial: fit on the train split, report each epoch's validation loss to the pruner, score the best."""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import optuna

from tsessm import jobs
from tsessm.tracking import start_run


def run_trial(trial: optuna.Trial, model_name: str, params: dict[str, Any], source: jobs.DataSource,
              track: bool, experiment: str, study_name: str) -> float:
    """The best validation loss of a fit with `params`; raises optuna.TrialPruned when pruned or
    diverging. With `track`, a nested MLflow run holds the trial's params and per-epoch losses."""
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

        forecaster = jobs.make_model(model_name, **params).set_params(callbacks=[on_epoch])
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
