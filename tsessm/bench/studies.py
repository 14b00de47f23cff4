"""Equal-budget Optuna studies for the accuracy grid's neural models.

For each cell (dataset, setting, horizon) every model named gets one study with the same budget:
the same number of trials, the same epochs per trial, the same pruner, the same lookback and the
same sampler seed. A study starts from the model's `[models.NAME]` defaults in the accuracy config
(never a cell's tuned override), searches the model's default space plus the extra choices below,
and scores each trial by the best one-pass validation loss of its fit (the train split only; the
test split is never read). Its trials are written to `<out>/<dataset>_<setting>_<horizon>_<model>.csv`
and every finished study is summarised in `<out>/studies.md`. A study resumes where it stopped.

    python pipelines/tune_accuracy.py --datasets ETTh2 --horizons 720 --n-trials 10 --epochs 8

The best parameters are candidates, not results: run them as grid cells (three seeds, windowed
validation MSE) and keep them in accuracy.toml only where they beat the cell's configuration.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tsessm import datasets
from tsessm.bench.accuracy import cell_columns, check_settings, load_config
from tsessm.bench.options import DEFAULT_CONFIG
from tsessm.checks import pairs
from tsessm.jobs import parse_value
from tsessm.scripts import suite_main
from tsessm.tracking import git_commit

STUDY_MODELS = ("essm", "lstm")
DEFAULT_OUT = Path("pipelines") / "results" / "studies"
# Pinned for every model: the lookback of the linear reference (and of the univariate eSSM cells).
PINNED: dict[str, Any] = {"lookback": 336}
# Searched besides each model's default space (tsessm.tuning.space.GRIDS, lr, dropout): the linear
# skip path for both models; the state-space timescales for the eSSM (issue 21's per-dataset dt).
EXTRA_SPACE: dict[str, dict[str, list]] = {
    "essm": {"linear_skip": [0, 336], "dt_min": [0.001, 0.003, 0.01], "dt_max": [0.03, 0.1, 0.3]},
    "lstm": {"linear_skip": [0, 336]},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", required=True, help="comma-separated, e.g. ETTh2,WTH")
    p.add_argument("--settings", default="S", help="S, M or S,M (default S)")
    p.add_argument("--horizons", help="comma-separated (default: each dataset's protocol horizons)")
    p.add_argument("--models", default=",".join(STUDY_MODELS), help="comma-separated (default essm,lstm)")
    p.add_argument("--n-trials", type=int, default=10, help="finished trials per study (default 10)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial (default 8)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="pin a parameter for every model's trials, e.g. --set steps_per_epoch=50 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed and random_state of every trial (default 0)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the accuracy config whose model defaults start the studies")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="trials CSVs and studies.md (default %(default)s)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/studies.db)")
    p.add_argument("--data-dir", help="folder with the dataset files")


def study_params(model: str, config: dict[str, Any], pins: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], dict[str, list]]:
    """(the pinned parameters, the extra search choices) of `model`'s study: its config defaults
    without what the study sets or searches itself, then PINNED, then `pins` (--set)."""
    from tsessm.tuning.space import GRIDS  # optuna loads only when a study runs

    space = EXTRA_SPACE[model]
    searched = set(GRIDS[model]) | set(space) | {"lr", "dropout", "epochs"}
    fixed = {k: v for k, v in config.get("models", {}).get(model, {}).items() if k not in searched}
    return {**fixed, **PINNED, **(pins or {})}, space


def study_name(dataset: str, setting: str, horizon: int, model: str) -> str:
    return f"accuracy-{dataset}-{setting}-{horizon}-{model}"


def run(args: argparse.Namespace) -> int:
    from tsessm.tuning import tune

    models = tuple(m for m in args.models.split(",") if m)
    for m in models:
        if m not in STUDY_MODELS:
            raise ValueError(f"--models: {m!r} has no study; choose from {', '.join(STUDY_MODELS)}")
    settings = tuple(s for s in args.settings.split(",") if s)
    check_settings(settings)
    if args.n_trials < 1 or args.epochs < 1:
        raise ValueError("--n-trials and --epochs must be positive")
    config = load_config(args.config)
    pins = {name: parse_value(value) for name, value in pairs(args.set, "--set").items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out / 'studies.db'}"
    names = [datasets.get_spec(d).name for d in args.datasets.split(",") if d]
    horizons = [int(h) for h in args.horizons.split(",")] if args.horizons else None
    for dataset in names:
        for setting in settings:
            columns = cell_columns(dataset, setting)
            for horizon in horizons or datasets.horizons(dataset):
                for model in models:
                    fixed, space = study_params(model, config, pins)
                    name = study_name(dataset, setting, horizon, model)
                    print(f"{name}: {args.n_trials} trials x {args.epochs} epochs, pinned {fixed}", flush=True)
                    terms = {"epochs": args.epochs, "seed": args.seed, "pinned": fixed, "space": space}
                    _check_terms(storage, name, terms)
                    start = time.perf_counter()
                    result = tune(dataset, model=model, n_trials=args.n_trials, horizon=horizon, columns=columns,
                                  storage=storage, study_name=name, epochs=args.epochs, seed=args.seed,
                                  track=False, data_dir=args.data_dir, fixed_params=fixed, space=space,
                                  retrain_best=False)
                    _check_terms(storage, name, terms)  # a new study records them now
                    _write_trials(storage, name, out / f"{dataset}_{setting}_{horizon}_{model}.csv",
                                  {"n_trials": args.n_trials, "epochs": args.epochs, "seed": args.seed,
                                   "commit": git_commit() or "unknown"})
                    print(f"{name}: best validation loss {result.best_value} with {result.best_params} "
                          f"({time.perf_counter() - start:.0f} s)", flush=True)
    summary = summarise(out)
    (out / "studies.md").write_text(summary)
    print(summary)
    return 0


def _check_terms(storage: str, name: str, terms: dict[str, Any]) -> None:
    """A study resumes only on its own terms (epochs, seed, pinned parameters, space): its trials
    would not be comparable otherwise. A new study records them; n_trials may grow."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # no such study yet: tune creates it
        study = None
    recorded = study.user_attrs.get("terms") if study else None
    if recorded is not None and recorded != json.loads(json.dumps(terms)):
        raise ValueError(f"study {name!r} was run with {recorded}, not {terms}; give another --out or --storage")
    if study is not None and recorded is None:
        study.set_user_attr("terms", terms)


def _write_trials(storage: str, name: str, path: Path, budget: dict[str, Any]) -> None:
    """The study's trials as a CSV (one row a trial, its parameters JSON), the budget on every row."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    rows = [{"study": name, "trial": t.number, "state": t.state.name, "value": t.value,
             "best_epoch": t.user_attrs.get("best_epoch"),
             "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None,
             "params": json.dumps(t.user_attrs.get("model_params", t.params), sort_keys=True), **budget}
            for t in study.trials]
    pd.DataFrame(rows).to_csv(path, index=False)


def summarise(out: Path) -> str:
    """A markdown table of every study in `out`: budget, finished trials, best loss and parameters."""
    lines = ["# Equal-budget studies", "",
             "Objective: the best one-pass validation loss (MSE, scaled) of a fit on the train split.", "",
             "| study | trials (complete / pruned) | epochs | best val loss | best trial | seconds | best parameters |",
             "|---|---|---|---|---|---|---|"]
    reruns = []
    for path in sorted(out.glob("*.csv")):
        trials = pd.read_csv(path)
        done = trials[trials["state"] == "COMPLETE"]
        if done.empty:
            continue
        best = done.loc[done["value"].idxmin()]
        n_pruned = int((trials["state"] == "PRUNED").sum())
        params = json.loads(best["params"])
        shown = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in sorted(params.items())
                 if k not in ("horizon", "random_state", "verbose", "target", "callbacks")}
        lines.append(f"| {best['study']} | {len(done)} / {n_pruned} | {int(best['epochs'])} | {best['value']:.4f} | "
                     f"{int(best['trial'])} | {trials['seconds'].sum():.0f} | `{json.dumps(shown)}` |")
        model = str(best["study"]).rsplit("-", 1)[-1]
        reruns.append(f"- {best['study']}: `" + " ".join(f"--set {model}.{k}={_text(v)}" for k, v in shown.items()) + "`")
    return "\n".join(lines + ["", "The best trials as candidate cells (`benchmark_accuracy.py ... --seeds 0,1,2`):", "",
                              *reruns]) + "\n"


def _text(value: Any) -> str:
    """A parameter as `--set` reads it back (jobs.parse_value)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def main(argv: list[str] | None = None) -> int:
    return suite_main(sys.modules[__name__], "tune_accuracy", argv)
