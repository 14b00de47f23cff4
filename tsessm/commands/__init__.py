"""The `tsessm` sub-commands: one module each, registered in `COMMANDS` (the order of `tsessm --help`).

A command module has
    NAME                      the sub-command
    add_parser(subparsers)    adds its parser (with help=, so `tsessm --help` lists it) and returns it
    run(args) -> int          does the job and returns the exit status
    OWN_THREADS = True        (optional) it sets torch's threads itself; otherwise the CLI chooses them

Adding a parser is light (argparse only): a command imports torch, pandas, MLflow or Optuna in
`run`, so `tsessm --help` answers at once. `run` raises for errors; `errors` turns every
exception into one line and an exit status, the same way for all commands; `options` holds the
options several commands share.
"""
from tsessm.commands import backtest, bench, demo, predict, retrain, schedule, serve, stream, train, tune

COMMANDS = (train, backtest, predict, demo, stream, serve, tune, retrain, schedule, bench)

__all__ = ["COMMANDS"]
