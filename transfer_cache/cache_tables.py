"""The per-row datasets of a cache file, declared once.

A cache holds tables: families of per-row datasets that share one row count. ``TABLES`` is their one declaration:
the writer, the reader and its validation, extraction's hit check and ``merge`` all iterate over it and never name
a dataset, so a new per-image value is one ``Column`` here. Each column says how it is stored (``kind``), how
extraction fills it from one entry of its table (``value``: an ``ImageRow``, a ``Failure`` or a ``ViewEntry``), the
``Cache`` attribute that holds it once read, and the check a damaged value fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ._errors import TransferCacheError

# what a message about a damaged cache of ours advises: extract writes a complete new file in its place (never a
# suggestion to delete: a file that is not one of ours may hold data its owner needs)
REBUILD = "python -m transfer_cache.extract on its source writes a new one in its place"


# --------------------------------------------------------------------------- the entries a table's rows come from


@dataclass(frozen=True)
class ImageRow:
    """One image that became a row of vectors: its content digest and what its source says of it."""

    digest: str
    path: str
    label: int
    split: str


@dataclass(frozen=True)
class Failure:
    """One image that could not be read: its path, why, and its content digest ("" when it was never read)."""

    path: str
    reason: str
    digest: str = ""


@dataclass(frozen=True)
class ViewEntry:
    """The augmented views of one clean row (``row``: its number among the clean rows)."""

    row: int


# --------------------------------------------------------------------------- the declaration


def _labels_name_classes(cache, labels: np.ndarray) -> None:
    """Every label names one of the class names, or is -1 (unlabelled): no reader has to guard against others."""
    k = len(cache.class_names)
    bad = np.flatnonzero((labels < -1) | (labels >= k))
    if len(bad):
        row, value = int(bad[0]), int(labels[bad[0]])
        allowed = f"0..{k - 1} for its {k} class names" if k else "none: it has no class names"
        more = f" (and {len(bad) - 1} more row{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise TransferCacheError(
            f"cache {cache.path} is damaged: row {row} has label {value}{more}, but labels are -1 (unlabelled) or "
            f"{allowed}; {REBUILD}"
        )


@dataclass(frozen=True)
class Column:
    """One per-row dataset: ``kind`` is "digest" (sha256 hex, stored as S64), "text" (utf-8) or "int"."""

    name: str
    kind: str
    value: Callable[[Any], Any]  # the stored value of one entry of the table
    attribute: str | None = None  # the Cache attribute holding the column once read (None: only in cache.tables)
    optional: bool = False  # absent in caches written before it existed: read as "" / 0
    as_array: bool = False  # the attribute is a numpy object array rather than a list (text columns)
    check: Callable | None = None  # check(cache, values): raises TransferCacheError on a damaged value


@dataclass(frozen=True)
class Table:
    """A family of per-row datasets that share one row count.

    ``features``: the table also holds vectors (``/<group>/features``; one dataset per layer when ``per_layer``).
    ``features_attribute``: the Cache attribute holding that dataset (tables with one dataset of vectors).
    ``row_reference``: a column holding row numbers of the clean rows (merge shifts it by each shard's offset).
    ``unique_on``: merge keeps the first entry per value of this column (shards all record a listing failure).
    ``promised_by``: the cache attribute whose truth requires the table (absent + promised = damaged cache).
    """

    name: str
    group: str  # "" = the file's root
    columns: tuple[Column, ...]
    features: bool = False
    per_layer: bool = False
    features_attribute: str | None = None
    row_reference: str | None = None
    unique_on: str | None = None
    promised_by: str | None = None

    def node(self, name: str) -> str:
        return f"{self.group}/{name}" if self.group else name

    def columns_of(self, entries: Iterable) -> dict[str, list]:
        """The table's columns filled from its entries (``ImageRow``s, ``Failure``s, ``ViewEntry``s)."""
        entries = list(entries)
        return {column.name: [column.value(entry) for entry in entries] for column in self.columns}


CLEAN_ROWS = "rows"  # the table whose row count is the cache's, and whose vectors are per layer

TABLES: tuple[Table, ...] = (
    Table(
        CLEAN_ROWS, "",
        (
            Column("ids", "digest", lambda row: row.digest, attribute="ids"),
            Column("paths", "text", lambda row: row.path, attribute="paths"),
            Column("labels", "int", lambda row: int(row.label), attribute="labels", check=_labels_name_classes),
            Column("split", "text", lambda row: row.split, attribute="split", as_array=True),
        ),
        features=True, per_layer=True,
    ),
    Table(
        "failed", "failed",
        (
            Column("paths", "text", lambda failure: failure.path, attribute="failed_paths"),
            Column("reasons", "text", lambda failure: failure.reason, attribute="failed_reasons"),
            # the content digest of an image that failed to decode ("" when it was never read), so a re-run does not
            # retry the same bytes
            Column("ids", "digest", lambda failure: failure.digest, attribute="failed_ids", optional=True),
        ),
        unique_on="paths",
    ),
    Table(
        "augmented", "augmented",
        (Column("rows", "int", lambda entry: int(entry.row), attribute="view_rows"),),
        features=True, features_attribute="views", row_reference="rows", promised_by="augment",
    ),
)


def table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)


# --------------------------------------------------------------------------- storage of one column

_STORAGE = {"digest": "S64", "int": np.int64}


def encode(kind: str, values: Sequence) -> np.ndarray:
    if kind == "text":
        return np.asarray(list(values), dtype=object)
    return np.asarray(list(values), dtype=_STORAGE[kind])


def decode_text(values: Iterable) -> list[str]:
    """Stored text as str. Bytes with no NUL in them are joined and decoded in one call (a million paths: a tenth
    of the time of one call per value, which is what opening a large cache cost)."""
    values = values if isinstance(values, (list, np.ndarray)) else list(values)
    try:
        joined = b"\0".join(values)
    except TypeError:  # not all bytes
        joined = None
    if joined is not None:
        texts = joined.decode("utf-8").split("\0") if len(values) else []
        if len(texts) == len(values):
            return texts
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def decode(kind: str, values) -> "list[str] | np.ndarray":
    if kind == "int":
        return np.asarray(values).astype(np.int64)
    return decode_text(values)


def empty_value(kind: str):
    """What an optional column absent from an older cache reads as."""
    return 0 if kind == "int" else ""
