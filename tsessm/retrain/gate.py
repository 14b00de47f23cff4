"""The promotion gate: pure decisions on scores and models, no MLflow, no files.

The challenger replaces the champion when there is none, when the champion's holdout forecasts
are not finite, or when the challenger's score is lower by at least `margin` (relative: 0.02 = 2 %
lower MSE). Both must forecast the same thing to be compared, and the champion alias must not
have moved while the challenger was being evaluated.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from tsessm.retrain.outcome import RetrainError

CHAMPION, PREVIOUS = "champion", "previous"  # the registry aliases the gate moves


class Decision(NamedTuple):
    promote: bool
    reason: str


def forecasts_finite(result: Any) -> bool:
    """Whether every holdout forecast of a backtest result is finite."""
    return bool(np.isfinite(result.forecasts).all())


def holdout_score(result: Any, metric: str) -> float:
    """A backtest result's `metric`; inf when a forecast is not finite (such a model never wins)."""
    return float(result.scores[metric]) if forecasts_finite(result) else math.inf


def improvement(challenger: float, champion: float) -> float:
    """The challenger's relative improvement on the champion's score (lower scores are better)."""
    if champion > 0:
        return (champion - challenger) / champion
    return 0.0 if challenger >= champion else math.inf


def decide(challenger: float, champion: float | None, version: int | None, *, metric: str = "mse",
           margin: float = 0.02) -> Decision:
    """Promote the challenger (holdout score `challenger`) over champion `version` (score
    `champion`; None when there is no champion)?"""
    if champion is None:
        return Decision(True, f"first model: no @{CHAMPION} yet; holdout {metric} {challenger:.4g}")
    if not math.isfinite(champion):
        return Decision(True, f"champion v{version}'s holdout forecasts are not finite; challenger {metric} "
                              f"{challenger:.4g}")
    gain = improvement(challenger, champion)
    versus = (f"holdout {metric} {challenger:.4g} vs champion v{version} {champion:.4g}: "
              f"{gain:+.1%} (margin {margin:.1%})")
    if gain > 0 and gain >= margin:
        return Decision(True, versus)
    return Decision(False, f"{versus}; @{CHAMPION} stays v{version}")


def check_comparable(champion: Any, challenger: Any, version: int | None) -> None:
    """Raise RetrainError("evaluate") unless both models forecast the same horizon and targets."""
    problems = []
    if champion.horizon != challenger.horizon:
        problems.append(f"horizon {champion.horizon} vs {challenger.horizon}")
    if list(champion.target_columns_) != list(challenger.target_columns_):
        problems.append(f"targets {list(champion.target_columns_)} vs {list(challenger.target_columns_)}")
    if problems:
        raise RetrainError("evaluate", f"champion v{version} and the challenger forecast different things "
                           f"({'; '.join(problems)}): not comparable. Replace the champion deliberately "
                           "(e.g. tsessm train --register NAME) or use a new registry name")


def check_unmoved(before: int | None, now: int | None) -> None:
    """Raise RetrainError("promote") when @champion moved from `before` to `now` during the run."""
    if now != before:
        raise RetrainError("promote", f"@{CHAMPION} moved from v{before} to v{now} during this retrain; not "
                           "promoting (run again to compare with the new champion)")
