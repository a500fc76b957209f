"""Hyper-parameters: each head declares its own (``Param``); one function checks and converts every value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import TransferCacheError


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default, its kind, and for string enums the accepted values.

    kinds: int, float, bool, str (with choices), ints (a list of ints; "1024,256", "none" = empty),
    int_or_none, float_or_choice (a float or one of choices).
    """

    default: Any
    kind: str
    choices: tuple = ()


CLASS_WEIGHT = Param("none", "str", ("none", "balanced"))  # shared by the heads that weight classes

_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "ints": "a comma-separated list of integers (or none)",
    "int_or_none": "an integer or none",
}


def bad_value(classifier: str, name: str, spec: Param, value) -> TransferCacheError:
    if spec.kind == "str":
        expected = "one of " + ", ".join(f"'{c}'" for c in spec.choices)
    elif spec.kind == "float_or_choice":
        expected = "a number or one of " + ", ".join(f"'{c}'" for c in spec.choices)
    else:
        expected = _KIND_WORDS[spec.kind]
    return TransferCacheError(f"parameter '{name}' of classifier '{classifier}' must be {expected}; got {value!r}")


def coerce(classifier: str, name: str, spec: Param, value):
    """Convert a command-line string (or check a Python value); a valid value is returned as the same object."""
    kind = spec.kind
    bad = bad_value(classifier, name, spec, value)
    if kind == "int":
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if kind == "float":
        if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise bad from None
            if not math.isfinite(result):
                raise bad
            return result
        raise bad
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        raise bad
    if kind == "str":
        if isinstance(value, str) and value.strip().lower() in spec.choices:
            return value if value in spec.choices else value.strip().lower()
        raise bad
    if kind == "int_or_none":
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", ""):
            return None
        return coerce(classifier, name, Param(spec.default, "int"), value)
    if kind == "float_or_choice":
        if isinstance(value, str) and value.strip().lower() in spec.choices:
            return value if value in spec.choices else value.strip().lower()
        try:
            return coerce(classifier, name, Param(spec.default, "float"), value)
        except TransferCacheError:
            raise bad from None
    if kind == "ints":
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return (int(value),) if value > 0 else ()
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("none", "", "0"):
                return ()
            try:
                items = tuple(int(part) for part in text.split(","))
            except ValueError:
                raise bad from None
            if any(item <= 0 for item in items):
                raise bad
            return items
        raise bad
    raise AssertionError(f"unknown parameter kind {kind}")
