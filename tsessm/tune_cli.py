"""The names `tsessm tune` had here; the command lives in `tsessm.commands.tune`. Kept until the
callers (tests/test_tuning.py) import from there."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.commands import tune
from tsessm.commands.errors import run_command


def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `tune` on sub-command parsers; dispatch with run_tune_command(args)."""
    return tune.add_parser(subparsers)


def run_tune_command(args: argparse.Namespace) -> int:
    """Run `tsessm tune` from parsed arguments under the CLI's error policy; the exit status."""
    return run_command(tune.run, args, "tsessm tune")
