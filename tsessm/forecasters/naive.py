"""NaiveForecaster: last value or seasonal naive, the floor every real model must beat."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tsessm.checks import positive_int
from tsessm.forecasters.base import BaseForecaster


class NaiveForecaster(BaseForecaster):
    """Repeat the last value (`season_length=1`) or the last full season.

    The forecast for step k is y[t + k - season_length * ceil(k / season_length)].
    """

    USES_KNOWN_AHEAD = False  # future covariates and calendar features are ignored (a warning at fit)

    def __init__(self, horizon: int = 24, target=None, season_length: int = 1, missing: str = "error",
                 freq: str | None = None, future_covariates: Sequence[str] | None = None, calendar: Any = None,
                 random_state: int | None = None) -> None:
        self.horizon = horizon
        self.target = target
        self.season_length = season_length
        self.missing = missing
        self.freq = freq
        self.future_covariates = future_covariates
        self.calendar = calendar
        self.random_state = random_state  # unused: the forecast is deterministic

    def _check_params(self) -> None:
        super()._check_params()
        positive_int("season_length", self.season_length)

    def _min_length(self) -> int:
        return self.season_length

    def _lags(self) -> np.ndarray:
        """For step k (1..H), how far back the repeated value lies: (H,), in 0..season_length-1."""
        k = np.arange(1, self.horizon + 1)
        return self.season_length * np.ceil(k / self.season_length).astype(int) - k

    def _fit(self, values, target_idx, val_values) -> None:
        self.target_idx_ = list(target_idx)
        self.tail_ = values[-self.season_length :, self.target_idx_]

    def _update(self, values) -> None:
        self.tail_ = np.vstack([self.tail_, values[:, self.target_idx_]])[-self.season_length :]

    def _predict(self) -> np.ndarray:
        return self.tail_[len(self.tail_) - 1 - self._lags()]

    def _forecast_one_pass(self, values: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        ys = values[:, self.target_idx_]
        origins = np.arange(len(ys)) if origins is None else np.asarray(origins)
        rows = origins[:, None] - self._lags()[None]  # (N, H); negative = not yet seen
        return ys[np.clip(rows, 0, None)]

    def _forecast_windows(self, values: np.ndarray, origins: np.ndarray, lookback: int) -> np.ndarray:
        if lookback < self.season_length:
            raise ValueError(f"lookback={lookback} is shorter than season_length={self.season_length}")
        return self._forecast_one_pass(values, origins)
