"""The train / backtest / demo jobs behind the CLI and the pipelines.

A job reads data (a benchmark name or a CSV/Parquet path), splits it (the Informer borders for
benchmarks, 70/10/20 by rows otherwise), trains on the train rows with the validation rows for
early stopping, backtests on the test rows and logs what it did through `tsessm.tracking`.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tsessm import datasets
from tsessm.backtest import BacktestResult, backtest
from tsessm.data import read_table
from tsessm.files import sha256_file
from tsessm.forecasters.base import BaseForecaster
from tsessm.tracking import NullTracker

# name -> "module:Class"; imported lazily so a missing optional model never breaks the others
MODELS = {
    "essm": "tsessm.forecasters.essm:ESSMForecaster",
    "lstm": "tsessm.forecasters.lstm:LSTMForecaster",
    "arima": "tsessm.forecasters.arima:ARIMAForecaster",
    "naive": "tsessm.forecasters.naive:NaiveForecaster",
    "linear": "tsessm.forecasters.linear:LinearForecaster",
}


def parse_value(text: str) -> Any:
    """A command-line value: int, float, true/false/none, else the text itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def model_class(name: str) -> type[BaseForecaster]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    module, cls = MODELS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise ValueError(f"model {name!r} is not available in this version of tsessm") from None


def make_model(name: str, **params: Any) -> BaseForecaster:
    """A forecaster from its short name; parameters it does not take are an error."""
    cls = model_class(name)
    accepted = cls().get_params()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} has no parameter(s) {', '.join(unknown)}")
    return cls(**params)


@dataclass
class DataSource:
    """A frame and its split: train rows [0, train_stop), val rows, test forecasts from test_start."""

    name: str
    frame: pd.DataFrame
    train_stop: int
    val: tuple[int, int]
    test_start: int
    test_stop: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> pd.DataFrame:
        return self.frame.iloc[: self.train_stop]

    @property
    def validation(self) -> pd.DataFrame:
        return self.frame.iloc[self.val[0] : self.val[1]]

    @property
    def history(self) -> pd.DataFrame:
        """Every row a test forecast may read: the frame up to the end of the test split."""
        return self.frame.iloc[: self.test_stop]


def open_data(data: str, *, lookback: int, columns: list[str] | None = None, data_dir: str | None = None,
              time_col: str | None = None) -> DataSource:
    """A benchmark by name (Informer split) or a CSV/Parquet file (70/10/20 split by rows)."""
    if Path(data).suffix in (".csv", ".gz", ".parquet", ".txt") or Path(data).is_file():
        frame = read_table(data, time_col=time_col)
        borders = datasets.ratio_splits(len(frame), lookback, Path(data).name)
        info = {"dataset_name": Path(data).name, "dataset_sha256": sha256_file(data)}
    else:
        frame = datasets.load(data, data_dir=data_dir)
        spec = datasets.get_spec(data)
        borders = datasets.splits(spec.name, lookback, n_rows=len(frame))
        info = {"dataset_name": spec.name, "dataset_sha256": spec.sha256 or "unchecked"}
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"column(s) {missing} not in {data}; columns are {', '.join(frame.columns)}")
        frame = frame[columns]
    info["split"] = "train {}:{}, val {}:{}, test {}:{}".format(*borders["train"], *borders["val"], *borders["test"])
    return DataSource(
        name=info["dataset_name"],
        frame=frame,
        train_stop=borders["train"][1],
        val=borders["val"],
        test_start=borders["test"][0] + lookback,
        test_stop=borders["test"][1],
        info=info,
    )


def train(model: BaseForecaster, source: DataSource, tracker: NullTracker = NullTracker()) -> float:
    """Fit on the train rows (validation rows for early stopping). Returns the wall time in s."""
    tracker.log_params({"forecaster": type(model).__name__, **model.get_params(), **source.info})
    start = time.perf_counter()
    model.fit(source.train, y_val=source.validation)
    seconds = time.perf_counter() - start
    tracker.log_history(getattr(model, "history_", []))
    tracker.log_metrics({"fit_seconds": seconds})
    return seconds


def validation_backtest(model: BaseForecaster, source: DataSource, lookback: int) -> BacktestResult:
    """The windowed protocol on the validation split (origins from its border on): what
    configurations are chosen on."""
    return backtest(model, source.frame.iloc[: source.val[1]], test_start=source.val[0] + lookback,
                    train_rows=source.train_stop, lookback=lookback)


def evaluate(model: BaseForecaster, source: DataSource, mode: str, lookback: int,
             tracker: NullTracker = NullTracker(), prefix: str = "", coverage: float | None = None
             ) -> tuple[BacktestResult, float]:
    """Backtest on the test rows; logs every `<prefix><mode>_<score>` (mse, mae, mape, smape, mase,
    and with `coverage` the interval scores) and the per-step curves."""
    start = time.perf_counter()
    result = backtest(model, source.history, test_start=source.test_start, train_rows=source.train_stop,
                      lookback=lookback, mode=mode, coverage=coverage)
    seconds = time.perf_counter() - start
    key = f"{prefix}{mode.replace('-', '_')}"
    scores = {f"{key}_{name}": value for name, value in result.scores.items() if name != "n_windows"}
    tracker.log_metrics({**scores, f"{key}_seconds": seconds})
    curves = [c for c in ("mse", "mae", "coverage", "width") if c in result.by_step]
    per_step = result.by_step.groupby("step")[curves].mean()
    for step, row in per_step.iterrows():
        tracker.log_metrics({f"{key}_{c}_by_step": row[c] for c in curves}, step=int(step))
    return result, seconds


def results_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The metrics table printed by the CLI: one row per (model, mode)."""
    table = pd.DataFrame(rows)
    return table.set_index(["model", "mode"]).sort_index()
