"""`python -m tsessm.stream ...`, the same as `tsessm stream ...`, and the names this module had.

The command itself lives in `tsessm.commands.stream`; these wrappers import it when called, so
importing `tsessm.stream` loads no command-line code. Kept until the callers use
`tsessm.commands.stream` (or `tsessm.cli.main(["stream", ...])`) directly.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence


def add_stream_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `stream` on sub-command parsers; dispatch with run_stream_command(args)."""
    from tsessm.commands import stream

    return stream.add_parser(subparsers)


def run_stream_command(args: argparse.Namespace) -> int:
    """Run `tsessm stream` from parsed arguments under the CLI's error policy; the exit status."""
    from tsessm.commands import stream
    from tsessm.commands.errors import run_command

    return run_command(stream.run, args, stream.PROG)


def build_parser(prog: str = "python -m tsessm.stream") -> argparse.ArgumentParser:
    from tsessm.commands import stream

    p = argparse.ArgumentParser(prog=prog, description=stream.DESCRIPTION, epilog=stream.EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return stream.configure_parser(p)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stream_command(build_parser().parse_args(argv))
