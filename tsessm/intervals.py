"""Forecast uncertainty from residuals: split-conformal calibration and online recalibration.

Calibration (`Calibration.from_residuals`): the residuals actual - forecast of held-out
forecasts, per horizon step and target, summarised as a quantile table (signed residuals, for
`predict_quantiles`) and the sorted absolute residuals' quantiles (for symmetric intervals).
A split-conformal interval of coverage c is forecast +- the ceil((n + 1) c)-th smallest absolute
residual of the n calibration forecasts: it covers a new value with probability >= c when
residuals are exchangeable (capped at the largest residual when n < c / (1 - c)).

Online recalibration (`CoverageTracker`): a stream is not exchangeable -- its variance drifts.
The tracker keeps, per horizon step and target, a half-width q and updates it when the value a
forecast was made for arrives (Angelopoulos, Candes & Tibshirani 2023, "conformal PID control",
its quantile-tracking part; the score-space form of adaptive conformal inference, Gibbs & Candes
2021): q += eta * (miss - (1 - c)). Misses widen it, hits narrow it, so the long-run miss rate
is 1 - c whatever the drift, at O(H k) work per observation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from tsessm import persist

LEVELS = np.linspace(0.0, 1.0, 401)  # a large calibration set is kept at these levels (0.25 % apart)


def check_coverage(coverage: float) -> float:
    if isinstance(coverage, (bool, np.bool_)) or not isinstance(coverage, (int, float, np.floating)) \
            or not 0 < coverage < 1:
        raise ValueError(f"coverage must be a number in (0, 1), e.g. 0.9, got {coverage!r}")
    return float(coverage)


def check_alpha(alpha) -> np.ndarray:
    levels = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    if levels.ndim != 1 or len(levels) == 0 or not ((levels > 0) & (levels < 1)).all():
        raise ValueError(f"alpha must be quantile levels in (0, 1), e.g. (0.05, 0.5, 0.95), got {alpha!r}")
    return levels


@persist.allow
@dataclass
class Calibration:
    """Held-out residuals per horizon step and target, float32.

    With n <= len(LEVELS) forecasts, `signed` and `absolute` are the sorted residuals actual -
    forecast and |actual - forecast| themselves, (n, H, k), and intervals use their exact order
    statistics; with more, their quantiles at LEVELS ("higher" for the absolute ones, so an
    interval never narrows below the order statistic). count: n.
    """

    signed: np.ndarray
    absolute: np.ndarray
    count: int

    @classmethod
    def from_residuals(cls, residuals: np.ndarray) -> "Calibration":
        """residuals: (n, H, k) actual - forecast at n held-out origins."""
        if len(residuals) == 0:
            raise ValueError("no held-out forecasts to calibrate the intervals on")
        if len(residuals) <= len(LEVELS):
            signed, absolute = np.sort(residuals, axis=0), np.sort(np.abs(residuals), axis=0)
        else:
            signed = np.quantile(residuals, LEVELS, axis=0)
            absolute = np.quantile(np.abs(residuals), LEVELS, axis=0, method="higher")
        return cls(signed=signed.astype(np.float32), absolute=absolute.astype(np.float32), count=len(residuals))

    @property
    def exact(self) -> bool:
        return len(self.absolute) == self.count

    def half_width(self, coverage: float) -> np.ndarray:
        """Split-conformal half-width of the interval of `coverage`: the ceil((n + 1) c)-th smallest
        absolute residual, (H, k) float64. Capped at the largest one when (n + 1) c > n (a
        calibration set of fewer than c / (1 - c) forecasts cannot promise more)."""
        k = min(int(np.ceil((self.count + 1) * coverage)), self.count)  # the order statistic's rank
        if self.exact:
            return self.absolute[k - 1].astype(np.float64)
        row = int(np.searchsorted(LEVELS, (k - 1) / max(self.count - 1, 1) - 1e-12))  # the grid level at or above
        return self.absolute[min(row, len(LEVELS) - 1)].astype(np.float64)

    def offsets(self, alpha: np.ndarray) -> np.ndarray:
        """Quantile offsets from the point forecast at levels alpha (the residuals' empirical
        quantiles, interpolated): (A, H, k) float64."""
        grid = np.linspace(0.0, 1.0, len(self.signed)) if self.exact else LEVELS
        position = np.interp(alpha, grid, np.arange(len(grid)))
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, len(grid) - 1)
        weight = (position - low)[:, None, None]
        table = self.signed.astype(np.float64)
        return table[low] * (1 - weight) + table[high] * weight


def gaussian_offsets(std: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Quantile offsets of a normal forecast distribution: std (H, k) -> (A, H, k)."""
    return norm.ppf(alpha)[:, None, None] * std[None]


@persist.allow
@dataclass
class CoverageTracker:
    """Online recalibration of one coverage level (see the module docstring).

    half: (H, k) the current half-widths; step: (H, k) eta, the change per miss; pending:
    (H, H, k) the point forecasts of the last H observations (row r: made r + 1 observations ago;
    NaN where none was made), whose values are still arriving; pending_half: (H, H, k) the
    half-widths their intervals had. A miss is judged against the interval that was given out,
    so the long-run miss rate of the given intervals is 1 - c.
    """

    coverage: float
    half: np.ndarray
    step: np.ndarray
    pending: np.ndarray
    pending_half: np.ndarray | None = None

    @classmethod
    def start(cls, coverage: float, half: np.ndarray, rate: float = 0.05) -> "CoverageTracker":
        """Start from the static half-widths `half` (H, k); eta = rate x that half-width."""
        H, k = half.shape
        scale = np.where(half > 0, half, np.maximum(half.max(), 1e-12))
        return cls(coverage=coverage, half=half.astype(np.float64).copy(), step=rate * scale,
                   pending=np.full((H, H, k), np.nan), pending_half=np.full((H, H, k), np.nan))

    def made(self, forecast: np.ndarray | None) -> None:
        """A forecast (H, k) was given out now, with the current half-widths."""
        self.pending[0] = np.nan if forecast is None else forecast
        self.pending_half[0] = self.half

    def observe(self, actual: np.ndarray, forecast: np.ndarray | None) -> None:
        """The targets' new values `actual` (k,) arrived; `forecast` (H, k) is the one made after
        them (None: none was made, e.g. inside a chunk update)."""
        H = len(self.half)
        steps = np.arange(H)
        if self.pending_half is None:  # a tracker saved before the given-out widths were kept
            self.pending_half = np.broadcast_to(self.half, self.pending.shape).copy()
        made = self.pending[steps, steps]  # the forecast made h + 1 observations ago, for now: (H, k)
        known = ~np.isnan(made)
        miss = (np.abs(actual[None] - made) > self.pending_half[steps, steps]) & known
        self.half = np.maximum(self.half + self.step * np.where(known, miss - (1 - self.coverage), 0.0), 0.0)
        self.pending = np.roll(self.pending, 1, axis=0)
        self.pending_half = np.roll(self.pending_half, 1, axis=0)
        self.made(forecast)


def track_one_pass(forecasts: np.ndarray, actuals: np.ndarray, tracker: CoverageTracker) -> np.ndarray:
    """The half-widths a stream's tracker would use at each origin of a one-pass backtest.

    forecasts, actuals: (N, H, k) at consecutive origins (origin i + 1 is one row after origin i;
    actuals[i, h] is the value at origin i + h + 1). The tracker is advanced as the values arrive,
    so origin i's interval uses only values up to origin i. Returns (N, H, k).
    """
    tracker = CoverageTracker(tracker.coverage, tracker.half.copy(), tracker.step, tracker.pending.copy(),
                              None if tracker.pending_half is None else tracker.pending_half.copy())
    widths = np.empty_like(forecasts)
    for i in range(len(forecasts)):
        if i == 0:
            tracker.made(forecasts[0])
        else:  # the row of origin i arrives (actuals[i - 1, 0] is its value), then origin i forecasts
            tracker.observe(actuals[i - 1, 0], forecasts[i])
        widths[i] = tracker.pending_half[0]  # the half-widths origin i's interval was given
    return widths
