"""The heads by name: a registry filled by the ``@register`` decorator, and parsing of ``--param``/``--grid``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .._errors import TransferCacheError
from ._params import coerce
from .base import Classifier, read_meta

CLASSIFIERS: dict[str, type[Classifier]] = {}


def register(klass: type[Classifier]) -> type[Classifier]:
    """Make a head available by its ``name`` (fit, export and the CLIs find it here, and only here)."""
    if not klass.name or klass.name in CLASSIFIERS:
        raise ValueError(f"classifier name {klass.name!r} is empty or registered twice")
    CLASSIFIERS[klass.name] = klass
    return klass


def available() -> list[str]:
    return list(CLASSIFIERS)


def classifier_help() -> str:
    """One line naming every registered head, with its summary and what it does to the vectors (fit's help ends
    with it)."""
    names = []
    for name, klass in CLASSIFIERS.items():
        words = "; ".join(part for part in (klass.summary, klass.vector_steps()) if part)
        names.append(f"{name} ({words})" if words else name)
    return f"classifiers: {', '.join(names)}."


def _klass(name: str) -> type[Classifier]:
    klass = CLASSIFIERS.get(name)
    if klass is None:
        raise TransferCacheError(f"unknown classifier '{name}'; choose from {', '.join(CLASSIFIERS)}")
    return klass


def make_classifier(name: str, params: dict | None = None, *, seed: int = 0, n_jobs: int = 1) -> Classifier:
    """A fresh, unfitted classifier: ``make_classifier("dense", {"hidden": "1024,256", "epochs": 5})``.

    The parameters are checked here, so a mistake is reported before any work (the constructor itself only
    stores them, as scikit-learn estimators do; ``fit`` checks them again).
    """
    klass = _klass(name)
    params = dict(params or {})
    klass.check_params(params)
    return klass(seed=seed, n_jobs=n_jobs, **params)


def load_classifier(folder: str | os.PathLike) -> Classifier:
    """Load any head written by ``Classifier.save`` (a run's ``model/`` folder)."""
    meta = read_meta(Path(folder))
    klass = CLASSIFIERS.get(meta.get("classifier"))
    if klass is None:
        raise TransferCacheError(f"{Path(folder) / 'classifier.json'} names unknown classifier "
                                 f"{meta.get('classifier')!r}")
    return klass.load(folder)


def _split_item(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise TransferCacheError(f"{option} must look like key=value; got {item!r}")
    return key.strip(), value.strip()


def parse_params(names: str | Sequence[str], items: Sequence[str] | dict | None) -> dict[str, dict]:
    """``--param key=value`` strings -> {classifier: {key: typed value}}.

    ``name.key=value`` targets one classifier. A plain ``key=value`` goes to every listed classifier that accepts
    it, and must be accepted by at least one (with one classifier the message lists what it accepts).
    """
    names = [names] if isinstance(names, str) else list(names)
    klasses = {name: _klass(name) for name in names}
    result: dict[str, dict] = {name: {} for name in names}
    pairs = list(items.items()) if isinstance(items, dict) else [_split_item(item, "--param") for item in (items or [])]
    for key, value in pairs:
        target, dot, bare = key.partition(".")
        if dot and target in CLASSIFIERS:
            if target not in klasses:
                raise TransferCacheError(f"--param {key}=... names classifier '{target}', "
                                         f"which is not being fitted ({', '.join(names)})")
            targets, key = [target], bare
        else:
            targets = [name for name, klass in klasses.items() if key in klass.spec]
            if not targets:
                if len(names) == 1:
                    accepted = ", ".join(klasses[names[0]].spec)
                    raise TransferCacheError(f"unknown parameter '{key}' for classifier '{names[0]}'; "
                                             f"it accepts {accepted}")
                raise TransferCacheError(
                    f"unknown parameter '{key}': none of {', '.join(names)} accepts it; "
                    f"use name.key=value for one classifier"
                )
        for name in targets:
            klass = klasses[name]
            if key not in klass.spec:
                raise TransferCacheError(f"unknown parameter '{key}' for classifier '{name}'; "
                                         f"it accepts {', '.join(klass.spec)}")
            result[name][key] = coerce(name, key, klass.spec[key], value)
    return result


def parse_grid(name: str, items: Sequence[str] | dict | None) -> dict[str, list]:
    """``--grid key=v1,v2`` strings -> a GridSearchCV param_grid for one classifier.

    List-valued parameters (``hidden``) separate candidates with ';': ``hidden=1024;512,256``.
    """
    klass = _klass(name)
    grid: dict[str, list] = {}
    pairs = list(items.items()) if isinstance(items, dict) else [_split_item(item, "--grid") for item in (items or [])]
    for key, value in pairs:
        if key not in klass.spec:
            raise TransferCacheError(f"unknown parameter '{key}' for classifier '{name}'; "
                                     f"it accepts {', '.join(klass.spec)}")
        spec = klass.spec[key]
        if isinstance(value, (list, tuple)) and spec.kind != "ints":
            candidates = list(value)
        elif isinstance(value, str):
            separator = ";" if spec.kind == "ints" else ","
            candidates = [part for part in value.split(separator)]
        else:
            candidates = [value]
        if not candidates or any(str(c).strip() == "" and spec.kind != "ints" for c in candidates):
            raise TransferCacheError(f"--grid {key}= needs at least one value, e.g. --grid {key}=v1,v2")
        grid[key] = [coerce(name, key, spec, candidate) for candidate in candidates]
    return grid
