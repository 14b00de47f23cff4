"""The accuracy benchmark: datasets x settings x horizons x models on the Informer protocol.

Every cell trains one model on the train split (validation split for early stopping), backtests
it on the test split -- windowed (every origin sees `lookback` rows, the protocol S4 reports) and,
for the eSSM, one-pass (the streaming state over the whole history) -- and appends its metrics
to a CSV. A cell already in the CSV with the same parameters (those the config and --set name)
is skipped, so an interrupted run resumes where it stopped; changing one of them reruns the
cell. Several processes may share the CSV; give them different cells (e.g. other datasets):
a cell two of them start at once is computed twice. Each cell is an MLflow run.

    tsessm bench accuracy --quick                      # a few-minute subset (ETTh1, S)
    tsessm bench accuracy --datasets ETTh1,ETTh2 --settings S --horizons 720
    tsessm bench accuracy --report-only                # re-render the table and plots
"""
from __future__ import annotations

import argparse
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsessm import datasets, jobs
from tsessm.bench import ensemble
from tsessm.bench.options import DATASETS, EXPERIMENT, MODELS
from tsessm.bench.options import add_accuracy_arguments as add_arguments  # noqa: F401  (the suite's interface)
from tsessm.bench.results import ENSEMBLE_SUFFIX, SEEDED_MODELS, ResultsFile, params_key, result_row
from tsessm.scripts import suite_main
from tsessm.tracking import git_commit, start_run

SETTINGS = ("S", "M")
# The one-pass (streaming) backtest is reported for the model that streams; the rest are windowed.
ONE_PASS_MODELS = ("essm",)
QUICK = {"datasets": ("ETTh1",), "settings": ("S",), "horizons": (24, 48), "models": MODELS}


@dataclass(frozen=True)
class Cell:
    dataset: str
    setting: str
    horizon: int
    model: str
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.setting}/H{self.horizon}/{self.model}" + (f"/seed{self.seed}" if self.seed else "")

    @property
    def modes(self) -> tuple[str, ...]:
        base = self.model.removesuffix(ENSEMBLE_SUFFIX)  # a seed ensemble is backtested as its members
        return ("windowed", "one-pass") if base in ONE_PASS_MODELS else ("windowed",)


def grid(datasets_: tuple[str, ...], settings: tuple[str, ...], horizons: tuple[int, ...] | None,
         models: tuple[str, ...], seeds: tuple[int, ...] = (0,)) -> list[Cell]:
    """The cells to run, in order (seed by seed, so a first seed of every cell lands first);
    ARIMA is univariate only, horizons default to the protocol's, seeds apply to SEEDED_MODELS."""
    cells = []
    for i, seed in enumerate(seeds):
        for dataset in datasets_:
            for setting in settings:
                for horizon in horizons or datasets.horizons(dataset):
                    for model in models:
                        if (model == "arima" and setting != "S") or (model not in SEEDED_MODELS and i > 0):
                            continue
                        cells.append(Cell(dataset, setting, horizon, model,
                                          seed if model in SEEDED_MODELS else 0))
    return cells


def load_config(path: str | Path) -> dict[str, Any]:
    """The per-model parameters: `[models.NAME]` defaults, then matching `[[overrides]]` in order.

    An override applies where every key it names (dataset, setting, horizon, each a value or a
    list) matches the cell and its `model` matches; its `params` replace the defaults.
    """
    with open(path, "rb") as f:
        config = tomllib.load(f)
    unknown = set(config) - {"models", "overrides"}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}; expected [models.*] and [[overrides]]")
    for i, rule in enumerate(config.get("overrides", [])):
        bad = set(rule) - {"model", "dataset", "setting", "horizon", "params", "why"}
        if bad or "model" not in rule or "params" not in rule:
            raise ValueError(f"{path}: override #{i + 1} needs model and params (and may name dataset, "
                             f"setting, horizon, why); it has {sorted(rule)}")
    return config


def check_config(config: dict[str, Any]) -> None:
    """Every model and parameter the config (and --set) names exists: a typo fails now, not hours in."""
    named = [(m, p) for m, p in config.get("models", {}).items()]
    named += [(rule["model"], rule["params"]) for rule in config.get("overrides", [])]
    for model, params in named:
        models = model if isinstance(model, list) else [model]
        for m in models:
            if m not in jobs.MODELS:
                raise ValueError(f"the config names an unknown model {m!r}; models are {', '.join(jobs.MODELS)}")
            unknown = sorted(set(params) - set(jobs.model_class(m)().get_params()) - {"lookback"})
            if unknown:
                raise ValueError(f"model {m!r} has no parameter(s) {', '.join(unknown)} (named in the config or --set)")
            if "random_state" in params:
                raise ValueError(f"model {m!r}: random_state is set per cell by --seeds, not in the config or --set")


def _matches(rule: dict[str, Any], cell: Cell) -> bool:
    for key in ("model", "dataset", "setting", "horizon"):
        if key in rule:
            allowed = rule[key] if isinstance(rule[key], list) else [rule[key]]
            if getattr(cell, key) not in allowed:
                return False
    return True


def cell_params(cell: Cell, config: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of the cell's model (horizon and seed included)."""
    params: dict[str, Any] = {"horizon": cell.horizon, "random_state": cell.seed}
    params.update(config.get("models", {}).get(cell.model, {}))
    for rule in config.get("overrides", []):
        if _matches(rule, cell):
            params.update(rule["params"])
    if "verbose" in jobs.model_class(cell.model)().get_params():
        params.setdefault("verbose", 0)
    params.setdefault("lookback", 96)  # the rows a windowed forecast sees, for every model
    return params


def run_cell(cell: Cell, params: dict[str, Any], *, data_dir: str | None, track: bool,
             experiment: str = EXPERIMENT, models_dir: str | None = None) -> list[dict[str, Any]]:
    """Train and backtest one cell; one result row per backtest mode. With `models_dir`, the
    fitted model is saved there too (`model_path`), e.g. for a seed ensemble later."""
    lookback = params.get("lookback", 96)
    source = open_cell_data(cell, lookback, data_dir)
    accepted = jobs.model_class(cell.model)().get_params()
    model = jobs.make_model(cell.model, **{k: v for k, v in params.items() if k != "lookback" or k in accepted})
    rows = []
    with start_run(track, experiment, run_name=cell.name) as tracker:
        tracker.set_tags({"dataset": cell.dataset, "setting": cell.setting, "horizon": cell.horizon,
                          "model": cell.model, "seed": cell.seed})
        fit_seconds = jobs.train(model, source, tracker)
        if models_dir:
            model.save(model_path(models_dir, cell, params))
        val = jobs.validation_backtest(model, source, lookback).scores  # what configurations are chosen on
        tracker.log_metrics({"val_windowed_mse": val["mse"], "val_windowed_mae": val["mae"]})
        for mode in cell.modes:
            result, seconds = jobs.evaluate(model, source, mode, lookback, tracker)
            rows.append(result_row(
                cell, mode, result.scores, val, lookback, params, git_commit() or "unknown",
                fit_seconds=round(fit_seconds, 1), backtest_seconds=round(seconds, 1),
                epochs_run=len(getattr(model, "history_", [])) or None, mlflow_run_id=tracker.run_id or ""))
    return rows


def open_cell_data(cell: Cell, lookback: int, data_dir: str | None) -> jobs.DataSource:
    """The cell's data and split (`cell_columns`)."""
    return jobs.open_data(cell.dataset, lookback=lookback, columns=cell_columns(cell.dataset, cell.setting),
                          data_dir=data_dir)


def cell_columns(dataset: str, setting: str) -> list[str] | None:
    """The columns a setting reads: the target column alone for S, every column (None) for M."""
    return [datasets.target(dataset)] if setting == "S" else None


def check_settings(settings: tuple[str, ...]) -> None:
    """ValueError naming --settings unless every setting is S or M."""
    for s in settings:
        if s not in SETTINGS:
            raise ValueError(f"--settings: unknown setting {s!r}; choose from {', '.join(SETTINGS)}")


def model_path(models_dir: str | Path, cell: Cell, params: dict[str, Any]) -> Path:
    """Where --models-dir keeps a cell's fitted model: named by the cell, its seed and its parameters."""
    return Path(models_dir) / f"{cell.dataset}_{cell.setting}_{cell.horizon}_{cell.model}_seed{cell.seed}_{params_key(params)}.tsessm"


def _csv_list(text: str | None, cast=str) -> tuple | None:
    return tuple(cast(x) for x in text.split(",") if x) if text else None


def _apply_sets(config: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """`--set MODEL.NAME=VALUE` items as a last override per model: they win over the file."""
    sets: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        model, dot, name = key.partition(".")
        if not (sep and dot and model and name):
            raise ValueError(f"--set expects MODEL.NAME=VALUE, got {item!r}")
        parsed = tuple(jobs.parse_value(v) for v in value.split(",")) if "," in value else jobs.parse_value(value)
        sets.setdefault(model, {})[name] = parsed
    rules = list(config.get("overrides", [])) + [{"model": m, "params": p} for m, p in sets.items()]
    return {**config, "overrides": rules}


def _available(dataset: str, data_dir: str | None) -> bool:
    try:
        datasets.load(dataset, data_dir=data_dir)
    except FileNotFoundError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    results = ResultsFile(args.results)
    report_dir = Path(args.report_dir) if args.report_dir else Path(args.results).parent
    if not args.report_only:
        pick = QUICK if args.quick else {}
        chosen_datasets = _csv_list(args.datasets) or pick.get("datasets", DATASETS)
        chosen_datasets = tuple(datasets.get_spec(d).name for d in chosen_datasets)
        settings = _csv_list(args.settings) or pick.get("settings", SETTINGS)
        models = _csv_list(args.models) or pick.get("models", MODELS)
        check_settings(settings)
        for m in models:
            jobs.model_class(m)  # an unknown model fails before any cell runs
        if args.ensemble and (not args.models_dir or len(args.seeds) < 2):
            raise ValueError("--ensemble needs --models-dir and at least two --seeds")
        config = _apply_sets(load_config(args.config), args.set)
        check_config(config)
        present = []
        for d in chosen_datasets:
            if _available(d, args.data_dir):
                present.append(d)
            else:
                print(f"{d}: data file not found, skipped (put it in --data-dir or $TSESSM_DATA_DIR)")
        cells = grid(tuple(present), settings, _csv_list(args.horizons, int) or pick.get("horizons"), models,
                     args.seeds)
        _run_cells(cells, config, results, args)
        if args.ensemble:
            _run_ensembles(cells, config, results, args)
    table = results.read()
    if table.empty:
        print(f"no results in {args.results} yet")
        return 0
    from tsessm.bench.report import plot_dataset, render_markdown  # matplotlib: only when reporting

    report_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(table)
    (report_dir / "accuracy.md").write_text(markdown)
    for dataset in table["dataset"].unique():
        plot_dataset(table, dataset, report_dir / f"accuracy_{dataset}.png")
    print(markdown)
    print(f"table: {report_dir / 'accuracy.md'}; plots: {report_dir}/accuracy_<dataset>.png")
    return 0


def _run_cells(cells: list[Cell], config: dict[str, Any], results: ResultsFile, args: argparse.Namespace) -> None:
    def done(cell: Cell, params: dict[str, Any]) -> bool:  # with --models-dir, its model file too
        kept = not args.models_dir or model_path(args.models_dir, cell, params).exists()
        return kept and results.has(cell, params_key(params), cell.modes)

    todo = []
    for cell in cells:
        params = cell_params(cell, config)
        if done(cell, params):
            print(f"{cell.name}: done, skipped")
        else:
            todo.append((cell, params))
    for i, (cell, params) in enumerate(todo, 1):
        if done(cell, params):  # finished meanwhile by another process
            print(f"{cell.name}: done, skipped")
            continue
        print(f"[{i}/{len(todo)}] {cell.name} ...", flush=True)
        start = time.perf_counter()
        rows = run_cell(cell, params, data_dir=args.data_dir, track=args.track, experiment=args.experiment,
                        models_dir=args.models_dir)
        results.replace(cell, rows)
        scores = ", ".join(f"{r['mode']} {r['mse']:.4f}/{r['mae']:.4f}" for r in rows)
        print(f"[{i}/{len(todo)}] {cell.name}: {scores} ({time.perf_counter() - start:.0f} s)", flush=True)


def _run_ensembles(cells: list[Cell], config: dict[str, Any], results: ResultsFile, args: argparse.Namespace) -> None:
    """A seed ensemble per cell of a seeded model whose every seed's model is in --models-dir."""
    wanted = dict.fromkeys(Cell(c.dataset, c.setting, c.horizon, c.model + ENSEMBLE_SUFFIX)
                           for c in cells if c.model in SEEDED_MODELS)
    for cell in wanted:
        members = [Cell(cell.dataset, cell.setting, cell.horizon, cell.model.removesuffix(ENSEMBLE_SUFFIX), seed)
                   for seed in args.seeds]
        member_params = [cell_params(m, config) for m in members]
        params = ensemble.ensemble_params(member_params)
        if results.has(cell, params_key(params), cell.modes):
            print(f"{cell.name}: done, skipped")
            continue
        models, missing = ensemble.load_members([model_path(args.models_dir, m, p)
                                                 for m, p in zip(members, member_params)])
        if missing:
            print(f"{cell.name}: skipped, no model file {', '.join(p.name for p in missing)} in {args.models_dir}")
            continue
        lookback = member_params[0].get("lookback", 96)
        source = open_cell_data(cell, lookback, args.data_dir)
        rows = ensemble.ensemble_rows(cell, cell.modes, models, params, source, lookback)
        results.replace(cell, rows)
        print(f"{cell.name}: " + ", ".join(f"{r['mode']} {r['mse']:.4f}/{r['mae']:.4f}" for r in rows), flush=True)


def main(argv: list[str] | None = None) -> int:
    return suite_main(sys.modules[__name__], "benchmark_accuracy", argv)

