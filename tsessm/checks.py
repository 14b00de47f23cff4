"""Argument checks shared by every layer of the package (no pandas, no torch)."""
from __future__ import annotations

import argparse
from numbers import Integral


def positive_int(name: str, value: object) -> int:
    """`value` as an int >= 1 (numpy integers welcome, bools not), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----- argparse types: the same checks on command-line text; argparse turns the error into exit 2
def positive_int_arg(text: str) -> int:
    """`type=` for a flag that takes a count (>= 1): "0", "-3" or "x" are usage errors."""
    try:
        return positive_int("value", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def positive_float_arg(text: str) -> float:
    """`type=` for a flag that takes a positive number of seconds or the like (NaN and <= 0 refused)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def pairs(items: list[str], flag: str) -> dict[str, str]:
    """Repeated NAME=VALUE flags (--set, --space) as a dict of text; a ValueError naming `flag` else."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
