"""The time grid of a stream: how many model steps lie between two timestamps (runner and reload)."""
from __future__ import annotations

from typing import Any

import pandas as pd


def steps_between(last: pd.Timestamp, t: pd.Timestamp, freq: Any) -> int | None:
    """k with t == last + k * freq (t after last), or None when t is off that grid."""
    try:
        step = pd.Timedelta(freq).value
    except (TypeError, ValueError):  # a calendar offset (months, business days, ...)
        step = 0
    if step > 0:
        k, rest = divmod((t - last).value, step)
        return int(k) if rest == 0 else None
    k, current = 0, last
    while current < t:
        k += 1
        current = last + k * freq
    return k if current == t else None
