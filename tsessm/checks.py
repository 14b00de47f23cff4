"""Argument checks shared by every layer of the package (no pandas, no torch)."""
from __future__ import annotations

from numbers import Integral


def positive_int(name: str, value: object) -> int:
    """`value` as an int >= 1 (numpy integers welcome, bools not), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
