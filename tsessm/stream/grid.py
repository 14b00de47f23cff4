"""The time grid of a stream: how many model steps lie between two timestamps (runner and reload)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from tsessm.data import as_offset, fixed_nanos


def steps_between(last: pd.Timestamp, t: pd.Timestamp, freq: Any) -> int | None:
    """k with t == last + k * freq (t after last), or None when t is off that grid. `freq`: a
    pandas offset (fixed steps by nanoseconds, UTC for aware times; calendar steps such as months
    or business days on their grid) or a Timedelta (old model files)."""
    offset = as_offset(freq)
    step = fixed_nanos(offset, last.tz)
    if step is not None:
        k, rest = divmod((t - last).value, step)
        return int(k) if rest == 0 else None
    if t <= last:
        return 0 if t == last else None
    if not offset.is_on_offset(last):  # not anchored: step from `last` itself
        k, current = 0, last
        while current < t:
            k += 1
            current = last + k * offset
        return k if current == t else None
    grid = pd.date_range(last, t, freq=offset)
    return len(grid) - 1 if grid[-1] == t else None
