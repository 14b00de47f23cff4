"""ARIMAForecaster: one statsmodels SARIMAX per target, fitted once, then filtered with fixed parameters.

After `fit`, each target keeps its parameters, its time-invariant state-space form at those
parameters, and the predicted state (mean a, covariance P) after the last observation:

    y_t = d + Z a_t + e_t,    a_{t+1} = c + T a_t + R eta_t

`predict` propagates a (h-step forecast = d + Z T^{h-1} a + ...), `update` runs Kalman steps
over the new rows (constant cost per row), and the backtests filter the whole series once and
forecast from every origin with one matrix product: forecast[t] = a_{t+1|t} @ W.T + g, where
W[h-1] = Z T^{h-1} and g[h-1] = d + Z (I + T + ... + T^{h-2}) c.
"""
from __future__ import annotations

from typing import Any, Sequence

import warnings
from dataclasses import dataclass, replace

import numpy as np
from statsmodels.tsa.statespace.kalman_filter import MEMORY_CONSERVE, MEMORY_NO_PREDICTED_MEAN
from scipy.stats import norm
from statsmodels.tsa.statespace.sarimax import SARIMAX
from tqdm.auto import tqdm

from tsessm import persist
from tsessm.forecasters.base import BaseForecaster
from tsessm.intervals import gaussian_offsets

TRENDS = ("n", "c")
# Keep only the predicted state means when filtering a whole series (memory stays O(T * m)).
_PREDICTED_MEAN_ONLY = MEMORY_CONSERVE & ~MEMORY_NO_PREDICTED_MEAN
KPSS_ALPHA = 0.05


def _sarimax(endog: np.ndarray, order, seasonal_order, trend: str, exog: np.ndarray | None = None) -> SARIMAX:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SARIMAX(endog, exog=exog, order=tuple(order), seasonal_order=tuple(seasonal_order), trend=trend)


@persist.allow  # a model file holds it as its fields: arrays and numbers
@dataclass
class _TargetFit:
    """One target's fitted SARIMAX: parameters, state-space form at them, and the current state."""

    order: tuple
    seasonal_order: tuple
    trend: str
    param_names: list
    params: np.ndarray
    aic: float
    converged: bool
    design: np.ndarray  # Z (m,)
    obs_intercept: float  # d
    obs_var: float  # H (0 without measurement error)
    transition: np.ndarray  # T (m, m)
    state_intercept: np.ndarray  # c (m,)
    state_noise: np.ndarray  # R Q R' (m, m)
    state: np.ndarray  # a_{n+1|n} (m,): predicted state after the last row seen
    state_cov: np.ndarray  # P_{n+1|n} (m, m)
    # Regression on exog (the future-known inputs), statsmodels' SARIMAX(exog=...): y_t = x_t beta
    # + an ARIMA process, which everything above describes (its parameters exclude beta).
    exog_coef: np.ndarray | None = None  # beta (F,)
    exog_names: list | None = None

    def residual(self, ys: np.ndarray, exog: np.ndarray | None) -> np.ndarray:
        """y - x beta: the series the ARIMA part filters."""
        return ys if self.exog_coef is None else ys - exog @ self.exog_coef

    def model(self, endog: np.ndarray) -> SARIMAX:
        """The statsmodels model of this spec on `endog`, with the parameters set."""
        mod = _sarimax(endog, self.order, self.seasonal_order, self.trend)
        mod.update(self.params)
        return mod

    def predicted_states(self, endog: np.ndarray) -> np.ndarray:
        """Filter `endog` from the model's initial state: a_{t+1|t} for every row t, (T, m)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.model(endog).ssm.filter(conserve_memory=_PREDICTED_MEAN_ONLY)
        return out.predicted_state[:, 1:].T

    def horizon_maps(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """W (H, m), g (H,) such that the forecast from predicted state a is a @ W.T + g."""
        m = len(self.design)
        W, g = np.empty((horizon, m)), np.empty(horizon)
        row, offset = self.design.copy(), self.obs_intercept  # Z T^h, d + Z (I + ... + T^{h-1}) c
        for h in range(horizon):
            W[h], g[h] = row, offset
            offset = offset + row @ self.state_intercept
            row = row @ self.transition
        return W, g

    def forecast(self, horizon: int) -> np.ndarray:
        W, g = self.horizon_maps(horizon)
        return W @ self.state + g

    def forecast_std(self, horizon: int, state_cov: np.ndarray | None = None) -> np.ndarray:
        """Standard deviations of the 1..horizon-step forecasts from the predicted state
        covariance (default: after the last row seen): sqrt(Z P_h Z' + H), P_{h+1} = T P_h T' + RQR'."""
        P = self.state_cov if state_cov is None else state_cov
        out = np.empty(horizon)
        for h in range(horizon):
            out[h] = self.design @ P @ self.design + self.obs_var
            P = self.transition @ P @ self.transition.T + self.state_noise
        return np.sqrt(np.maximum(out, 0.0))

    def window_cov(self, lookback: int) -> np.ndarray:
        """The predicted state covariance after filtering `lookback` rows from the initial state
        (the windowed backtest's; it does not depend on the rows' values)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.model(np.zeros(lookback)).ssm.filter()
        return np.array(out.predicted_state_cov[:, :, -1])

    def absorbed(self, ys: np.ndarray, exog: np.ndarray | None = None) -> "_TargetFit":
        """This fit with the Kalman filter advanced over `ys` (parameters unchanged)."""
        ys = self.residual(ys, exog)
        Z, T, c, d = self.design, self.transition, self.state_intercept, self.obs_intercept
        a, P = self.state, self.state_cov
        for y in ys:
            PZ = P @ Z
            F = Z @ PZ + self.obs_var
            K = T @ PZ / F  # gain of the predicted state
            a = c + T @ a + K * (y - d - Z @ a)
            P = T @ P @ T.T + self.state_noise - np.outer(K, K) * F
            P = (P + P.T) / 2
        return replace(self, state=a, state_cov=P)


def _estimate(y: np.ndarray, order, seasonal_order, trend: str, start_params=None,
              exog: np.ndarray | None = None) -> _TargetFit:
    """Maximum likelihood fit of one SARIMAX on `y` (statsmodels warnings silenced), with a
    regression on `exog` (T, F) when given."""
    exog = None if exog is None or exog.shape[1] == 0 else exog
    mod = _sarimax(y, order, seasonal_order, trend, exog)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mod.fit(start_params=start_params if exog is None else None, disp=False)
    params = np.asarray(res.params, dtype=np.float64)
    if not np.all(np.isfinite(params)):
        raise FloatingPointError(f"SARIMAX{tuple(order)} fit gave non-finite parameters")
    beta = exog_names = None
    if exog is not None:  # the ARIMA part on y - x beta: the same model without the regression
        is_exog = np.isin(mod.param_names, mod.exog_names)
        beta, exog_names, params = params[is_exog], list(mod.exog_names), params[~is_exog]
        mod = _sarimax(y - exog @ beta, order, seasonal_order, trend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            filtered = mod.filter(params)
        predicted, predicted_cov = filtered.predicted_state, filtered.predicted_state_cov
    else:
        predicted, predicted_cov = res.predicted_state, res.predicted_state_cov
    mod.update(params)
    Z, d, H, T, c, R, Q = (_time_invariant(mod.ssm, name) for name in _SYSTEM)
    return _TargetFit(
        order=tuple(int(v) for v in order),
        seasonal_order=tuple(int(v) for v in seasonal_order),
        trend=trend,
        param_names=list(mod.param_names),
        params=params,
        aic=float(res.aic),
        converged=bool((res.mle_retvals or {}).get("converged", True)),
        design=Z[0],
        obs_intercept=float(d[0]),
        obs_var=float(H[0, 0]),
        transition=T,
        state_intercept=c,
        state_noise=R @ Q @ R.T,
        state=np.array(predicted[:, -1]),
        state_cov=np.array(predicted_cov[:, :, -1]),
        exog_coef=beta,
        exog_names=exog_names,
    )


# State-space matrices, with their number of dimensions when time-invariant.
_SYSTEM = {"design": 2, "obs_intercept": 1, "obs_cov": 2, "transition": 2, "state_intercept": 1, "selection": 2,
           "state_cov": 2}


def _time_invariant(ssm, name: str) -> np.ndarray:
    """One system matrix without its time axis; raises if it changes over time."""
    matrix = np.array(ssm[name], dtype=np.float64)
    if matrix.ndim > _SYSTEM[name]:
        if not np.all(matrix == matrix[..., :1]):
            raise ValueError(f"the SARIMAX {name} varies over time; only time-invariant models are supported")
        matrix = matrix[..., 0]
    return matrix


def _choose_d(y: np.ndarray, max_d: int) -> int:
    """Differences needed for stationarity by repeated KPSS tests (level, 5%), as auto.arima does."""
    from statsmodels.tsa.stattools import kpss

    d, series = 0, y
    while d < max_d and len(series) > 10:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # p-values outside the table are clipped, with a warning
            p_value = kpss(series, regression="c", nlags="auto")[1]
        if p_value >= KPSS_ALPHA:
            break
        d, series = d + 1, np.diff(series)
    return d


def _is_int_tuple(value, n: int) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == n
        and all(not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= 0 for v in value)
    )


class ARIMAForecaster(BaseForecaster):
    """(Seasonal) ARIMA per target column, on statsmodels' SARIMAX, with fixed parameters after fit.

    Univariate: one model per target column, with the `future_covariates` and calendar features
    as SARIMAX exog; other input columns are ignored (with a warning), as is `y_val`. Intervals
    are Gaussian, from the Kalman covariance (statsmodels' `get_forecast().conf_int()`). After `fit`, `update` only advances each model's Kalman filter with
    the fitted parameters (constant cost per row); nothing is re-estimated unless `refit_every`
    is set. Backtests use the fitted parameters as they are (no refit per window).

    Args:
        horizon: steps forecast at once.
        target: column name(s) to forecast; None = every column.
        order: (p, d, q), or "auto": d by repeated KPSS tests (5%, at most max_order[1]
            differences), then (p, q) by AIC over the grid p <= max_order[0], q <= max_order[2]
            (AIC is not comparable across d, so d is not part of the AIC grid).
        seasonal_order: (P, D, Q, s); s >= 2 when P, D or Q is non-zero.
        trend: "c" (a constant; a drift when d + D > 0) or "n" (none). Time trends are not
            supported: their forecast depends on the absolute row number.
        max_order: (max p, max d, max q) for order="auto".
        refit_every: None (never re-estimate), or re-estimate the parameters (same order, warm
            started) on the full history seen so far after every `refit_every` rows absorbed by
            `update`. The refits happen at the same rows however the updates are chunked.
        missing: "error", "ffill" or "interpolate" for gaps and NaN in the input.
        freq: the pandas offset alias of the series' frequency ("MS", "QS-OCT", "B", "h", ...);
            None infers it (`pd.infer_freq`).
        future_covariates: columns of `X` known ahead (a plan, a forecast): they enter SARIMAX as exog
            (regression with ARIMA errors); `predict(fh, X)` takes their values at the forecast steps. Other columns of `X` are past inputs.
        calendar: known-ahead features made from the timestamps (`tsessm.calendar`), e.g.
            ["hour", "dayofweek"] or {"month": "onehot", "holiday": "US"}.
        verbose: 0 silences the progress bar of the order search.
        random_state: unused (the fit is deterministic); kept for a uniform interface.

    Backtests: `one-pass` filters the whole series once from the initial state and forecasts from
    every row (exact). `windowed` is also exact: for each origin the filter starts from the
    model's initial state at the first of the `lookback` rows. The state after a window is an
    affine function of the window's rows (the covariance recursion does not depend on the data),
    so that map is measured once with `lookback + 1` statsmodels filter runs on probe series and
    applied to every window with one matrix product.
    """

    INTERVALS = "gaussian"  # from the Kalman covariance, as statsmodels' get_forecast().conf_int()

    def __init__(
        self,
        horizon: int = 24,
        target=None,
        order=(2, 0, 1),
        seasonal_order=(0, 0, 0, 0),
        trend: str = "c",
        max_order=(3, 1, 3),
        refit_every: int | None = None,
        missing: str = "error",
        freq: str | None = None,
        future_covariates: Sequence[str] | None = None,
        calendar: Any = None,
        verbose: int = 1,
        random_state: int | None = None,
    ) -> None:
        self.horizon = horizon
        self.target = target
        self.order = order
        self.seasonal_order = seasonal_order
        self.trend = trend
        self.max_order = max_order
        self.refit_every = refit_every
        self.missing = missing
        self.freq = freq
        self.future_covariates = future_covariates
        self.calendar = calendar
        self.verbose = verbose
        self.random_state = random_state

    # ----- checks ------------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        if not (isinstance(self.order, str) and self.order == "auto") and not _is_int_tuple(self.order, 3):
            raise ValueError(f"order must be 'auto' or (p, d, q) of non-negative integers, got {self.order!r}")
        if not _is_int_tuple(self.seasonal_order, 4):
            raise ValueError(
                f"seasonal_order must be (P, D, Q, s) of non-negative integers, got {self.seasonal_order!r}"
            )
        P, D, Q, s = self.seasonal_order
        if (P or D or Q) and s < 2:
            raise ValueError(f"seasonal_order needs a period s >= 2 when P, D or Q > 0, got {self.seasonal_order!r}")
        if self.trend not in TRENDS:
            raise ValueError(f"trend must be one of {TRENDS}, got {self.trend!r}")
        if not _is_int_tuple(self.max_order, 3):
            raise ValueError(f"max_order must be (p, d, q) of non-negative integers, got {self.max_order!r}")
        r = self.refit_every
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1):
            raise ValueError(f"refit_every must be a positive integer or None, got {r!r}")

    def _orders(self) -> tuple[tuple, tuple]:
        return (tuple(self.max_order) if self.order == "auto" else tuple(self.order)), tuple(self.seasonal_order)

    def _min_length(self) -> int:
        (p, d, q), (P, D, Q, s) = self._orders()
        n_params = p + q + P + Q + 2  # + intercept + variance
        return max(10, d + s * D + max(p + s * P, q + s * Q) + 2 * n_params)

    # ----- fit ---------------------------------------------------------------------------
    def _fit(self, values: np.ndarray, target_idx: list[int], val_values: np.ndarray | None) -> None:
        ys, exog = values[:, target_idx], self._exog(values)
        ignored = [i for i in range(values.shape[1]) if i not in target_idx and i not in self.future_idx_]
        if ignored:
            warnings.warn(f"ARIMAForecaster ignores {len(ignored)} input column(s) that are neither targets nor "
                          f"future_covariates (columns {ignored} of the fit): only future_covariates and calendar "
                          f"features enter SARIMAX, as exog", UserWarning, stacklevel=4)
        if self.order == "auto":
            fits, scores = self._search(ys, exog)
        else:
            fits = [_estimate(ys[:, j], self.order, self.seasonal_order, self.trend, exog=exog)
                    for j in range(ys.shape[1])]
            scores = None
        self.fits_ = fits
        self.target_idx_ = list(target_idx)
        self.order_scores_ = scores
        self.observed_ = values[:, target_idx + self.future_idx_].copy() if self.refit_every is not None else None
        self.since_refit_ = 0

    def _exog(self, values: np.ndarray) -> np.ndarray | None:
        """The future-known columns of `values` (future covariates, calendar): (T, F), or None."""
        idx = getattr(self, "future_idx_", None) or []
        return values[:, idx] if idx else None

    def _future_effect(self, future: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return np.stack([future @ fit.exog_coef for fit in self.fits_], axis=1)

    # ----- uncertainty: Gaussian, from the Kalman covariance (statsmodels' conf_int) ---------------
    def forecast_std(self, lookback: int | None = None) -> np.ndarray:
        """(H, k) standard deviations of the forecasts after the last row seen, or (lookback given)
        of a windowed forecast from `lookback` rows."""
        return np.stack([fit.forecast_std(self.horizon, None if lookback is None else fit.window_cov(lookback))
                         for fit in self.fits_], axis=1)

    def static_half_width(self, coverage: float, lookback: int | None = None) -> np.ndarray:
        return norm.ppf((1 + coverage) / 2) * self.forecast_std(lookback)

    def quantile_offsets(self, alpha: np.ndarray, lookback: int | None = None) -> np.ndarray:
        return gaussian_offsets(self.forecast_std(lookback), alpha)

    def _search(self, ys: np.ndarray, exog: np.ndarray | None) -> tuple[list[_TargetFit], list[dict]]:
        """order="auto": d by KPSS, then the (p, q) with the lowest AIC, per target."""
        max_p, max_d, max_q = self.max_order
        grid = [(p, q) for p in range(max_p + 1) for q in range(max_q + 1)]
        fits, scores = [], []
        bar = tqdm(total=len(grid) * ys.shape[1], desc="ARIMA order", disable=not self.verbose, leave=False)
        with bar:
            for j in range(ys.shape[1]):
                d = _choose_d(ys[:, j], max_d)
                best, aics = None, {}
                for p, q in grid:
                    bar.update()
                    try:
                        fit = _estimate(ys[:, j], (p, d, q), self.seasonal_order, self.trend, exog=exog)
                    except (np.linalg.LinAlgError, ValueError, FloatingPointError):
                        continue
                    aics[(p, d, q)] = fit.aic
                    if np.isfinite(fit.aic) and (best is None or fit.aic < best.aic):
                        best = fit
                if best is None:
                    raise RuntimeError(f"no ARIMA order in the grid up to {self.max_order} could be fitted")
                fits.append(best)
                scores.append(aics)
        return fits, scores

    @property
    def orders_(self) -> list[tuple[tuple, tuple]]:
        """((p, d, q), (P, D, Q, s)) per target."""
        return [(f.order, f.seasonal_order) for f in self.fits_]

    @property
    def params_(self) -> list[dict[str, float]]:
        """The fitted parameters per target, by statsmodels' names."""
        return [{**dict(zip(f.exog_names or [], np.atleast_1d(f.exog_coef).tolist() if f.exog_names else [])),
                 **dict(zip(f.param_names, f.params.tolist()))} for f in self.fits_]

    # ----- predict / update --------------------------------------------------------------
    def _predict(self) -> np.ndarray:
        return np.stack([fit.forecast(self.horizon) for fit in self.fits_], axis=1)

    def _update(self, values: np.ndarray) -> None:
        k, idx = len(self.target_idx_), getattr(self, "future_idx_", None) or []
        rows = values[:, self.target_idx_ + idx]  # the targets, then the exog columns
        fits, history, since = list(self.fits_), self.observed_, self.since_refit_
        start = 0
        while start < len(rows):
            take = len(rows) - start if self.refit_every is None else min(len(rows) - start, self.refit_every - since)
            chunk = rows[start : start + take]
            if self.refit_every is not None:
                history, since = np.vstack([history, chunk]), since + take
            if self.refit_every is not None and since == self.refit_every:
                exog = history[:, k:] if idx else None
                fits = [
                    _estimate(history[:, j], fit.order, fit.seasonal_order, fit.trend, start_params=fit.params,
                              exog=exog)
                    for j, fit in enumerate(fits)
                ]
                since = 0
            else:
                fits = [fit.absorbed(chunk[:, j], chunk[:, k:] if idx else None) for j, fit in enumerate(fits)]
            start += take
        self.fits_, self.observed_, self.since_refit_ = fits, history, since

    # ----- backtests ---------------------------------------------------------------------
    def _forecast_one_pass(self, values: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        origins = np.arange(len(values)) if origins is None else np.asarray(origins)
        exog = self._exog(values)
        out = np.empty((len(origins), self.horizon, len(self.fits_)))
        for j, fit in enumerate(self.fits_):
            W, g = fit.horizon_maps(self.horizon)
            series = fit.residual(values[:, self.target_idx_[j]], exog)
            out[:, :, j] = fit.predicted_states(series)[origins] @ W.T + g
        return out + self._exog_ahead(exog, origins)

    def _exog_ahead(self, exog: np.ndarray | None, origins: np.ndarray) -> np.ndarray | float:
        """x_{t+h} beta for every origin t and step h: (N, H, k); 0 without exog."""
        if exog is None:
            return 0.0
        ahead = exog[origins[:, None] + np.arange(1, self.horizon + 1)]  # (N, H, F)
        return np.stack([ahead @ fit.exog_coef for fit in self.fits_], axis=-1)

    def _forecast_windows(self, values: np.ndarray, origins: np.ndarray, lookback: int) -> np.ndarray:
        origins = np.asarray(origins)
        for fit in self.fits_:
            n_diff = fit.order[1] + fit.seasonal_order[1] * fit.seasonal_order[3]
            if lookback <= n_diff:
                raise ValueError(f"lookback={lookback} must exceed the {n_diff} rows that differencing consumes")
        exog = self._exog(values)
        out = np.empty((len(origins), self.horizon, len(self.fits_)))
        for j, fit in enumerate(self.fits_):
            A, b = _window_map(fit, lookback)
            W, g = fit.horizon_maps(self.horizon)
            series = fit.residual(values[:, self.target_idx_[j]], exog)
            windows = np.lib.stride_tricks.sliding_window_view(series, lookback)
            out[:, :, j] = (windows[origins - lookback + 1] @ A.T + b) @ W.T + g
        return out + self._exog_ahead(exog, origins)


def _window_map(fit: _TargetFit, lookback: int) -> tuple[np.ndarray, np.ndarray]:
    """A (m, L), b (m,): the predicted state after filtering L rows y from the initial state is A y + b.

    The covariance recursion does not depend on the data, so the filter mean is affine in y;
    b is the state after a zero series, A[:, i] the change when row i is one.
    """
    def run(y: np.ndarray) -> np.ndarray:  # a fresh model each time: statsmodels caches its filter's data
        return fit.predicted_states(y)[-1]

    b = run(np.zeros(lookback))
    A = np.empty((len(b), lookback))
    for i in range(lookback):
        A[:, i] = run(np.eye(1, lookback, i)[0]) - b
    return A, b
