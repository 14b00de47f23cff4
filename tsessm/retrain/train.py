"""The models of a retrain: train the challenger (fixed parameters or a short Optuna search) on
every row before the holdout, and score a model on the holdout with the windowed protocol."""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tsessm.backtest import BacktestResult, backtest
from tsessm.jobs import make_model
from tsessm.retrain.config import RetrainConfig
from tsessm.retrain.data import Dataset
from tsessm.retrain.outcome import RetrainError, one_line, stage

log = logging.getLogger("tsessm.retrain")


def train_challenger(config: RetrainConfig, data: Dataset, test_start: int, tracker: Any) -> tuple[Any, float, bool]:
    """(the fitted challenger, its fit seconds, whether [tuning] chose its parameters)."""
    train = data.frame.iloc[:test_start]
    params = config.model_params()
    tuned = False
    if config.tuning:
        with stage("tune"):
            params = tune_params(config, train, params, data.sha256, tracker)
        tuned = True
    with stage("train"):
        model = make_model(config.model, **params)
    log.info("%s: training %s on rows 0:%d", config.registry_name, type(model).__name__, test_start)
    start = time.perf_counter()
    try:
        model.fit(train)
    except (ValueError, TypeError) as exc:
        raise RetrainError("train", one_line(exc, 400)) from None
    seconds = time.perf_counter() - start
    tracker.log_history(getattr(model, "history_", []))
    return model, seconds, tuned


def tune_params(config: RetrainConfig, train: pd.DataFrame, params: dict[str, Any], sha256: str,
                tracker: Any) -> dict[str, Any]:
    """A short Optuna search on the training rows (tsessm.tuning.tune); returns the best model's params."""
    from tsessm.tuning import tune  # imports optuna: loaded only by a config with [tuning]

    options = config.tuning or {}
    pinned = {k: v for k, v in params.items() if k not in ("horizon", "target", "epochs", "random_state", "verbose")}
    with tempfile.TemporaryDirectory(prefix="tsessm-retrain-tune-") as tmp:
        path = Path(tmp) / "train.csv"
        time_col = train.index.name or "time"
        train.rename_axis(time_col).reset_index().to_csv(path, index=False)
        result = tune(
            str(path), model=config.model, n_trials=int(options["n_trials"]), horizon=int(params.get("horizon", 24)),
            target=params["target"], columns=list(config.columns), time_col=time_col,
            storage=options.get("storage") or f"sqlite:///{Path(tmp) / 'optuna.db'}",
            study_name=f"retrain-{config.registry_name}-{sha256[:12]}",
            epochs=int(options.get("epochs", params.get("epochs", 10))), timeout=options.get("timeout"),
            pruner=options.get("pruner", "median"), seed=options.get("seed", params.get("random_state", 0)),
            track=False, fixed_params=pinned, space=options.get("space"), retrain_best=False,
        )
    if result.model_params is None:
        raise RetrainError("tune", f"no tuning trial completed ({result.n_complete} complete, "
                           f"{result.n_pruned} pruned)")
    tracker.log_params({f"tuned.{k}": v for k, v in (result.best_params or {}).items()})
    tracker.log_metrics({"tune_best_val_loss": result.best_value, "tune_n_complete": result.n_complete,
                         "tune_n_pruned": result.n_pruned})
    return dict(result.model_params)


def eval_lookback(model: Any, config: RetrainConfig) -> int:
    """Rows a windowed forecast sees: [promotion] lookback, else the model's own."""
    if config.eval_lookback:
        return config.eval_lookback
    if getattr(model, "lookback", None):
        return int(model.lookback)
    if getattr(model, "season_length", None):
        return int(model.season_length)
    return 96


def score_holdout(model: Any, data: Dataset, test_start: int, lookback: int, who: str) -> BacktestResult:
    """`model`'s windowed forecasts of the rows from `test_start` on, each from `lookback` rows."""
    if lookback > test_start:
        raise RetrainError("evaluate", f"the {who} needs {lookback} rows before the holdout; there are {test_start}")
    try:
        return backtest(model, data.frame, test_start=test_start, train_rows=test_start, lookback=lookback,
                        mode="windowed")
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise RetrainError("evaluate", f"{who}: {one_line(exc, 300)}") from None
