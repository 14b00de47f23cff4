"""`tsessm bench accuracy|speed`: the benchmark suites from the command line."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def add_bench_parser(subparsers: Any) -> None:
    from tsessm.bench import accuracy, speed

    p = subparsers.add_parser("bench", help="benchmarks: accuracy vs S4 and the baselines, speed and size")
    # the suites' modules load torch and the jobs: only when `bench` itself is parsed
    suites = p.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, module, text in (("accuracy", accuracy, "the Informer-protocol grid -> results/accuracy.csv + table + plots"),
                               ("speed", speed, "speed and size ratios measured side by side -> results/speed.json")):
        sp = suites.add_parser(name, help=text, description=module.__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sp)


def suite_main(module: Any, prog: str, argv: list[str] | None = None) -> int:
    """A suite run as a script: its own parser; bad input is one line on stderr and exit 2."""
    from tsessm.cli import run_script

    return run_script(prog, module.__doc__, module.add_arguments, module.run, argv,
                      errors=(ValueError, FileNotFoundError))


def run_bench_command(args: argparse.Namespace) -> int:
    from tsessm.bench import accuracy, speed

    module = accuracy if args.suite == "accuracy" else speed
    try:
        return module.run(args)
    except (ValueError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"tsessm bench {args.suite}: error: {exc}", file=sys.stderr)
        return 2
