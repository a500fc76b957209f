"""Argument checks shared by every stage, so each mistake is worded the same way wherever it is made."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._errors import TransferCacheError


def whole_number(value, name: str, *, at_least: int = 1, optional: bool = False):
    """``value`` as an int when it is a whole number >= ``at_least`` (None passes when ``optional``); bools are refused.

    The message: "<name> must be a whole number of at least <at_least>; got <value>".
    """
    if optional and value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < at_least:
        raise TransferCacheError(f"{name} must be a whole number of at least {at_least}; got {value!r}")
    return int(value)


def integer(value, name: str) -> int:
    """Any whole number (a seed): "<name> must be an integer; got <value>"."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TransferCacheError(f"{name} must be an integer; got {value!r}")
    return int(value)


def one_of(value, choices, name: str, *, hint: str = ""):
    """``value`` when it is one of ``choices``: "<name> must be one of 'a', 'b'; got 'c'" (then ``hint``) otherwise."""
    choices = tuple(choices)
    if value not in choices:
        raise TransferCacheError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}{hint}"
        )
    return value


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
