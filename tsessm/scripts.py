"""One sub-command run as its own script (`python -m tsessm.retrain`, pipelines/*.py): a small
bottom module, so the commands and `tsessm.cli` do not import each other."""
from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence


def run_script(prog: str, description: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
               run: Callable[[argparse.Namespace], int], argv: Sequence[str] | None = None,
               errors: tuple[type[Exception], ...] = ()) -> int:
    """One sub-command run as its own script (`python -m tsessm.retrain`, pipelines/*.py).

    `errors`: exceptions that mean bad input: one line on stderr and exit 2 instead of a traceback.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except errors as exc:
        parser.exit(2, f"{prog}: error: {exc}\n")


def suite_main(module: Any, prog: str, argv: list[str] | None = None) -> int:
    """A suite run as a script: its own parser; bad input is one line on stderr and exit 2."""
    return run_script(prog, module.__doc__, module.add_arguments, module.run, argv,
                      errors=(ValueError, FileNotFoundError))
