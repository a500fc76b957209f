"""The per-image columns of a Parquet file of vectors, checked and turned into a cache's rows.

A file this package exported carries every column and its class names; a file from elsewhere may carry only paths
(and vectors): its ids are then the sha256 of the image files (what extraction keys rows by), its classes come from
a ``class`` column (names) and/or a ``label`` column (indices), and without either every image is unlabelled. With
the image source the vectors were computed from, the source's own labels, splits and class names are the truth, and
the file's are checked against them. Every mistake is one line naming the file, the row and the value.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import TransferCacheError
from ._hashing import file_sha256
from .parquet_vectors import COLUMNS
from .sources.base import SPLITS, class_sort_key, normalise_split

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass
class ImportedRows:
    """The clean rows of the cache to write (one entry per row of the file, in its order) and its class names."""

    ids: list[str]
    paths: list[str]
    labels: list[int]
    split: list[str]
    class_names: list[str]
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, digest)

    def columns(self) -> dict:
        return {"ids": self.ids, "paths": self.paths, "labels": self.labels, "split": self.split}


def read_columns(pf, path: Path) -> dict[str, list]:
    """Every per-image column the file has (all but the vectors), as Python lists; ``path`` is required."""
    names = [name for name in pf.schema_arrow.names if name in _PER_IMAGE]
    if COLUMNS.path not in names:
        raise TransferCacheError(
            f"{path} has no column '{COLUMNS.path}' (its columns: {', '.join(pf.schema_arrow.names)}); expected "
            f"'{COLUMNS.path}' and '{COLUMNS.vector}' (and optionally {', '.join(repr(n) for n in _OPTIONAL)}), "
            "as python -m transfer_cache.export_vectors writes them"
        )
    table = pf.read(columns=names)
    return {name: table.column(name).to_pylist() for name in names}


_OPTIONAL = (COLUMNS.id, COLUMNS.label, COLUMNS.label_name, COLUMNS.split)
_PER_IMAGE = (COLUMNS.path, *_OPTIONAL)


def _where(path: Path, columns: dict, row: int) -> str:
    return f"row {row} of {path} ({columns[COLUMNS.path][row]})"


def checked_paths(columns: dict, path: Path) -> list[str]:
    for row, value in enumerate(columns[COLUMNS.path]):
        if not isinstance(value, str) or not value:
            raise TransferCacheError(f"row {row} of {path} has no path ({value!r}); every row needs the path of its "
                                     "image")
    return list(columns[COLUMNS.path])


def checked_splits(columns: dict, path: Path) -> list[str]:
    """The canonical split of every row ("" when the file has no split column or the value is empty)."""
    values = columns.get(COLUMNS.split) or [""] * len(columns[COLUMNS.path])
    splits = []
    for row, value in enumerate(values):
        split = normalise_split(value or "") if isinstance(value, (str, type(None))) else None
        if split is None:
            raise TransferCacheError(
                f"{_where(path, columns, row)} has split {value!r}; a split is one of {', '.join(SPLITS)} "
                "(or valid, validation) or empty"
            )
        splits.append(split)
    return splits


def given_ids(columns: dict, path: Path) -> list[str] | None:
    """The ``id`` column, each a sha256 hex digest (None when the file has no such column)."""
    if COLUMNS.id not in columns:
        return None
    ids = []
    for row, value in enumerate(columns[COLUMNS.id]):
        digest = value.lower() if isinstance(value, str) else ""
        if not _DIGEST.fullmatch(digest):
            raise TransferCacheError(
                f"{_where(path, columns, row)} has id {value!r}; an id is the sha256 of the image's file, 64 hex "
                f"digits: fix the column, or drop it and give --images-root so the ids are computed from the files"
            )
        ids.append(digest)
    return ids


def file_ids(paths: list[str], root: Path, path: Path, progress: bool) -> list[str]:
    """The sha256 of every image file (relative paths under ``root``): the ids extraction gives these images."""
    from tqdm.auto import tqdm

    ids = []
    for row, name in enumerate(tqdm(paths, desc="hashing", unit="image", disable=not progress, leave=False,
                                    file=sys.stderr)):
        target = Path(name) if os.path.isabs(name) else root / name
        try:
            ids.append(file_sha256(target))
        except OSError as exc:
            raise TransferCacheError(
                f"row {row} of {path} has no id column to say which image {name} is, and {target} cannot be read "
                f"({exc.strerror or exc}); give --images-root FOLDER, the folder its paths are relative to, or an "
                f"'{COLUMNS.id}' column (sha256 of each image's file)"
            ) from None
    return ids


def labels_from_file(columns: dict, path: Path) -> tuple[list[int], list[str]]:
    """Labels and class names from the file alone: a ``class`` column names the classes (their indices kept from a
    ``label`` column beside it, else in sorted order); a ``label`` column alone numbers them; neither: unlabelled."""
    n = len(columns[COLUMNS.path])
    labels = [-1 if value is None else value for value in columns.get(COLUMNS.label) or [None] * n]
    for row, value in enumerate(labels):
        if not isinstance(value, int) or value < -1:
            raise TransferCacheError(f"{_where(path, columns, row)} has label {value!r}; a label is a class index "
                                     "0, 1, ... or -1 (unlabelled)")
    if COLUMNS.label_name not in columns:
        return labels, [str(k) for k in range(max(labels, default=-1) + 1)]
    names = columns[COLUMNS.label_name]
    for row, name in enumerate(names):
        if name is not None and not isinstance(name, str):
            raise TransferCacheError(f"{_where(path, columns, row)} has class {name!r}; the '{COLUMNS.label_name}' "
                                     f"column holds class names (text), and '{COLUMNS.label}' their indices")
    if COLUMNS.label not in columns:
        found = sorted({name for name in names if name is not None}, key=class_sort_key(
            [name for name in names if name is not None]))
        index = {name: k for k, name in enumerate(found)}
        return [-1 if name is None else index[name] for name in names], found
    return labels, _names_of_labels(labels, names, columns, path)


def _names_of_labels(labels: list[int], names: list, columns: dict, path: Path) -> list[str]:
    """The class name of each label index, as the file pairs them (one name per index, every index named)."""
    by_label: dict[int, str] = {}
    for row, (label, name) in enumerate(zip(labels, names)):
        if (label == -1) != (name is None):
            raise TransferCacheError(
                f"{_where(path, columns, row)} has label {label} and class {name!r}; an unlabelled row has label -1 "
                "and no class, a labelled one both"
            )
        if label >= 0 and by_label.setdefault(label, name) != name:
            raise TransferCacheError(
                f"{_where(path, columns, row)} names label {label} '{name}', but an earlier row names it "
                f"'{by_label[label]}'; each label index has one class name"
            )
    missing = [k for k in range(max(by_label, default=-1) + 1) if k not in by_label]
    if missing:
        raise TransferCacheError(
            f"{path} uses labels up to {max(by_label)} but no row names class {missing[0]}; labels must number the "
            "classes 0, 1, ... without gaps (or drop the label column and the classes are numbered by name)"
        )
    return [by_label[k] for k in range(len(by_label))]


def exported_labels(columns: dict, class_names: list[str], path: Path) -> list[int]:
    """The ``label`` column of a file this package wrote, within its class names."""
    if COLUMNS.label not in columns:
        raise TransferCacheError(f"{path} was written by export_vectors but has no column '{COLUMNS.label}'; "
                                 "export the cache again")
    k = len(class_names)
    for row, value in enumerate(columns[COLUMNS.label]):
        if not isinstance(value, int) or not -1 <= value < k:
            raise TransferCacheError(
                f"{_where(path, columns, row)} has label {value!r}, but its metadata names {k} classes (labels -1.."
                f"{k - 1}); export the cache again"
            )
    return list(columns[COLUMNS.label])


def source_rows(columns: dict, src, path: Path) -> tuple[list[int], list[int], list[str]]:
    """(record index, label, split) of every row, from the image source the vectors were computed from: each path
    must be one of its images, and the file's own labels and splits, where given, must agree with it."""
    index = {record.path: i for i, record in enumerate(src.records)}
    records, seen = [], {}
    for row, name in enumerate(columns[COLUMNS.path]):
        if name not in index:
            raise TransferCacheError(
                f"{_where(path, columns, row)} is not an image of {src.description} (the paths must be as that "
                f"source lists them, e.g. {src.records[0].path if src.records else '(it has no images)'})"
            )
        if name in seen:
            raise TransferCacheError(f"rows {seen[name]} and {row} of {path} both hold {name}; give each image once")
        seen[name] = row
        records.append(index[name])
    labels = [src.records[i].label for i in records]
    splits = [src.records[i].split for i in records]
    _agree(columns, path, src, labels, splits)
    return records, labels, splits


def _agree(columns: dict, path: Path, src, labels: list[int], splits: list[str]) -> None:
    """The file's label, class and split columns (where present and not empty) say what the source says."""
    names = src.class_names
    theirs = {
        COLUMNS.label: (columns.get(COLUMNS.label), labels),
        COLUMNS.label_name: (columns.get(COLUMNS.label_name), [names[k] if k >= 0 else None for k in labels]),
        COLUMNS.split: (checked_splits(columns, path) if COLUMNS.split in columns else None, splits),
    }
    for column, (given, truth) in theirs.items():
        if given is None:
            continue
        for row, (mine, expected) in enumerate(zip(given, truth)):
            if mine is not None and mine != expected:
                raise TransferCacheError(
                    f"{_where(path, columns, row)} has {column} {mine!r}, but {src.description} says {expected!r}; "
                    "the source's labels and splits are kept in the cache: fix the file or give the right --source"
                )
