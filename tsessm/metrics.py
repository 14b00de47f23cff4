"""Forecast error metrics on (origins, horizon, targets) arrays."""
from __future__ import annotations

import numpy as np
import pandas as pd


def mse(forecast: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean((forecast - actual) ** 2))


def mae(forecast: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(forecast - actual)))


def by_step(forecast: np.ndarray, actual: np.ndarray, targets: list[str]) -> pd.DataFrame:
    """Tidy per-step metrics: one row per (step, target) with mse and mae.

    forecast, actual: (N, H, k) arrays (N origins, H steps, k targets).
    """
    if forecast.shape != actual.shape:
        raise ValueError(f"forecast shape {forecast.shape} differs from actual shape {actual.shape}")
    err = forecast - actual
    n_steps, k = err.shape[1:]
    return pd.DataFrame(
        {
            "step": np.repeat(np.arange(1, n_steps + 1), k),
            "target": np.tile(targets, n_steps),
            "mse": (err**2).mean(axis=0).ravel(),
            "mae": np.abs(err).mean(axis=0).ravel(),
        }
    )
