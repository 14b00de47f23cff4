"""`tsessm retrain`: retrain a registered model, promote it only if it beats the champion.

The job and its options live in `tsessm.retrain`; this module registers them. The job prints
its own one-line outcome and returns its exit status (0 done, 1 failed, 2 config error, ...)."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.retrain import add_retrain_parser, run_retrain_command

NAME = "retrain"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    return add_retrain_parser(subparsers)


def run(args: argparse.Namespace) -> int:
    return run_retrain_command(args)
