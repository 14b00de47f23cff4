"""The search spaces: which parameters of the eSSM and LSTM forecasters a study tunes, and their ranges."""
from __future__ import annotations

from typing import Any, Sequence

from tsessm.jobs import model_class

# Default search spaces. Every d_model / d_state choice is a multiple of every n_heads choice,
# so any combination builds (n_heads choices are narrowed further when d_model/d_state are pinned).
GRIDS: dict[str, dict[str, list]] = {
    "essm": {
        "d_model": [32, 64, 128], "n_layers": [1, 2, 3, 4], "d_state": [16, 32, 64], "n_heads": [1, 2, 4, 8],
        "discretization": ["zoh", "bilinear"], "init": ["s4d-lin", "s4d-inv", "legs"],
        "lookback": [48, 96, 192, 336],
    },
    "lstm": {"d_model": [32, 64, 128], "n_layers": [1, 2, 3], "lookback": [48, 96, 192, 336]},
}
# Parameters a study sets itself (per call or per trial), never searched.
SET_PER_TRIAL = {"horizon", "target", "epochs", "random_state", "verbose", "callbacks"}
LR = (1e-4, 1e-2)  # log-uniform
DROPOUT = (0.0, 0.3)


def check_model(model_name: str) -> None:
    """ValueError unless `model_name` is one `tune` has a search space for."""
    if model_name == "arima":
        raise ValueError("ARIMA is not tuned by `tune`: it keeps its own AIC search (order='auto')")
    if model_name not in GRIDS:
        raise ValueError(f"no search space for model {model_name!r}; tune one of {', '.join(GRIDS)}")


def search_space(model_name: str, trial: Any, *, fixed: dict[str, Any] | None = None,
                 space: dict[str, Sequence] | None = None) -> dict[str, Any]:
    """Sample the tuned parameters of `model_name` ("essm" or "lstm") from an Optuna trial.

    fixed: parameters pinned to a value (not suggested, not in the study's params).
    space: categorical choices replacing a parameter's default range, e.g. {"lookback": [48, 96]},
        or adding one of the model's other parameters to the search, e.g. {"dt_min": [0.001, 0.01]}.
    Works with `optuna.trial.Trial` and `optuna.trial.FixedTrial`. Returns the sampled values.
    """
    check_model(model_name)
    fixed, space = dict(fixed or {}), {k: list(v) for k, v in (space or {}).items()}
    taken = set(model_class(model_name)().get_params())
    unknown = sorted(set(space) - set(GRIDS[model_name]) - {"lr", "dropout"} - (taken - SET_PER_TRIAL))
    grids = {**GRIDS[model_name], **{k: v for k, v in space.items() if k not in ("lr", "dropout")}}
    if unknown:
        raise ValueError(f"space names parameter(s) {', '.join(unknown)} that {model_name} does not tune "
                         f"(not among its parameters, or set by the study itself)")
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
    for name, (low, high), log in (("lr", LR, True), ("dropout", DROPOUT, False)):
        if name in fixed:
            params[name] = fixed[name]
        elif name in space:
            params[name] = trial.suggest_categorical(name, space[name])
        else:
            params[name] = trial.suggest_float(name, low, high, log=log)
    return params
