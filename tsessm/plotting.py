"""Plots of a backtest: forecast against actual, and error by horizon step."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from tsessm.backtest import BacktestResult  # noqa: E402


def plot_backtest(results: dict[str, BacktestResult], path: str | os.PathLike, target: str | None = None,
                  step: int | None = None, last: int = 500, bands: int = 1) -> None:
    """Save a two-panel figure comparing models' backtests of the same data.

    The models are drawn best first (by MSE), each in one colour in both panels. Top: the actual
    series and each model's `step`-ahead forecast (default: the horizon) over the last `last`
    origins, the window named in the title, with the prediction interval of the best `bands`
    models as shaded bands when the backtest made intervals. Bottom: MSE by horizon step.
    """
    first = next(iter(results.values()))
    target = target or first.targets[0]
    j = first.targets.index(target)
    H = first.forecasts.shape[1]
    k = step or H
    ranked = sorted(results, key=lambda name: results[name].scores["mse"])
    colours = dict(zip(ranked, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7))
    window = slice(-last, None)
    origins = first.origins[window]
    top.plot(origins, first.actuals[window, k - 1, j], color="black", lw=1.4, label="actual")
    for name in ranked:
        res = results[name]
        # the forecast made at origin o for o + k, drawn at o so it lines up with the actual at o + k
        top.plot(res.origins[window], res.forecasts[window, k - 1, j], lw=0.9, color=colours[name],
                 label=f"{name} (MSE {res.scores['mse']:.4f})")
        if res.intervals is not None and name in ranked[:bands]:  # the band, with its measured coverage
            band = res.intervals[window, k - 1, j]
            covered = res.by_step.query("target == @target and step == @k").coverage.iloc[0]
            top.fill_between(res.origins[window], band[:, 0], band[:, 1], color=colours[name], alpha=0.15, lw=0,
                             label=f"{name} {100 * res.coverage:g} % interval (covers {100 * covered:.1f} %)")
    span = f"{_label(origins[0])} to {_label(origins[-1])}" if len(origins) else "no origins"
    top.set_title(f"{target}: {k}-step-ahead forecasts against the actual value, last {len(origins)} origins "
                  f"of the test split ({span}; {first.mode} backtest)", fontsize=10)
    top.set_xlabel(f"forecast origin (the value shown is for origin + {k} steps)")
    top.legend(fontsize=8, ncol=min(5, len(ranked) + 1))
    for name in ranked:
        res = results[name]
        per_step = res.by_step[res.by_step.target == target]
        bottom.plot(per_step.step, per_step.mse, color=colours[name], label=f"{name} (MSE {res.scores['mse']:.4f})")
    bottom.set_xlabel("horizon step")
    bottom.set_ylabel("MSE (scaled)")
    bottom.set_title("error by horizon step (models best first)", fontsize=10)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(origin) -> str:
    return origin.strftime("%Y-%m-%d %H:%M") if hasattr(origin, "strftime") else str(origin)
