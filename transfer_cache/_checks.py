"""Argument checks shared by every stage, so each mistake is worded the same way wherever it is made.

A range is an ``Interval``, worded by ``words()``: the heads' hyper-parameters and the commands' numbers say
"of at least 1" or "in [0, 1)" alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._errors import TransferCacheError

_CLOSED = ("both", "left", "right", "neither")


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Interval:
    """The numbers from ``low`` to ``high`` (None: unbounded); ``closed`` says which ends are included."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left" (low only), "right" (high only), "neither"

    def __post_init__(self):
        if self.closed not in _CLOSED:
            raise ValueError(f"closed must be one of {_CLOSED}; got {self.closed!r}")

    def holds(self, value) -> bool:
        """Whether ``value`` is inside; written positively so NaN is outside every interval."""
        low_ok = self.low is None or value > self.low or (value == self.low and self.closed in ("both", "left"))
        high_ok = self.high is None or value < self.high or (value == self.high and self.closed in ("both", "right"))
        return bool(low_ok and high_ok)

    def words(self) -> str:
        """The range in words, to follow "an integer" or "a number": "of at least 1", "in [0, 1)", ..."""
        low_in, high_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is None and self.high is None:
            return ""
        if self.high is None:
            return f"of at least {_number(self.low)}" if low_in else f"greater than {_number(self.low)}"
        if self.low is None:
            return f"of at most {_number(self.high)}" if high_in else f"less than {_number(self.high)}"
        return f"in {'[' if low_in else '('}{_number(self.low)}, {_number(self.high)}{']' if high_in else ')'}"


def at_least(low: float) -> Interval:
    return Interval(low, None, closed="left")


def greater_than(low: float) -> Interval:
    return Interval(low, None, closed="neither")


def whole_number(value, name: str, *, at_least: int = 1, optional: bool = False):
    """``value`` as an int when it is a whole number >= ``at_least`` (None passes when ``optional``); bools are refused.

    The message: "<name> must be a whole number of at least <at_least>; got <value>".
    """
    if optional and value is None:
        return None
    bounds = Interval(at_least, None, closed="left")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not bounds.holds(value):
        raise TransferCacheError(f"{name} must be a whole number {bounds.words()}; got {value!r}")
    return int(value)


def integer(value, name: str) -> int:
    """Any whole number (a seed): "<name> must be an integer; got <value>"."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TransferCacheError(f"{name} must be an integer; got {value!r}")
    return int(value)


def one_of(value, choices, name: str, *, hint: str = "", also: str = ""):
    """``value`` when it is one of ``choices``: "<name> must be one of 'a', 'b'; got 'c'" (then ``hint``) otherwise.

    ``also`` follows the choices, for spellings accepted beside them: "one of 'a', 'b' (or 'B'); got 'c'".
    """
    choices = tuple(choices)
    if value not in choices:
        raise TransferCacheError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}{also}; got {value!r}{hint}"
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
