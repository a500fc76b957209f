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
    """Import TensorFlow with its C++ start-up chatter (oneDNN notices, absl warnings) kept out of the terminal.

    The notices are printed by native code before any log level applies, so stderr's file descriptor is pointed
    at /dev/null for the import only. Call it from a CLI after the arguments are parsed (``--help`` stays fast).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
