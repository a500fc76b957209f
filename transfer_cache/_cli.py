"""Shared command-line plumbing: one way to report user mistakes (a message, exit code 2, no traceback)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from ._errors import TransferCacheError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own mistakes use our format and exit code
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """An argparse parser with examples in the help and a --debug flag that shows tracebacks."""
    parser = _Parser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    return parser


def run(main: Callable[[argparse.Namespace], int | None], parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn a TransferCacheError into one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return int(main(args) or 0)
    except TransferCacheError as exc:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{parser.prog}: interrupted; finished work is kept and the next run resumes from it", file=sys.stderr)
        return 130


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the user's terminal (set before tensorflow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
