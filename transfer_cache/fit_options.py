"""fit's options, declared once: ``fit()``'s keywords, the flags of ``python -m transfer_cache.fit`` and their
``--help`` all come from ``FitOptions``; ``check`` refuses a mistake in any of them before a cache is read."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass

from . import _checks
from ._errors import TransferCacheError
from ._options import option
from .classifiers import CLASSIFIERS, make_classifier, parse_grid, parse_params
from .splits import split_names

VIEWS = ("auto", "none")
TITLES = {"heads": "heads", "rows": "rows and split", "output": "runs and output"}


def also(*aliases: str) -> type[argparse.Action]:
    """An argparse action that stores the value as usual and also answers to ``aliases`` (one option, two flags)."""

    class Store(argparse.Action):
        def __init__(self, option_strings, dest, **keywords):
            super().__init__([*option_strings, *aliases], dest, **keywords)

        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, self.dest, values)

    return Store


@dataclass(frozen=True)
class FitOptions:
    """Every option of ``fit()``; each is also one flag of the command (``--param`` for ``params``, ``--quiet`` for
    ``progress=False``). ``classifier`` is "a,b" or a list; ``params`` and ``grid``: "key=value" strings or a dict."""

    classifier: str | Sequence[str] = option("logreg", "NAME[,NAME...] (default logreg)", group="heads")
    params: dict | Sequence[str] | None = option(
        None, "a hyper-parameter (repeatable)", group="heads", flag="--param", action="append", metavar="KEY=VALUE",
    )
    grid: dict | Sequence[str] | None = option(
        None, "grid-search candidates (repeatable)", group="heads", action="append", metavar="KEY=V1,V2",
    )
    n_jobs: int = option(1, "parallel workers for the grid search, knn and forests", group="heads", type=int)
    layer: str | None = option(None, "which cached layer to use when the cache holds several", group="rows")
    test_size: float = option(
        0.2, "held-out fraction: the test rows of --split stratified/unstratified, the validation files of --split "
        "keras (default 0.2)", group="rows", type=float, action=also("--validation-split"),
    )
    seed: int = option(0, "seed of the split and of every classifier (default 0)", group="rows", type=int)
    cv: int = option(0, "k-fold cross-validation (or the folds of --grid)", group="rows", type=int)
    split: str = option(
        "auto", f"{', '.join(split_names())} (keras: image_dataset_from_directory's files; default auto)", group="rows",
    )
    test_cache: str | os.PathLike | None = option(
        None, "a cache of test images (same fingerprint)", group="rows",
    )
    views: str = option(
        "auto", "auto: train on a cache's augmented views (extract --augment); none: ignore them", group="rows",
        choices=VIEWS,
    )
    runs_dir: str | os.PathLike = option("runs", "where run folders go (default ./runs)", group="output")
    report: bool = option(False, "write an HTML report for each run", group="output", action="store_true")
    progress: bool = option(True, "no progress bars or notes", group="output", flag="--quiet", action="store_false")


@dataclass(frozen=True)
class Heads:
    """The heads of one fit command, in order, with their checked parameters and (with ``grid``) the one grid."""

    names: list[str]
    params: dict[str, dict]
    grids: dict[str, dict]


def check(options: FitOptions) -> Heads:
    """Every option checked before any work (building each head checks its parameters); the heads to train."""
    names = _names(options.classifier)
    params = options.params
    nested = isinstance(params, dict) and all(key in names and isinstance(v, dict) for key, v in params.items())
    if nested and params:  # {classifier: {key: value}}
        parsed = {name: parse_params(name, params.get(name, {}))[name] for name in names}
    else:
        parsed = parse_params(names, params)
    grids: dict[str, dict] = {}
    if options.grid:
        if len(names) != 1:
            raise TransferCacheError(f"--grid searches one classifier; got {len(names)} ({', '.join(names)})")
        grids[names[0]] = parse_grid(names[0], options.grid)
    for name in names:
        make_classifier(name, parsed[name], seed=options.seed, n_jobs=options.n_jobs)
    _checks.one_of(options.views, VIEWS, "views")
    _checks.one_of(options.split, split_names(), "split")
    test_size, cv, seed, n_jobs = options.test_size, options.cv, options.seed, options.n_jobs
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0.0 < float(test_size) < 1.0:
        raise TransferCacheError(f"test size must be a fraction between 0 and 1, e.g. 0.2; got {test_size!r}")
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 0 or cv == 1:
        raise TransferCacheError(f"cv must be 0 (no cross-validation) or a number of folds >= 2; got {cv!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TransferCacheError(f"seed must be an integer; got {seed!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise TransferCacheError(f"n_jobs must be a positive number of workers or -1 (all cores); got {n_jobs!r}")
    return Heads(names, parsed, grids)


def _names(classifier) -> list[str]:
    items = classifier.split(",") if isinstance(classifier, str) else list(classifier)
    names = [item.strip() for item in items if item and item.strip()]
    if not names:
        raise TransferCacheError(f"no classifier given; choose from {', '.join(CLASSIFIERS)}")
    for name in names:
        if name not in CLASSIFIERS:
            raise TransferCacheError(f"unknown classifier '{name}'; choose from {', '.join(CLASSIFIERS)}")
    if len(set(names)) != len(names):
        raise TransferCacheError(f"classifier listed twice in {','.join(names)}; name each once")
    return names


@dataclass(frozen=True)
class FitCommand(FitOptions):
    """The command's options: ``fit()``'s, and what the command prints beside the leaderboard."""

    print_confusion: bool = option(
        False, "print each run's confusion matrix with class names", group="output", action="store_true",
    )
