"""`tsessm`: one parser built from the registered commands (tsessm.commands), one dispatch,
one error policy (tsessm.commands.errors)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tsessm.commands import COMMANDS
from tsessm.commands.errors import name_errors, run_command
from tsessm.threads import choose_torch_threads

EXAMPLES = """\
examples:
  tsessm demo                                     # train eSSM on ETTh1, backtest vs baselines, plot
  tsessm train ETTh1 --columns OT --horizon 24 --out essm.tsm
  tsessm backtest ETTh1 --columns OT --model essm.tsm --mode both --plot backtest.png
  tsessm predict --model essm.tsm --update new_rows.csv --out forecast.csv
  tsessm train my_series.csv --target load --model lstm --epochs 5 --out lstm.tsm
"""


def build_parser() -> argparse.ArgumentParser:
    """The `tsessm` parser: light to build (every command loads its heavy parts when it runs)."""
    parser = argparse.ArgumentParser(
        prog="tsessm", description="Streaming time-series forecasting with eSSM.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        name_errors(command.add_parser(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.NAME == args.command)
    if not getattr(command, "OWN_THREADS", False):
        choose_torch_threads()
    return run_command(command.run, args)


if __name__ == "__main__":
    sys.exit(main())
