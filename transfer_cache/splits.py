"""How the labelled rows of a fit are cut into train, validation and test: one strategy per ``--split`` name.

``data`` is fit's view of the labelled rows (``labels``, ``split`` as the source gave it, ``paths``, ``caches``,
``roles``, ``cache_of``, ``notes``). The strategies, a registry (``STRATEGIES``):

* ``source``: the cache's own split, when its labelled rows hold train and test (or train and val) rows. With
  train/val/test, Keras heads use val as validation data and the other classifiers train on train + val.
* ``stratified``: ``train_test_split(test_size, stratify=labels, random_state=seed)`` when there is no split.
* ``unstratified``: ``train_test_split(test_size, random_state=seed)`` without stratification (seed 004's split), over
  the labelled rows in cache order.
* ``keras``: exactly the files ``keras.utils.image_dataset_from_directory(validation_split=test_size,
  subset="validation", seed=seed)`` puts in its validation subset (seed 002): the class folders' image files in
  Keras' listing order, shuffled by ``np.random.RandomState(seed)``, the last ``int(test_size * n)`` validated on.
  Files Keras would list but that could not be decoded keep their place in that order and are left out.
* ``cv``: ``--cv K`` alone runs StratifiedKFold(K, shuffle=True, random_state=seed) over all labelled rows.
* ``caches``: ``--test-cache`` trains on every labelled row of the positional caches and tests on the test cache.

``auto`` picks caches (a test cache is given), cv (``--cv`` without ``--grid``), source (the rows have a split) or
stratified, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ._checks import one_of
from ._errors import TransferCacheError
from .sources import kind_of

KERAS_IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # keras image_dataset_utils.ALLOWLIST_FORMATS
_NONE = np.empty(0, np.int64)


@dataclass
class Split:
    method: str
    train: np.ndarray  # positions into the labelled rows
    test: np.ndarray
    val: np.ndarray  # rows Keras heads validate on (empty: none); the others train on them
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


STRATEGIES: dict[str, Callable[..., Split]] = {}


def strategy(name: str):
    """Register a split strategy: ``fn(data, *, test_size, seed, cv) -> Split``."""

    def register(fn):
        STRATEGIES[name] = fn
        return fn

    return register


def split_names() -> tuple[str, ...]:
    return ("auto", *STRATEGIES)


def _has_source_split(data) -> bool:
    kinds = set(data.split.tolist())
    return "train" in kinds and ("test" in kinds or "val" in kinds)


def choose_split(data, *, split: str, test_size: float, seed: int, cv: int, grid: bool) -> Split:
    """The one split of a fit command (every classifier of it is scored on the same rows)."""
    one_of(split, split_names(), "split")
    has_test_cache = "test" in data.roles
    if has_test_cache and split not in ("auto", "caches"):
        raise TransferCacheError(f"--test-cache sets the split itself; drop --split {split}")
    if split == "caches" and not has_test_cache:
        raise TransferCacheError("--split caches needs --test-cache PATH (the cache of the test images)")
    cross_validate = bool(cv) and not grid
    if cross_validate and not has_test_cache and split not in ("auto", "cv"):
        raise TransferCacheError(f"--cv {cv} runs k-fold cross-validation over all labelled rows; drop --split {split}")
    if split == "cv" and not cross_validate:
        raise TransferCacheError("--split cv needs --cv K (the number of folds, e.g. --cv 5)")
    if split == "source" and not _has_source_split(data):
        raise TransferCacheError(
            f"--split source needs train and test (or val) rows in the cache; its rows have splits "
            f"{sorted(set(data.split.tolist()))}; use --split stratified"
        )
    if split == "auto":
        if has_test_cache:
            split = "caches"
        elif cross_validate:
            split = "cv"
        else:
            split = "source" if _has_source_split(data) else "stratified"
    return STRATEGIES[split](data, test_size=test_size, seed=seed, cv=cv)


@strategy("source")
def _source(data, *, test_size: float, seed: int, cv: int) -> Split:
    kinds = set(data.split.tolist())
    train = np.flatnonzero(data.split == "train")
    if "test" in kinds:
        test = np.flatnonzero(data.split == "test")
        val = np.flatnonzero(data.split == "val")
    else:
        test = np.flatnonzero(data.split == "val")
        val = _NONE
    unused = len(data.labels) - len(train) - len(test) - len(val)
    if unused:
        data.notes.append(f"{unused} labelled rows outside the train/val/test split are not used")
    return Split("source", train, test, val)


@strategy("stratified")
def _stratified(data, *, test_size: float, seed: int, cv: int) -> Split:
    return Split("stratified", *stratified_rows(data.labels, np.arange(len(data.labels)), test_size, seed), _NONE)


@strategy("unstratified")
def _unstratified(data, *, test_size: float, seed: int, cv: int) -> Split:
    return Split("unstratified", *unstratified_rows(np.arange(len(data.labels)), test_size, seed), _NONE)


@strategy("keras")
def _keras(data, *, test_size: float, seed: int, cv: int) -> Split:
    return _keras_split(data, test_size, seed)


@strategy("cv")
def _cross_validation(data, *, test_size: float, seed: int, cv: int) -> Split:
    everything = np.arange(len(data.labels))
    return Split("cv", everything, everything, _NONE, folds=stratified_folds(data.labels, cv, seed))


@strategy("caches")
def _caches(data, *, test_size: float, seed: int, cv: int) -> Split:
    test = np.flatnonzero(data.cache_of == len(data.caches) - 1)
    train = np.flatnonzero(data.cache_of != len(data.caches) - 1)
    if not len(train) or not len(test):
        raise TransferCacheError("the training caches or the test cache have no labelled rows; check both caches")
    return Split("caches", train, test, _NONE)


def stratified_rows(labels: np.ndarray, rows: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels[rows])
    present = counts[counts > 0]
    if present.min() < 2:
        raise TransferCacheError(
            f"a stratified split needs at least 2 labelled rows per class; "
            f"class index {int(np.flatnonzero(counts == 1)[0])} "
            "has 1; add images to it, or give the source its own train/test split"
        )
    try:
        train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=labels[rows])
    except ValueError as exc:
        raise TransferCacheError(
            f"cannot split {len(rows)} rows of {len(present)} classes with test_size={test_size}: {exc}; "
            "raise --test-size or add images"
        ) from None
    return np.sort(train), np.sort(test)


def unstratified_rows(rows: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """train_test_split without stratification, as seed 004 calls it."""
    from sklearn.model_selection import train_test_split

    try:
        train, test = train_test_split(rows, test_size=test_size, random_state=seed)
    except ValueError as exc:
        raise TransferCacheError(f"cannot split {len(rows)} rows with test_size={test_size}: {exc}; "
                                 f"raise --test-size or add images") from None
    return np.sort(train), np.sort(test)


def keras_file_order(paths: Sequence[str], *, seed: int) -> list[int]:
    """Indices of ``paths`` in the order ``image_dataset_from_directory(shuffle=True, seed=seed)`` lists them.

    ``paths`` are relative to the directory Keras is given (``class/[sub/]file``). Keras takes the class folders
    in sorted order (hidden ones skipped), walks each with roots sorted and file names sorted, keeps the allowed
    image extensions, then shuffles the whole list with ``np.random.RandomState(seed).shuffle``. Paths Keras would
    not list are left out.
    """
    import posixpath

    listed = []
    for i, path in enumerate(paths):
        parts = path.split("/")
        if len(parts) < 2 or parts[0].startswith(".") or not parts[-1].lower().endswith(KERAS_IMAGE_FORMATS):
            continue
        listed.append((parts[0], posixpath.dirname(path), parts[-1], i))
    order = [entry[3] for entry in sorted(listed)]
    np.random.RandomState(seed).shuffle(order)
    return order


def keras_validation_split(paths: Sequence[str], *, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) indices of ``paths`` as ``image_dataset_from_directory`` selects its two subsets."""
    order = keras_file_order(paths, seed=seed)
    n_val = int(validation_split * len(order))
    if n_val == 0 or n_val == len(order):
        raise TransferCacheError(
            f"--split keras with validation split {validation_split} keeps {n_val} of {len(order)} files "
            f"for validation "
            "(Keras takes int(split * files)); give a fraction that leaves files on both sides, e.g. 0.2"
        )
    return order[:-n_val], order[-n_val:]


def _keras_split(data, test_size: float, seed: int) -> Split:
    """Seed 002's split: the training/validation files of image_dataset_from_directory(validation_split, seed)."""
    if len(data.caches) != 1:
        raise TransferCacheError(
            f"--split keras reproduces image_dataset_from_directory on one directory; got {len(data.caches)} caches; "
            "fit one cache of that directory"
        )
    cache = data.caches[0]
    kinds = sorted(set(data.split.tolist()) - {""})
    kind = kind_of(cache.info.source)
    if kinds or kind is None or not kind.keras_listing:
        raise TransferCacheError(
            f"--split keras needs a cache of one folder of class folders (root/<class>/<image>), as "
            f"image_dataset_from_directory reads; {cache.path} comes from {cache.info.source!r}"
            + (f" with splits {kinds}" if kinds else "") + "; use --split source or --split stratified"
        )
    failed_paths = [path for path, _ in cache.failed]
    all_paths = list(data.paths) + failed_paths
    train, val = keras_validation_split(all_paths, validation_split=test_size, seed=seed)
    n = len(data.paths)
    lost = sum(1 for i in train + val if i >= n)
    if lost:
        data.notes.append(f"{lost} files Keras would list could not be decoded; "
                          f"they keep their place in the split and are left out")
    skipped = n - sum(1 for i in train + val if i < n)
    if skipped:
        data.notes.append(f"{skipped} rows are not .bmp/.gif/.jpeg/.jpg/.png files, which Keras does not list; "
                          f"they are not used")
    pick = lambda indices: np.sort(np.asarray([i for i in indices if i < n], dtype=np.int64))  # noqa: E731
    return Split("keras", pick(train), pick(val), np.empty(0, np.int64))


def stratified_folds(labels: np.ndarray, cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(labels)[np.bincount(labels) > 0].min())
    if smallest < cv:
        raise TransferCacheError(
            f"--cv {cv} needs at least {cv} labelled rows in every class; the smallest class has {smallest}; "
            f"use --cv {max(2, smallest)} or fewer folds" if smallest >= 2 else
            f"--cv {cv} needs at least {cv} labelled rows in every class; the smallest class has {smallest}; add images"
        )
    splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(labels)), labels)]
