"""Argument checks shared by every stage, so each mistake is worded the same way wherever it is made."""

from __future__ import annotations

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
