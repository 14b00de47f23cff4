"""Plots of a backtest: forecast against actual, and error by horizon step."""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tsessm.backtest import BacktestResult  # noqa: E402


def plot_backtest(results: dict[str, BacktestResult], path: str | os.PathLike, target: str | None = None,
                  steps: Sequence[int] | None = None, last: int = 500) -> None:
    """Save a two-panel figure for one or more models' backtests of the same data.

    Top: the actual series and each model's forecast `steps` ahead (default 1 and H) over the
    last `last` origins. Bottom: scaled MSE by horizon step for every model.
    """
    first = next(iter(results.values()))
    target = target or first.targets[0]
    j = first.targets.index(target)
    H = first.forecasts.shape[1]
    steps = steps or sorted({1, H})
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7))
    window = slice(-last, None)
    top.plot(first.origins[window], first.actuals[window, 0, j], color="black", lw=1.2, label="actual (t+1)")
    for name, res in results.items():
        for k in steps:
            # forecast made at origin o for o + k, drawn at o + 1 so it lines up with "actual (t+1)"
            shifted = np.full(len(res.origins), np.nan)
            shifted[k - 1 :] = res.forecasts[: len(res.origins) - k + 1, k - 1, j]
            top.plot(res.origins[window], shifted[window], lw=0.9, label=f"{name} {k}-step")
    top.set_title(f"{target}: forecasts vs actual ({first.mode} backtest)")
    top.legend(fontsize=8, ncol=3)
    for name, res in results.items():
        table = res.by_step
        per_step = table[table.target == target]
        bottom.plot(per_step.step, per_step.mse, label=f"{name} (MSE {res.scores['mse']:.3f})")
    bottom.set_xlabel("horizon step")
    bottom.set_ylabel("MSE (scaled)")
    bottom.set_title("error by horizon")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
