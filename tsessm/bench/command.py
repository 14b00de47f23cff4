"""`tsessm bench accuracy|speed`: the benchmark suites from the command line."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tsessm.bench import options


def add_bench_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmarks: accuracy vs S4 and the baselines, speed and size")
    suites = p.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, add_arguments, text, description in (
            ("accuracy", options.add_accuracy_arguments, "the Informer-protocol grid -> results/accuracy.csv + table + plots",
             options.ACCURACY_HELP),
            ("speed", options.add_speed_arguments, "speed and size ratios measured side by side -> results/speed.json",
             options.SPEED_HELP)):
        add_arguments(suites.add_parser(name, help=text, description=description))


def run_bench_command(args: argparse.Namespace) -> int:
    from tsessm.bench import accuracy, speed  # the suites load torch and the jobs: only when one runs

    module = accuracy if args.suite == "accuracy" else speed
    try:
        return module.run(args)
    except (ValueError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"tsessm bench {args.suite}: error: {exc}", file=sys.stderr)
        return 2
