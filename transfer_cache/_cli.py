"""Shared command-line plumbing: one way to report user mistakes (a message, exit code 2, no traceback)."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ._errors import TransferCacheError
from ._quiet_tensorflow import quiet_tensorflow_when_imported

_UNRECOGNIZED = "unrecognized arguments: "


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own mistakes use our format and exit code
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {_explained(message)}\n")


def _explained(message: str) -> str:
    """argparse's message, with what a hurried user most likely did when the extra arguments are all cache files: a
    glob such as caches/NAME-*.h5 that matched several caches (a sharded run's shard files beside its merged cache)."""
    extra = message[len(_UNRECOGNIZED):].split(" ") if message.startswith(_UNRECOGNIZED) else []
    if not extra or not all(item.endswith(".h5") for item in extra):
        return message
    return (f"{message}: this command takes one cache file, and {len(extra)} more were given (a pattern such as "
            "caches/NAME-*.h5 matches every cache of that source, shard files .shardK-of-N.h5 included); give one file")


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


def run(
    main: Callable[[argparse.Namespace], int | None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse, run, and turn a TransferCacheError into one line on stderr and exit code 2.

    No command imports TensorFlow before this point (``--help`` and argument mistakes answer in under a second);
    whenever the work imports it later (directly or through Keras), its start-up notices are kept off the terminal.
    """
    args = parser.parse_args(argv)
    quiet_tensorflow_when_imported()
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
