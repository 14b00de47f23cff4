"""`tsessm bench accuracy|speed`: the benchmark suites (their options: tsessm.bench.options)."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.bench import options
from tsessm.commands.errors import UsageError, name_errors

NAME = "bench"
HELP = "benchmarks: accuracy vs S4 and the baselines, speed and size"
OWN_THREADS = True  # the benchmarks set torch's threads themselves (--threads)

SUITES = (
    ("accuracy", options.add_accuracy_arguments, "the Informer-protocol grid -> results/accuracy.csv + table + plots",
     options.ACCURACY_HELP),
    ("speed", options.add_speed_arguments, "speed and size ratios measured side by side -> results/speed.json",
     options.SPEED_HELP),
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP)
    suites = p.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, add_arguments, text, description in SUITES:
        add_arguments(name_errors(suites.add_parser(name, help=text, description=description)))
    return p


def run(args: argparse.Namespace) -> int:
    from tsessm.bench import accuracy, speed  # the suites load torch and the jobs: only when one runs

    module = accuracy if args.suite == "accuracy" else speed
    try:
        return module.run(args)
    except (ValueError, FileNotFoundError) as exc:
        # a suite's bad option value or missing file is a bad argument, as when run as a script (exit 2)
        raise UsageError(str(exc)) from exc
