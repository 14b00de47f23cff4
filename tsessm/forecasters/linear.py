"""LinearForecaster: the NLinear / DLinear baseline of Zeng et al. (2023), "Are Transformers
Effective for Time Series Forecasting?", fitted in closed form as a ridge regression.

The forecast of the next `horizon` values is a linear map of the last `lookback` values of the same
target (channel independence: one map shared by every target, the paper's default
`individual=False`), on values standardised with the train rows' mean and standard deviation:

  normalization="last"       NLinear: the window's last value is subtracted from the inputs and
                             added back to the outputs, so the forecast follows the level.
  normalization="none"       Linear: the map reads the window as it is.
  normalization="decompose"  DLinear: a moving average of `kernel_size` (the window's ends
                             repeated) splits the window into trend and remainder, each with its
                             own map (one ridge over both).

Every window of the train rows (and of every target) is one example; the maps and the intercept
solve the ridge normal equations (the intercept unpenalised, as `sklearn.linear_model.Ridge`).
Whatever the normalization, the fitted model is one affine map of the window, `window @ coef_ +
intercept_`, so streaming keeps the last `lookback` rows and nothing else: `update` / `observe`
cost the same whatever the history's length.
"""
from __future__ import annotations

import warnings
from numbers import Real
from typing import Any, Iterable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tsessm.checks import positive_int
from tsessm.data import standard_stats
from tsessm.forecasters.base import BaseForecaster

NORMALIZATIONS = ("last", "none", "decompose")
# Windowed / one-pass forecasts are made this many origins at a time (bounds the (N, lookback) copy).
ORIGINS_PER_BLOCK = 8192


def ridge(pairs: Iterable[tuple[np.ndarray, np.ndarray]], alpha: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Ridge regression with an unpenalised intercept from (X (n_i, p), Y (n_i, m)) blocks whose
    normal equations add up (one block in memory at a time): (weights (p, m), intercept (m,),
    rows). alpha=0: minimum-norm least squares."""
    n, sum_x, sum_y, gram, cross = 0, 0.0, 0.0, 0.0, 0.0
    for X, Y in pairs:
        n += len(X)
        sum_x, sum_y = sum_x + X.sum(axis=0), sum_y + Y.sum(axis=0)
        gram, cross = gram + X.T @ X, cross + X.T @ Y
    mean_x, mean_y = sum_x / n, sum_y / n
    gram = gram - n * np.outer(mean_x, mean_x)  # centred: the intercept is not penalised
    cross = cross - n * np.outer(mean_x, mean_y)
    if alpha > 0:
        weights = np.linalg.solve(gram + alpha * np.eye(len(gram)), cross)
    else:
        weights = np.linalg.lstsq(gram, cross, rcond=None)[0]
    return weights, mean_y - mean_x @ weights, n


def moving_average_matrix(lookback: int, kernel_size: int) -> np.ndarray:
    """M (lookback, lookback) with `window @ M` the moving average of `kernel_size` over the window,
    its ends repeated (DLinear's `series_decomp`: (k-1)//2 copies of the first value before it, the
    rest of k-1 copies of the last value after it)."""
    before = (kernel_size - 1) // 2
    rows = np.clip(np.arange(lookback)[None] - before + np.arange(kernel_size)[:, None], 0, lookback - 1)
    M = np.zeros((lookback, lookback))
    np.add.at(M, (rows, np.broadcast_to(np.arange(lookback), rows.shape)), 1.0 / kernel_size)
    return M


class LinearForecaster(BaseForecaster):
    """NLinear / DLinear-style ridge regression from the last `lookback` values to the next `horizon`.

    Args:
        horizon: steps forecast at once.
        target: column name(s) to forecast; None = every column. Each target is forecast from its
            own history by one map shared by all targets (channel independence, NLinear's and
            DLinear's default): input columns (the MS setting) and past covariates of `X` are not read.
        lookback: values the map reads (default 336, the paper's).
        alpha: ridge penalty on the map's weights, on standardised values (as sklearn's `Ridge`,
            the squared errors summed over every window; 0 = least squares, minimum-norm).
        normalization: "last" (NLinear, default), "none" or "decompose" (DLinear); see the module.
        kernel_size: DLinear's moving-average length (default 25); used by "decompose" only.
        missing: "error", "ffill" or "interpolate" for gaps and NaN in the input.
        freq: pandas offset alias; inferred from the data when None.
        future_covariates, calendar: accepted for a uniform interface, ignored with a warning: the
            map reads past values of the targets only.
        random_state: unused (the fit is closed-form and deterministic).
    """

    USES_KNOWN_AHEAD = False  # future covariates and calendar features are ignored (a warning at fit)

    def __init__(self, horizon: int = 24, target=None, lookback: int = 336, alpha: float = 1.0,
                 normalization: str = "last", kernel_size: int = 25, missing: str = "error",
                 freq: str | None = None, future_covariates: Sequence[str] | None = None, calendar: Any = None,
                 random_state: int | None = None) -> None:
        self.horizon = horizon
        self.target = target
        self.lookback = lookback
        self.alpha = alpha
        self.normalization = normalization
        self.kernel_size = kernel_size
        self.missing = missing
        self.freq = freq
        self.future_covariates = future_covariates
        self.calendar = calendar
        self.random_state = random_state

    # ----- checks --------------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        positive_int("lookback", self.lookback)
        positive_int("kernel_size", self.kernel_size)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, Real) or not 0 <= self.alpha < np.inf:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")

    def _min_length(self) -> int:
        return self.lookback + self.horizon  # one whole window: lookback inputs and horizon outputs

    # ----- features ------------------------------------------------------------------------
    def features(self, windows: np.ndarray) -> np.ndarray:
        """What the ridge reads of standardised windows (N, lookback): (N, p), p = lookback, or
        2 lookback for "decompose" (remainder, then trend)."""
        if self.normalization == "last":
            return windows - windows[:, -1:]
        if self.normalization == "decompose":
            trend = windows @ moving_average_matrix(windows.shape[1], self.kernel_size)
            return np.hstack([windows - trend, trend])
        return windows

    def training_windows(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (features, response) pair of the rows `values` (T, C) in original units, of every
        target (standardised with the fitted statistics), stacked: ((N, p), (N, horizon)). The
        response is the standardised future, less the window's last value for "last". What `_fit`
        solves; public so that another ridge can be fitted on the same windows."""
        pairs = [self._target_windows(values, j) for j in range(len(self.target_idx_))]
        return np.vstack([x for x, _ in pairs]), np.vstack([y for _, y in pairs])

    def _target_windows(self, values: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
        """training_windows of the j-th target alone."""
        z = (values[:, self.target_idx_[j]] - self.mean_[j]) / self.std_[j]
        windows = sliding_window_view(z, self.lookback + self.horizon)
        inputs, future = windows[:, : self.lookback], windows[:, self.lookback :]
        return self.features(inputs), (future - inputs[:, -1:] if self.normalization == "last" else future)

    # ----- fit -----------------------------------------------------------------------------
    def _fit(self, values: np.ndarray, target_idx: list[int], val_values: np.ndarray | None) -> None:
        inputs = sorted(set(range(values.shape[1])) - set(target_idx) - set(self.future_idx_))
        if inputs:
            warnings.warn(f"LinearForecaster ignores {len(inputs)} input column(s) that are not targets (columns "
                          f"{inputs} of the fit): each target is forecast from its own past values only",
                          UserWarning, stacklevel=4)
        self.target_idx_ = list(target_idx)
        self.mean_, self.std_ = standard_stats(values[:, self.target_idx_])
        # one target at a time: the normal equations add up
        weights, intercept, n = ridge((self._target_windows(values, j) for j in range(len(self.target_idx_))),
                                      self.alpha)
        self.ridge_coef_ = weights  # (p, horizon): on `features`
        self.ridge_intercept_ = intercept
        self.coef_, self.intercept_ = self._window_map(weights, self.ridge_intercept_)
        self.n_windows_ = n
        self.window_ = values[-self.lookback :, self.target_idx_].copy()

    def _window_map(self, weights: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fitted model as one affine map of the standardised window: (coef (lookback, horizon),
        intercept (horizon,)), whatever the normalization."""
        L = self.lookback
        if self.normalization == "last":  # (x - x_L) W + b + x_L
            coef = weights.copy()
            coef[-1] += 1.0 - weights.sum(axis=0)
        elif self.normalization == "decompose":  # x (I - M) W_remainder + x M W_trend + b
            M = moving_average_matrix(L, self.kernel_size)
            coef = weights[:L] + M @ (weights[L:] - weights[:L])
        else:
            coef = weights.copy()
        return coef, intercept.copy()

    # ----- forecasts -----------------------------------------------------------------------
    def _map(self, windows: np.ndarray, j: int) -> np.ndarray:
        """Forecasts in original units of target j from its windows (N, lookback) in original units."""
        z = (windows - self.mean_[j]) / self.std_[j]
        return (z @ self.coef_ + self.intercept_) * self.std_[j] + self.mean_[j]

    def _predict(self) -> np.ndarray:
        return np.stack([self._map(self.window_[None, :, j], j)[0] for j in range(len(self.target_idx_))], axis=1)

    def _update(self, values: np.ndarray) -> None:
        # a new array (never changed in place, so a refused row leaves the old one): O(lookback) per call
        new = values[-self.lookback :, self.target_idx_]
        self.window_ = np.concatenate([self.window_[len(new) :], new])

    def _forecast_at(self, values: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """The forecast at each origin from rows [origin - lookback + 1, origin]; rows before the
        first are the first row repeated. (len(origins), horizon, n_targets)."""
        L, k = self.lookback, len(self.target_idx_)
        out = np.empty((len(origins), self.horizon, k))
        if len(origins) == 0:
            return out
        ys = values[:, self.target_idx_]
        padded = np.vstack([np.repeat(ys[:1], L - 1, axis=0), ys])  # row t of ys is row t + L - 1
        for j in range(k):
            windows = sliding_window_view(padded[:, j], L)  # window w ends at row w of ys
            for start in range(0, len(origins), ORIGINS_PER_BLOCK):
                block = origins[start : start + ORIGINS_PER_BLOCK]
                out[start : start + len(block), :, j] = self._map(windows[block], j)
        return out

    def _forecast_one_pass(self, values: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """One pass over the rows: the state after row t is its last `lookback` rows, so this is the
        windowed forecast; origins before row lookback - 1 see the first row repeated before it."""
        return self._forecast_at(values, np.asarray(origins))

    def _forecast_windows(self, values: np.ndarray, origins: np.ndarray, lookback: int) -> np.ndarray:
        if lookback < self.lookback:
            raise ValueError(f"a windowed forecast from lookback={lookback} rows: this LinearForecaster reads the "
                             f"last lookback={self.lookback} values (refit with lookback={lookback})")
        return self._forecast_at(values, np.asarray(origins))  # a longer window: only its last rows are read
