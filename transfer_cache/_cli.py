"""Shared command-line plumbing: one way to report user mistakes (a message, exit code 2, no traceback)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from ._errors import TransferCacheError
from ._quiet_tensorflow import quiet_tensorflow_when_imported


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


def _file_in_the_way(folder: Path) -> Path | None:
    """The file that stops ``folder`` from being a folder: itself, or a folder above it that is a file; else None."""
    for step in (folder, *folder.parents):
        if step.is_dir():
            return None
        if step.exists():
            return step
    return None


def check_folder(path: str | os.PathLike, what: str, option: str) -> Path:
    """``path`` as a folder to write into: a one-line error (not a FileExistsError traceback) when it, or a folder
    above it, is a file. Nothing is created here, so a mistake found later leaves nothing behind."""
    path = Path(path)
    blocker = _file_in_the_way(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"cannot be created: {blocker} is a file"
        raise TransferCacheError(
            f"{what} {path} {where}, not a folder; give {option} a folder path (it is created when missing)"
        )
    return path


def check_file_target(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a file to write: a one-line error when a file stands where its folder would be."""
    path = Path(path)
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise TransferCacheError(
            f"cannot write {path}: {blocker} is a file, not a folder; choose another {option} path"
        )
    return path
