"""Reading one record: its series id, timestamp and values, checked; a malformed one raises BadRecord."""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:$|[T ]\d{2}:\d{2})")


class BadRecord(Exception):
    """A malformed record: the message says which field and why."""


FUTURE_FIELD = "future"  # a record's known-ahead values: {"promo": [next `horizon` values], ...}


def known_ahead(fields: dict, names: Sequence[str], horizon: int) -> np.ndarray | None:
    """The record's `future` field as (horizon, len(names)) floats, or None when the model needs
    none. A model with future covariates needs, in every record, their values at the `horizon`
    steps after the record's time: {"future": {"promo": [v1, ..., vH]}} (JSON records)."""
    if not names:
        return None
    given = fields.get(FUTURE_FIELD)
    if not isinstance(given, dict):
        raise BadRecord(f"field {FUTURE_FIELD!r} must hold the next {horizon} values of {list(names)}, "
                        f'e.g. {{"{FUTURE_FIELD}": {{"{names[0]}": [...{horizon} numbers]}}}}, got {given!r}')
    out = np.empty((horizon, len(names)))
    for j, name in enumerate(names):
        values = given.get(name)
        if not isinstance(values, list) or len(values) != horizon:
            raise BadRecord(f"field {FUTURE_FIELD!r}: {name!r} must be a list of the next {horizon} values, got {values!r}")
        out[:, j] = [number(f"{FUTURE_FIELD}.{name}", v) for v in values]
    return out


def convert(fields: dict, *, time_col: str, id_col: str | None, columns: Sequence[str],
            tz: Any) -> tuple[Any, pd.Timestamp, dict[str, float]]:
    """(series id or None, time, {column: value}) from a record's fields; raises BadRecord."""
    wanted = ([id_col] if id_col else []) + [time_col] + list(columns)
    missing = [name for name in wanted if name not in fields]
    if missing:
        raise BadRecord("missing field" + ("s " if len(missing) > 1 else " ") + ", ".join(map(repr, missing)))
    sid = None
    if id_col:
        sid = fields[id_col]
        if isinstance(sid, bool) or not isinstance(sid, (str, int)) or sid == "":
            raise BadRecord(f"field {id_col!r} must be a non-empty string or an integer, got {sid!r}")
    ts = timestamp(time_col, fields[time_col], tz)
    values = {c: number(c, fields[c]) for c in columns}
    return sid, ts, values


def timestamp(name: str, value: Any, tz: Any) -> pd.Timestamp:
    """An ISO 8601 timestamp in the model's time zone `tz` (None: naive); raises BadRecord."""
    if not isinstance(value, str) or not _ISO_DATE.match(value.strip()):
        raise BadRecord(f"field {name!r} is not an ISO 8601 timestamp ({value!r})")
    try:
        ts = pd.Timestamp(value.strip())
    except (ValueError, OverflowError) as exc:
        raise BadRecord(f"field {name!r} is not a valid timestamp ({value!r}: {exc})") from None
    if ts is pd.NaT:
        raise BadRecord(f"field {name!r} is not a valid timestamp ({value!r})")
    if (ts.tz is None) != (tz is None):
        has = "has no time zone" if ts.tz is None else "has a time zone"
        want = f"in {tz}" if tz is not None else "without a time zone"
        raise BadRecord(f"field {name!r} {has} ({value!r}); the model's timestamps are {want}")
    return ts.tz_convert(tz) if tz is not None else ts


def number(name: str, value: Any) -> float:
    """A finite float from a JSON number or a CSV string; raises BadRecord."""
    if value is None:
        raise BadRecord(f"field {name!r} is null")
    if isinstance(value, bool):
        raise BadRecord(f"field {name!r} is not a number ({value!r})")
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:
            raise BadRecord(f"field {name!r} is out of the float range") from None
    elif isinstance(value, str):
        if not value.strip():
            raise BadRecord(f"field {name!r} is empty")
        try:
            result = float(value)
        except ValueError:
            raise BadRecord(f"field {name!r} is not a number ({value!r})") from None
    else:
        raise BadRecord(f"field {name!r} is not a number ({type(value).__name__})")
    if not math.isfinite(result):
        raise BadRecord(f"field {name!r} is {value!r}, not a finite number")
    return result
