"""`tsessm schedule`: run `tsessm retrain` on a cron schedule until SIGINT/SIGTERM.

The scheduler and its options live in `tsessm.schedule`; this module registers them."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.schedule import add_schedule_parser, run_schedule_command

NAME = "schedule"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    return add_schedule_parser(subparsers)


def run(args: argparse.Namespace) -> int:
    return run_schedule_command(args)
