"""Calendar features: future-known covariates made from the timestamps alone.

`calendar=` on a forecaster names them. A list of feature names uses each one's default
encoding; a dict maps a name to its encoding ("fourier" or "onehot"), and "holiday" to a country
code of the `holidays` package:

    calendar=["hour", "dayofweek"]
    calendar={"hour": "fourier", "dayofweek": "onehot", "month": "fourier", "holiday": "US"}

Fourier terms are sin/cos pairs of the feature's cycle (a smooth shape with few columns); one-hot
terms drop the first level (no column is the sum of the others, so a model with an intercept,
ARIMA's exog included, stays identifiable). The holiday flag is 1.0 on the country's public
holidays.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

_DAY_NS, _HOUR_NS = 86_400 * 10**9, 3_600 * 10**9


def _days(ns: np.ndarray) -> np.ndarray:
    return ns.astype("datetime64[ns]").astype("datetime64[D]")


# feature -> (its value from local wall-clock int64 nanoseconds, the cycle length, the first value,
# default encoding, harmonics). Plain numpy: `observe` makes them for one timestamp per row.
FEATURES = {
    "hour": (lambda ns: (ns % _DAY_NS) / _HOUR_NS, 24, 0, "fourier", 3),
    "dayofweek": (lambda ns: (ns // _DAY_NS + 3) % 7, 7, 0, "onehot", 2),  # 1970-01-01 was a Thursday (3)
    "dayofmonth": (lambda ns: (_days(ns) - _days(ns).astype("datetime64[M]")).astype(np.int64) + 1, 31, 1,
                   "fourier", 2),
    "month": (lambda ns: _days(ns).astype("datetime64[M]").astype(np.int64) % 12 + 1, 12, 1, "fourier", 2),
}
ENCODINGS = ("fourier", "onehot")
PREFIX = "cal_"


def parse_calendar(spec: Any) -> dict[str, str]:
    """The `calendar` parameter as {feature: encoding or country}; {} for None. Raises ValueError
    naming `calendar` for anything else."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, (list, tuple)):
        if "holiday" in spec:
            raise ValueError("calendar: 'holiday' needs a country, e.g. calendar={'holiday': 'US', ...}")
        spec = {name: FEATURES[name][3] if name in FEATURES else None for name in spec}
    if not isinstance(spec, dict):
        raise TypeError(f"calendar must be None, a list of feature names or a dict, got {spec!r}")
    allowed = [*FEATURES, "holiday"]
    for name, how in spec.items():
        if name not in allowed:
            raise ValueError(f"calendar: unknown feature {name!r}; choose from {allowed}")
        if name == "holiday":
            _holiday_dates(how, (2000,))  # names a bad country now, not at the first forecast
        elif how not in ENCODINGS:
            raise ValueError(f"calendar: {name!r} takes an encoding in {ENCODINGS}, got {how!r}")
    return dict(spec)


def calendar_columns(spec: dict[str, str]) -> list[str]:
    """The column names `calendar_features` makes for `spec`, in order."""
    columns = []
    for name, how in spec.items():
        if name == "holiday":
            columns.append(f"{PREFIX}holiday_{how}")
        elif how == "fourier":
            harmonics = FEATURES[name][4]
            columns += [f"{PREFIX}{name}_{f}{k}" for k in range(1, harmonics + 1) for f in ("sin", "cos")]
        else:
            _, cycle, first, _, _ = FEATURES[name]
            columns += [f"{PREFIX}{name}_{v}" for v in range(first + 1, first + cycle)]
    return columns


def calendar_features(index: pd.DatetimeIndex, spec: dict[str, str]) -> np.ndarray:
    """The features of `spec` at every timestamp: (len(index), len(calendar_columns(spec))) float64.
    Local time for a time-zone-aware index (the hour people live by)."""
    if not isinstance(index, pd.DatetimeIndex):
        raise ValueError("calendar features need timestamps (a DatetimeIndex or a time column), "
                         "not integer steps; pass calendar=None for numpy input")
    local = index.tz_localize(None) if index.tz is not None else index  # the wall clock
    ns = local.as_unit("ns").asi8
    blocks = []
    for name, how in spec.items():
        if name == "holiday":
            days = _days(ns)
            years = tuple(sorted(set((days.astype("datetime64[Y]").astype(np.int64) + 1970).tolist())))
            flags = np.isin(days, _holiday_dates(how, years).values.astype("datetime64[D]"))
            blocks.append(flags.astype(np.float64)[:, None])
            continue
        value_of, cycle, first, _, harmonics = FEATURES[name]
        values = np.asarray(value_of(ns), dtype=np.float64)
        if how == "fourier":
            angle = 2 * np.pi * (values - first) / cycle
            blocks += [f(k * angle)[:, None] for k in range(1, harmonics + 1) for f in (np.sin, np.cos)]
        else:
            levels = np.arange(first + 1, first + cycle)
            blocks.append((np.floor(values)[:, None] == levels[None]).astype(np.float64))
    return np.hstack(blocks) if blocks else np.empty((len(index), 0))


@functools.lru_cache(maxsize=256)
def _holiday_dates(country: Any, years: tuple[int, ...]) -> pd.DatetimeIndex:
    """The public holidays of `country` in `years` (cached: a stream asks for the same ones often)."""
    import holidays  # a large package of country tables: loaded only by models with a holiday flag

    try:
        return pd.DatetimeIndex(list(holidays.country_holidays(country, years=list(years))))
    except (NotImplementedError, KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"calendar: holiday country {country!r} is not one the `holidays` package knows "
                         f"(e.g. 'US', 'DE', 'GB')") from exc
