"""Hyper-parameters: each head declares its own (``Param``), with the values it accepts; one function checks them.

The declaration is the single source of the rules and of their error messages (as scikit-learn's
``_parameter_constraints``): a range is an ``Interval``, an enum is ``choices``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import Interval, at_least, greater_than  # worded as the commands word theirs; old imports still work
from .._errors import TransferCacheError

POSITIVE = greater_than(0)  # learning rates, regularisation strengths
COUNT = at_least(1)  # iterations, epochs, trees, neighbours, layer sizes, rows
FRACTION = Interval(0, 1, closed="left")  # dropout: 0 switches it off, 1 would drop everything


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default, its kind, the values it accepts, and what a head saved before it existed did.

    kinds: int, float, bool, str (one of ``choices``), ints (a list of ints; "1024,256", "none" = empty),
    int_or_none, float_or_choice (a float or one of ``choices``). ``interval`` bounds the numbers (each item of
    ``ints``). ``legacy``: the value a saved head whose classifier.json predates the parameter behaved as, when
    that differs from ``default`` (a new preprocessing step must not be applied to an old model).
    """

    default: Any
    kind: str
    choices: tuple = ()
    interval: Interval | None = None
    legacy: Any = None

    def expected(self) -> str:
        """What the parameter accepts, in words: the error message's "must be ..." part, made from the declaration."""
        bounds = self.interval.words() if self.interval is not None else ""
        bounded = f" {bounds}" if bounds else ""
        options = ", ".join(f"'{c}'" for c in self.choices)
        if self.kind == "int":
            return f"an integer{bounded}"
        if self.kind == "float":
            return f"a number{bounded}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return f"one of {options}"
        if self.kind == "ints":
            return f"a comma-separated list of integers{bounded} (or none)"
        if self.kind == "int_or_none":
            return f"an integer{bounded} or none"
        if self.kind == "float_or_choice":
            return f"a number{bounded} or one of {options}"
        raise AssertionError(f"unknown parameter kind {self.kind}")


CLASS_WEIGHT = Param("none", "str", ("none", "balanced"))  # shared by the heads that weight classes


def bad_value(classifier: str, name: str, spec: Param, value) -> TransferCacheError:
    return TransferCacheError(
        f"parameter '{name}' of classifier '{classifier}' must be {spec.expected()}; got {value!r}"
    )


def coerce(classifier: str, name: str, spec: Param, value):
    """Convert a command-line string (or check a Python value) and check its range; a valid value comes back as is.

    A value of the wrong type is reported as given ('abc'); one out of range as converted (-5).
    """
    converted = _convert(classifier, name, spec, value)
    if spec.interval is not None:
        if spec.kind == "ints":
            numbers = converted
        else:  # none and the named choices have no range
            numbers = [] if converted is None or isinstance(converted, str) else [converted]
        if not all(spec.interval.holds(number) for number in numbers):
            raise bad_value(classifier, name, spec, value if spec.kind == "ints" else converted)
    return converted


def _convert(classifier: str, name: str, spec: Param, value):
    """The value as the declared kind (a valid Python value is returned as the same object); ranges come after."""
    kind = spec.kind
    bad = bad_value(classifier, name, spec, value)
    if kind == "int":
        return _to_int(value, bad)
    if kind == "float":
        return _to_float(value, bad)
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
    if kind in ("int_or_none", "float_or_choice"):
        if isinstance(value, str) and value.strip().lower() in spec.choices:
            return value if value in spec.choices else value.strip().lower()
        try:
            return _convert(classifier, name, Param(spec.default, "int" if kind == "int_or_none" else "float"), value)
        except TransferCacheError:
            raise bad from None
    if kind == "ints":
        return _to_ints(value, bad)
    raise AssertionError(f"unknown parameter kind {kind}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _to_int(value, bad: TransferCacheError):
    if _is_int(value):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise bad from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise bad


def _to_float(value, bad: TransferCacheError):
    if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise bad
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


def _to_ints(value, bad: TransferCacheError):
    """A list of ints as given; one int or "1024,256" as a tuple; 0, "none", "0" or "" as no items."""
    if isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
        return value
    if _is_int(value):
        return (int(value),) if value != 0 else ()
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "", "0"):
            return ()
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            raise bad from None
    raise bad
