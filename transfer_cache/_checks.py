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
