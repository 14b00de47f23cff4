"""The one error-to-exit-code policy of every `tsessm` command.

    0  the command did its job
    2  the command line is wrong: argparse's own usage errors, a `UsageError` a command raises
       for a bad argument the parser cannot see (a flag that needs another, a model or checkpoint
       that cannot be used), and a `ModelFileError` (a damaged, foreign or pickled model file)
    1  the run failed on its input: ValueError (sklearn's NotFittedError is one), TypeError,
       FileNotFoundError, StreamingNotSupported, FloatingPointError -> "PROG: error: MESSAGE";
       anything else is a bug or a broken environment -> "PROG: internal error: TYPE: MESSAGE
       (rerun with --debug)"

Every message is one line on stderr with credentials masked; `--debug` re-raises instead, so the
traceback shows. A command may also stop with a status of its own (the stream's bad record: 1)
after printing its one line with `print_error`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from tsessm.errors import StreamingNotSupported
from tsessm.redact import mask

BAD_INPUT = (ValueError, TypeError, FileNotFoundError, StreamingNotSupported, FloatingPointError)

# Where a command parser keeps the name its errors are reported under ("tsessm bench accuracy").
PROG_DEST = "error_prog"


class UsageError(Exception):
    """A bad argument found after parsing: one line and exit 2, like argparse's own errors."""


def name_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Report the errors of the commands parsed by `parser` under its prog (the deepest parser wins)."""
    parser.set_defaults(**{PROG_DEST: parser.prog})
    return parser


def print_error(prog: str, message: object) -> None:
    print(mask(f"{prog}: error: {message}").replace("\n", " "), file=sys.stderr, flush=True)


def exit_status(exc: Exception, prog: str) -> int:
    """Print `exc` as one line for the user and return the exit status it calls for."""
    from tsessm.persist import ModelFileError  # persist loads torch: only on this error path

    message = str(exc) or type(exc).__name__
    if isinstance(exc, (UsageError, ModelFileError)):
        print_error(prog, message)
        return 2
    if isinstance(exc, BAD_INPUT):
        print_error(prog, message)
        return 1
    print(mask(f"{prog}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)").replace("\n", " "),
          file=sys.stderr, flush=True)
    return 1


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str | None = None) -> int:
    """`run(args)` under the policy: its status, or the status of the exception it raised."""
    try:
        return run(args)
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        return exit_status(exc, prog or getattr(args, PROG_DEST, "tsessm"))
