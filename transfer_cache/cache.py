"""The HDF5 cache of transfer values: the contract between extraction and every later stage.

A cache file is only ever visible complete. While an extraction runs, each finished batch is written as
its own small file in a work folder next to the cache (temporary name, fsync, ``os.replace``); the final
file is assembled under a temporary name and renamed into place. A killed run therefore loses at most
the batch in flight, and the next run resumes from the parts it finds. One lock file per cache keeps two
writers apart. Rows are keyed by the content digest of their image, so unchanged images are copied,
never recomputed, when a source grows.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import h5py
import numpy as np

from ._atomic import disk_errno, disk_error, fsync_dir, fsync_tree, replacing, translated
from ._errors import TransferCacheError
from .feature_config import DTYPES, FINGERPRINT_FIELDS, FORMAT_VERSION, fingerprint  # noqa: F401  (the cache's contract)

FORMAT = "transfer_cache"

_STRING = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20
# the fingerprint in a cache's file name (see cache_filename), with an optional shard suffix
_NAME_FINGERPRINT = re.compile(r"\.([0-9a-f]{16})(?:\.shard\d+-of-\d+)?\.h5$")
# what a message about a damaged cache of ours advises: extract writes a complete new file in its place (never a
# suggestion to delete: a file that is not one of ours may hold data its owner needs)
REBUILD = "python -m transfer_cache.extract on its source writes a new one in its place"


class NewerFormatError(TransferCacheError):
    """A cache written by a newer transfer_cache: not damaged, so it is never deleted or overwritten."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:40] or "source"


def cache_filename(
    *, source_name: str, source_description: str, backbone: str, fingerprint: str, shard: str = ""
) -> str:
    """``<source>-<source hash>.<backbone>.<fingerprint>[.shardK-of-N].h5``: readable, and never shared by two configurations."""
    source_hash = hashlib.sha256(source_description.encode("utf-8")).hexdigest()[:6]
    suffix = f".{shard}" if shard else ""
    return f"{_slug(source_name)}-{source_hash}.{backbone}.{fingerprint}{suffix}.h5"


def default_cache_dir() -> Path:
    """``$TRANSFER_CACHE_DIR`` when set, else ``./caches``."""
    return Path(os.environ.get("TRANSFER_CACHE_DIR") or "caches")


# --------------------------------------------------------------------------- durable file helpers


fsync_file = fsync_tree  # (fsync_dir and fsync_file: the package's one durable-write helper, _atomic)

_WHERE = "pass --cache-dir on another disk"


def _disk_error(exc: Exception, path: Path) -> TransferCacheError:
    """One line for a cache file that could not be written; a full disk says what was kept (``_atomic`` words the rest)."""
    if disk_errno(exc) in (errno.ENOSPC, errno.EDQUOT):
        return TransferCacheError(
            f"no space left on the device while writing {path}: the previous cache (if any) is untouched and "
            f"finished batches are kept for the next run; free some space or {_WHERE}, then run again"
        )
    return disk_error(exc, path, where=_WHERE) or TransferCacheError(
        f"could not write {path}: {getattr(exc, 'strerror', None) or exc}; check the folder's permissions and free space"
    )


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def cache_lock(path: Path, *, timeout: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on one cache path so two extractions never write it at once.

    The lock is an ``flock`` on ``.<name>.lock`` beside the cache: the kernel releases it when the holder
    dies, so a killed run never leaves a stale lock. ``timeout`` seconds are waited before giving up.
    """
    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    with translated(path, error=_disk_error):  # a read-only or missing cache folder is one line, not a traceback
        handle = open(lock_path, "a+")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TransferCacheError(
                        f"another extraction is writing {path} right now (lock {lock_path} is held); wait for it to "
                        "finish, or pass --lock-timeout SECONDS to wait for it"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        handle.close()


# --------------------------------------------------------------------------- work parts (resumable batches)


class WorkParts:
    """The durable per-batch results of an unfinished extraction, in ``.<cache name>.parts/``.

    Each part is an ``.npz`` with the content digests of its rows, one feature array per layer, the
    images that failed in that batch, and what the batch cost (seconds, images computed), so a resumed
    cache records the cost of every run that made it, not only the last one. Parts are written to a temporary name, fsynced and renamed, so a
    part that exists is complete; a partial temporary file from a killed run is swept on the next start.
    """

    def __init__(self, cache_path: Path, *, layers: Sequence[str]):
        cache_path = Path(cache_path)
        self.folder = cache_path.with_name(f".{cache_path.name}.parts")
        self.layers = list(layers)
        self._index: dict[str, tuple[Path, int]] = {}
        self._failed: dict[str, str] = {}
        self._next = 0
        self.earlier_seconds = 0.0  # what the parts found by scan() cost the runs that wrote them
        self.earlier_computed = 0
        self._loaded: "OrderedDict[Path, dict[str, np.ndarray]]" = OrderedDict()

    def scan(self) -> None:
        """Index the finished parts; sweep temporary files left by a killed run."""
        self._index.clear()
        self._failed.clear()
        self.earlier_seconds, self.earlier_computed = 0.0, 0
        if not self.folder.is_dir():
            return
        for stale in self.folder.glob("*.tmp*"):
            stale.unlink(missing_ok=True)
        for part in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as data:
                    ids = data["ids"].tolist()
                    for k, layer in enumerate(self.layers):
                        if data[f"f{k}"].shape[0] != len(ids):
                            raise ValueError("row count mismatch")
                    failed_ids = data["failed_ids"].tolist()
                    failed_reasons = data["failed_reasons"].tolist()
                    cost = (float(data["seconds"]), int(data["computed"])) if "seconds" in data.files else (0.0, 0)
            except Exception:  # a damaged part is recomputed, never read
                part.unlink(missing_ok=True)
                continue
            for row, digest in enumerate(ids):
                self._index[digest] = (part, row)
            self._failed.update(zip(failed_ids, failed_reasons))
            self.earlier_seconds += cost[0]
            self.earlier_computed += cost[1]
            self._next = max(self._next, int(part.stem.split("-")[1]) + 1)

    def __contains__(self, digest: str) -> bool:
        return digest in self._index

    @property
    def computed_ids(self) -> set[str]:
        return set(self._index)

    @property
    def failed(self) -> dict[str, str]:
        return dict(self._failed)

    def write(
        self, ids: Sequence[str], features: Sequence[np.ndarray], failed: Sequence[tuple[str, str]] = (), *,
        seconds: float = 0.0, computed: int = 0,
    ) -> None:
        """Make one batch durable: after this returns, a crash cannot lose it (nor what it cost)."""
        final = self.folder / f"part-{self._next:08d}.npz"
        arrays = {"ids": np.asarray(list(ids), dtype="U80")}  # a digest, or "digest:view" for an augmented view
        for k, array in enumerate(features):
            arrays[f"f{k}"] = np.asarray(array)
        arrays["failed_ids"] = np.asarray([digest for digest, _ in failed], dtype="U80")
        arrays["failed_reasons"] = np.asarray([reason for _, reason in failed], dtype=str)
        arrays["seconds"], arrays["computed"] = np.float64(seconds), np.int64(computed)
        # the temporary (.part-NNNNNNNN.npz.tmp-PID.npz) is one the sweep above removes when a run is killed
        with replacing(final, keep_suffix=True, error=_disk_error) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)
        for row, digest in enumerate(ids):
            self._index[digest] = (final, row)
        self._failed.update(failed)
        self._next += 1

    def features(self, digest: str) -> list[np.ndarray]:
        """The vectors of one image, read through a small cache of recently used parts."""
        part, row = self._index[digest]
        data = self._loaded.get(part)
        if data is None:
            with np.load(part, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
            self._loaded[part] = data
            if len(self._loaded) > 8:
                self._loaded.popitem(last=False)
        else:
            self._loaded.move_to_end(part)
        return [data[f"f{k}"][row] for k in range(len(self.layers))]

    def remove(self) -> None:
        if self.folder.is_dir():
            for item in self.folder.iterdir():
                item.unlink(missing_ok=True)
            self.folder.rmdir()
        self._loaded.clear()


# --------------------------------------------------------------------------- the per-row datasets, declared once


@dataclass(frozen=True)
class Column:
    """One per-row dataset of a table: ``kind`` is "digest" (sha256 hex, stored as S64), "text" (utf-8) or "int"."""

    name: str
    kind: str
    optional: bool = False  # absent in caches written before it existed: read as "" / 0


@dataclass(frozen=True)
class Table:
    """A family of per-row datasets that share one row count: the writer, the reader, validation, the hit check
    and merge all iterate over ``TABLES`` and never name a dataset themselves.

    ``features``: the table also holds vectors (``/<group>/features``, one dataset per layer for the clean rows).
    ``row_reference``: a column holding row numbers of the clean rows (merge shifts it by each shard's offset).
    ``unique_on``: merge keeps the first entry per value of this column (shards all record a listing failure).
    ``promised_by``: the cache attribute whose truth requires the table (absent + promised = damaged cache).
    """

    name: str
    group: str  # "" = the file's root
    columns: tuple[Column, ...]
    features: bool = False
    row_reference: str | None = None
    unique_on: str | None = None
    promised_by: str | None = None

    def node(self, name: str) -> str:
        return f"{self.group}/{name}" if self.group else name


TABLES: tuple[Table, ...] = (
    Table(
        "rows", "",
        (Column("ids", "digest"), Column("paths", "text"), Column("labels", "int"), Column("split", "text")),
        features=True,
    ),
    Table(
        "failed", "failed",
        # ids: the content digest of an image that failed to decode ("" when it was never read), so a re-run does
        # not retry the same bytes
        (Column("paths", "text"), Column("reasons", "text"), Column("ids", "digest", optional=True)),
        unique_on="paths",
    ),
    Table(
        "augmented", "augmented",
        (Column("rows", "int"),),  # the clean row each entry of /augmented/features belongs to
        features=True, row_reference="rows", promised_by="augment",
    ),
)
TABLES_BY_NAME = {table.name: table for table in TABLES}

_STORAGE = {"digest": "S64", "int": np.int64}


def _encode(kind: str, values) -> np.ndarray:
    if kind == "text":
        return np.asarray(list(values), dtype=object)
    return np.asarray(list(values), dtype=_STORAGE[kind])


def _decode_column(kind: str, values) -> "list[str] | np.ndarray":
    if kind == "int":
        return np.asarray(values).astype(np.int64)
    return _decode(values)


def _promised(table: Table, attrs: dict) -> bool:
    return bool(table.promised_by and attrs.get(table.promised_by))


# --------------------------------------------------------------------------- reading


def _decode(values: Iterable) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class Cache:
    """A finished cache, opened read-only. Features stay on disk and are sliced lazily.

    ``features`` is the (N, D) dataset of the only layer (``features_for(layer)`` when there are several);
    ``labels``, ``ids``, ``paths``, ``split`` and ``class_names`` are loaded into memory; ``config`` holds
    every root attribute (backbone, layers, pooling, input size, fingerprint, ...). ``tables[name][column]`` holds
    every declared per-row dataset (``TABLES``).
    """

    def __init__(self, path: str | os.PathLike, *, check_vectors: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise TransferCacheError(f"cache file {self.path} does not exist; run python -m transfer_cache.extract first")
        if self.path.is_dir():
            raise TransferCacheError(f"{self.path} is a folder; give the cache file in it (a .h5 file written by "
                                     f"python -m transfer_cache.extract), e.g. {self.path / '*.h5'}")
        if not h5py.is_hdf5(self.path):
            if _NAME_FINGERPRINT.search(self.path.name):  # named as extract names its caches: one of ours, damaged
                raise TransferCacheError(f"cache {self.path} is damaged (not an HDF5 file any more); {REBUILD}")
            raise TransferCacheError(
                f"{self.path} is not a cache: it is not an HDF5 file; expected a cache file (.h5) written by "
                "python -m transfer_cache.extract"
            )
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            if _NAME_FINGERPRINT.search(self.path.name):
                raise TransferCacheError(f"cannot open cache {self.path}: the file is damaged ({exc}); {REBUILD}") from exc
            raise TransferCacheError(
                f"cannot open {self.path} as a cache: HDF5 cannot read it ({exc}); expected a cache file (.h5) written "
                "by python -m transfer_cache.extract"
            ) from exc
        try:
            self._validate()
            if check_vectors:
                self.check_vectors()
        except TransferCacheError:
            self._file.close()
            raise
        except Exception as exc:
            self._file.close()
            raise TransferCacheError(f"cannot read cache {self.path}: the file is damaged ({exc}); {REBUILD}") from exc

    def _validate(self) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            raise TransferCacheError(
                f"{self.path} is an HDF5 file but not a cache (no format='{FORMAT}' attribute); expected a cache file "
                "written by python -m transfer_cache.extract"
            )
        version = int(attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise NewerFormatError(
                f"{self.path} was written in cache format {version}, newer than this transfer_cache reads "
                f"(up to {FORMAT_VERSION}); upgrade with pip install -U transfer_cache"
            )
        if version < 1:
            raise TransferCacheError(f"cache {self.path} is damaged: it has no valid format_version attribute; {REBUILD}")
        self.config: dict = {key: _attr(value) for key, value in attrs.items()}
        self.layers: list[str] = list(self.config["layers"])
        self.fingerprint: str = self.config["fingerprint"]
        named = _NAME_FINGERPRINT.search(self.path.name)
        if named and named.group(1) != self.fingerprint:
            raise TransferCacheError(
                f"cache {self.path} holds fingerprint {self.fingerprint} but its name says {named.group(1)}: it was "
                f"renamed or copied from another feature configuration; give it back its name "
                f"({_NAME_FINGERPRINT.sub(lambda m: m.group(0).replace(m.group(1), self.fingerprint), self.path.name)})"
            )
        self.class_names: list[str] = self._class_names()
        self.tables: dict[str, dict] = {table.name: self._read_table(table) for table in TABLES}
        rows, failed, augmented = self.tables["rows"], self.tables["failed"], self.tables["augmented"]
        # the clean rows
        self.ids: list[str] = rows["ids"]
        self.paths: list[str] = rows["paths"]
        self.labels: np.ndarray = rows["labels"]
        self.split = np.asarray(rows["split"], dtype=object)
        # the images that could not be read, and their content digests ("" when never read)
        self.failed: list[tuple[str, str]] = list(zip(failed["paths"], failed["reasons"]))
        self.failed_ids: list[str] = failed["ids"]
        # augmented views: the clean row of each entry, and their (M, K, D) vectors (None without --augment)
        self.view_rows: np.ndarray = augmented["rows"]
        self.views: "h5py.Dataset | None" = self._file["augmented/features"] if "augmented" in self._file else None
        n = len(self)
        for layer in self.layers:
            dataset = self.features_for(layer)
            if dataset.shape[0] != n:
                raise TransferCacheError(
                    f"cache {self.path} is inconsistent: {dataset.name} holds {dataset.shape[0]} rows of vectors but "
                    f"/labels {n} (layer '{layer}'); {REBUILD}"
                )
        self._check_labels()
        for table in TABLES:
            if table.row_reference is not None:
                rows = self.tables[table.name][table.row_reference]
                if len(rows) and (rows.min() < 0 or rows.max() >= n):
                    raise TransferCacheError(
                        f"cache {self.path} is inconsistent: /{table.node(table.row_reference)} names rows outside "
                        f"0..{n - 1}; {REBUILD}"
                    )

    def _class_names(self) -> list[str]:
        """The ``class_names`` attribute: a JSON list of names (absent: none), else the cache is damaged."""
        names = self.config.get("class_names", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            shown = str(self._file.attrs.get("class_names"))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise TransferCacheError(
                f"cache {self.path} is damaged: its class_names attribute is not a JSON list of names (it reads "
                f"{shown!r}); {REBUILD}"
            )
        return list(names)

    def _check_labels(self) -> None:
        """Every label names one of the class names, or is -1 (unlabelled): no reader has to guard against others."""
        labels, k = self.labels, len(self.class_names)
        bad = np.flatnonzero((labels < -1) | (labels >= k))
        if len(bad):
            row, value = int(bad[0]), int(labels[bad[0]])
            allowed = f"0..{k - 1} for its {k} class names" if k else "none: it has no class names"
            more = f" (and {len(bad) - 1} more row{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
            raise TransferCacheError(
                f"cache {self.path} is damaged: row {row} has label {value}{more}, but labels are -1 (unlabelled) or "
                f"{allowed}; {REBUILD}"
            )

    def check_vectors(self) -> None:
        """Refuse a cache whose vectors hold NaN or infinity (hand-edited or damaged): every layer and the augmented
        views are read block by block, one pass: 3 ms for 1797 x 1280 float32 vectors (file in the page cache; opening
        takes 4 ms, reading every row 9 ms more). The commands that read every vector (inspect, neighbors, report, fit)
        ask for it when they open a cache."""
        datasets = [(self.features_for(layer), f"layer '{layer}'") for layer in self.layers]
        if self.views is not None:
            datasets.append((self.views, "its augmented views"))
        for dataset, what in datasets:
            step = block_rows(dataset)
            for start in range(0, dataset.shape[0], step):
                block = np.asarray(dataset[start : start + step])
                finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
                if finite.all():
                    continue
                row = start + int(np.argmin(finite))
                value = "NaN" if np.isnan(block[row - start]).any() else "infinity"
                if value == "infinity" and dataset.dtype == np.float16:  # beyond float16's range: a new extract repeats it
                    advice = "extract it again with --dtype float32, which holds values that large"
                else:  # extract's hit check compares rows and options, not vectors: it would keep this file
                    advice = f"extract would keep it as it is (its rows and options match): move it out of its folder, then {REBUILD}"
                raise TransferCacheError(f"cache {self.path} is damaged: row {row} of {what} ({dataset.name}) holds {value}; {advice}")

    def require_rows(self, doing: str = "look at") -> None:
        """One line, not an empty page or an IndexError, when the cache holds no rows (a command has nothing to do)."""
        if len(self) == 0:
            failed = f"; {len(self.failed)} images failed to decode" if self.failed else ""
            raise TransferCacheError(
                f"cache {self.path} holds no images (0 rows{failed}): there is nothing to {doing}; give a cache that "
                "python -m transfer_cache.extract wrote from a source with images"
            )

    def _read_table(self, table: Table) -> dict:
        """Load one declared table's columns; check that they (and its vectors) have one length."""
        present = table.group == "" or table.group in self._file
        if not present:
            if _promised(table, self.config):
                raise TransferCacheError(
                    f"cache {self.path} is damaged: its attributes promise /{table.group} ({table.promised_by}: "
                    f"{self.config.get(table.promised_by)}) but the file has none; {REBUILD}"
                )
            return {column.name: _decode_column(column.kind, []) for column in table.columns}
        group = self._file[table.group] if table.group else self._file
        columns: dict = {}
        for column in table.columns:
            if column.name not in group:
                if column.optional:
                    columns[column.name] = None
                    continue
                raise TransferCacheError(f"cache {self.path} is damaged: /{table.node(column.name)} is missing; {REBUILD}")
            columns[column.name] = _decode_column(column.kind, group[column.name][()])
        lengths = {len(values) for values in columns.values() if values is not None}
        if len(lengths) > 1:
            which = "its datasets differ in length" if table.name == "rows" else f"/{table.group} datasets differ in length"
            raise TransferCacheError(f"cache {self.path} is inconsistent: {which}; {REBUILD}")
        n = lengths.pop() if lengths else 0
        for column in table.columns:
            if columns[column.name] is None:  # an optional column of an older cache
                columns[column.name] = _decode_column(column.kind, [0 if column.kind == "int" else ""] * n)
        if table.group and table.features and "features" in group and group["features"].shape[0] != n:
            raise TransferCacheError(f"cache {self.path} is inconsistent: /{table.group} rows and features differ; {REBUILD}")
        return columns

    def table_features(self, table: Table, layer: str | None = None) -> "h5py.Dataset | None":
        """The vectors of one declared table (the clean rows' per layer), or None when it holds none."""
        if table.name == "rows":
            return self.features_for(layer or self.layers[0])
        return self._file[table.node("features")] if table.group in self._file else None

    def layer_name(self, layer: str | None = None, *, must_choose: bool = False) -> str:
        """The feature layer to use: ``layer`` when the cache has it; None means the first (with ``must_choose``, only
        when the cache holds one layer, so a choice between several is never made silently)."""
        if layer is None:
            if must_choose and len(self.layers) > 1:
                raise TransferCacheError(
                    f"cache {self.path} holds several layers ({', '.join(self.layers)}); choose one with --layer NAME"
                )
            return self.layers[0]
        if layer not in self.layers:
            raise TransferCacheError(f"cache {self.path} has no layer '{layer}'; it holds {self.layers}")
        return layer

    def read_rows(self, rows, *, layer: str | None = None) -> np.ndarray:
        """The vectors of ``rows`` (sorted row numbers) of one layer as float32, read block by block."""
        return read_rows(self.features_for(self.layer_name(layer)), rows)

    def features_for(self, layer: str) -> h5py.Dataset:
        node = self._file["features"]
        if isinstance(node, h5py.Dataset):
            if layer != self.layers[0]:
                raise TransferCacheError(f"cache {self.path} has no layer '{layer}'; it holds {self.layers}")
            return node
        if layer not in node:
            raise TransferCacheError(f"cache {self.path} has no layer '{layer}'; it holds {self.layers}")
        return node[layer]

    @property
    def features(self) -> h5py.Dataset:
        if len(self.layers) != 1:
            raise TransferCacheError(
                f"cache {self.path} holds several layers {self.layers}: use features_for(layer) to choose one"
            )
        return self.features_for(self.layers[0])

    @property
    def n_views(self) -> int:
        """Augmented views per training image (0 when the cache has none)."""
        views = self.views
        return int(views.shape[1]) if views is not None else 0

    @property
    def feature_dim(self) -> int:
        return int(self.config["feature_dim"])

    def __len__(self) -> int:
        return len(self.tables["rows"]["ids"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, rows={len(self)}, layers={self.layers}, fingerprint={self.fingerprint!r})"


_READ_BLOCK_BYTES = 64 << 20


def block_rows(dataset: h5py.Dataset) -> int:
    """Rows per block of about 64 MB: how every streaming reader of a cache walks a dataset."""
    row_bytes = max(1, int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize)
    return max(1, _READ_BLOCK_BYTES // row_bytes)


def read_rows(dataset: h5py.Dataset, rows) -> np.ndarray:
    """``dataset[rows]`` for sorted row numbers, as float32: whole contiguous blocks of about 64 MB are read and the
    wanted rows kept, rather than one HDF5 selection per row (fast) or the whole dataset (memory stays flat)."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + tuple(dataset.shape[1:]), dtype=np.float32)
    block = block_rows(dataset)
    done = 0
    while done < len(rows):
        start = int(rows[done])
        stop = min(dataset.shape[0], start + block)
        count = int(np.searchsorted(rows, stop, side="left")) - done
        chunk = np.asarray(dataset[start:stop], dtype=np.float32)
        out[done : done + count] = chunk[rows[done : done + count] - start]
        done += count
    return out


def _attr(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_cache(path: str | os.PathLike, *, check_vectors: bool = False) -> Cache:
    """Open a finished cache read-only (``with tc.open_cache(p) as cache: X = cache.features[:]``); ``check_vectors``
    also reads every vector once and refuses NaN or infinity (``Cache.check_vectors``)."""
    return Cache(path, check_vectors=check_vectors)


def is_valid_cache(path: Path) -> bool:
    try:
        with Cache(path):
            return True
    except TransferCacheError:
        return False


# --------------------------------------------------------------------------- writing


@dataclass
class Rows:
    """The row metadata of a cache, in source order."""

    ids: list[str]
    paths: list[str]
    labels: list[int]
    split: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class TableData:
    """What the writer needs for one declared table: its columns, and for a table with vectors a streaming reader
    ``features(start, stop)`` returning one block per dataset (per layer for the clean rows) with ``shapes``."""

    columns: dict
    features: object = None
    shapes: list | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _chunk_rows(row_bytes: int, n: int) -> int:
    return max(1, min(n, _CHUNK_BYTES // max(1, row_bytes)))


def write_cache(
    path: str | os.PathLike,
    *,
    attrs: dict,
    rows: Rows,
    features: "Sequence[np.ndarray] | None" = None,
    feature_rows=None,
    feature_shapes: Sequence[tuple[int, ...]] | None = None,
    block_rows: int = 4096,
    failed_ids: Sequence[str] = (),
    view_rows: Sequence[int] | None = None,
    view_features=None,
    views: int = 0,
) -> Path:
    """Write a complete cache atomically: a temporary file in the same folder, fsync, then ``os.replace``.

    Give either ``features`` (one in-memory array per layer) or ``feature_rows(start, stop)``, a callable
    returning one array per layer for that block of rows, together with ``feature_shapes`` (the per-row
    shape of each layer); the latter streams, so memory stays flat however many rows there are.
    ``attrs`` must hold the fingerprint fields; ``fingerprint``, ``format`` and ``feature_dim`` are added.
    Augmented views (one layer only): ``view_rows`` (the rows that have them) and ``view_features(start, stop)``
    returning the (stop - start, views, D) block for those entries of ``view_rows``.
    """
    layers = list(attrs["layers"])
    if features is not None:
        arrays = [np.asarray(f) for f in features]
        feature_shapes = [tuple(f.shape[1:]) for f in arrays]

        def feature_rows(start, stop):  # noqa: F811 - the in-memory case is a special case of streaming
            return [a[start:stop] for a in arrays]

    if feature_rows is None or feature_shapes is None or len(feature_shapes) != len(layers):
        raise ValueError("give one feature array (or one feature shape with feature_rows) per layer")
    failed_ids = list(failed_ids) or [""] * len(rows.failed)
    tables = {
        "rows": TableData(
            {"ids": rows.ids, "paths": rows.paths, "labels": rows.labels, "split": rows.split},
            features=feature_rows, shapes=[tuple(s) for s in feature_shapes],
        ),
        "failed": TableData({"paths": [p for p, _ in rows.failed], "reasons": [r for _, r in rows.failed], "ids": failed_ids}),
    }
    if view_rows is not None and views:
        tables["augmented"] = TableData(
            {"rows": list(view_rows)},
            features=lambda start, stop: [view_features(start, stop)],
            shapes=[(views,) + tuple(feature_shapes[0])],
        )
    return write_tables(path, attrs=attrs, tables=tables, block_rows=block_rows)


def write_tables(path: str | os.PathLike, *, attrs: dict, tables: dict, block_rows: int = 4096) -> Path:
    """Write every declared table of ``tables`` (name -> ``TableData``; an absent table is written empty, or
    left out when it holds vectors) into a new cache file, atomically."""
    path = Path(path)
    layers = list(attrs["layers"])
    dtype = np.dtype(attrs["dtype"])
    for name, data in tables.items():
        table = TABLES_BY_NAME[name]
        lengths = {len(data.columns[c.name]) for c in table.columns}
        if len(lengths) > 1:
            raise ValueError(f"table {name!r}: its columns {[c.name for c in table.columns]} must have one entry per row")
    clean = tables["rows"]
    n = len(clean)
    full = dict(attrs)
    full["format"] = FORMAT
    full["format_version"] = FORMAT_VERSION
    full["fingerprint"] = fingerprint(full)
    full["feature_dim"] = int(np.prod(clean.shapes[0])) if len(layers) == 1 else [int(np.prod(s)) for s in clean.shapes]
    full.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    full["rows"] = n

    with translated(path, error=_disk_error):
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _reserve_space(path.with_name(f".{path.name}.tmp-{os.getpid()}.reserve"), _estimated_size(tables, dtype), path)
    try:
        with h5py.File(temporary, "w") as out:
            for key, value in full.items():
                out.attrs[key] = json.dumps(value) if isinstance(value, (list, dict, tuple)) else value
            for table in TABLES:
                data = tables.get(table.name)
                if data is None and table.features:
                    continue  # e.g. no augmented views: the group is absent
                _write_table(out, table, data, layers=layers, dtype=dtype, block_rows=block_rows)
        fsync_file(temporary)
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        temporary.unlink(missing_ok=True)
        raise _disk_error(exc, path) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _write_table(out: h5py.File, table: Table, data: "TableData | None", *, layers, dtype, block_rows: int) -> None:
    group = out.require_group(table.group) if table.group else out
    for column in table.columns:
        values = data.columns[column.name] if data is not None else []
        encoded = _encode(column.kind, values)
        if column.kind == "text":
            group.create_dataset(column.name, data=encoded, dtype=_STRING)
        else:
            group.create_dataset(column.name, data=encoded)
    if not table.features or data is None:
        return
    n = len(data)
    if table.name == "rows" and len(layers) > 1:
        features = group.create_group("features")
        targets = [_feature_dataset(features, layer, n, shape, dtype) for layer, shape in zip(layers, data.shapes)]
    else:
        targets = [_feature_dataset(group, "features", n, data.shapes[0], dtype)]
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        for target, block in zip(targets, data.features(start, stop)):
            target[start:stop] = np.asarray(block, dtype=dtype).reshape((stop - start,) + target.shape[1:])


def _estimated_size(tables: dict, dtype: np.dtype) -> int:
    """An upper bound of the bytes a cache file takes: whole chunks of every feature dataset, strings, slack."""
    total = 1 << 20
    for name, data in tables.items():
        table = TABLES_BY_NAME[name]
        n = len(data)
        for shape in (data.shapes or []) if table.features else []:
            row_bytes = int(np.prod(shape)) * dtype.itemsize
            chunk = _chunk_rows(row_bytes, max(n, 1))
            total += -(-n // chunk) * chunk * row_bytes + 64 * (-(-n // chunk))
        for column in table.columns:
            if column.kind == "text":
                total += sum(64 + len(str(text).encode("utf-8", "surrogateescape")) for text in data.columns[column.name])
            else:
                total += 80 * n
    return int(total * 1.05)


def _reserve_space(reservation: Path, needed: int, path: Path) -> None:
    """Refuse, before HDF5 writes a byte, a cache that cannot fit on its disk.

    HDF5 handles a full disk badly: a write that fails while it flushes its caches can leave the library in a state
    where the process later crashes. So the space is claimed first with ``posix_fallocate`` on a scratch file (which
    counts quotas and reserved blocks exactly as the real write will), then released for the cache. Filesystems
    without fallocate skip the check.
    """
    try:
        fd = os.open(reservation, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _disk_error(exc, path) from exc
    try:
        os.posix_fallocate(fd, 0, max(1, needed))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _disk_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise _disk_error(exc, path) from exc
    finally:
        os.close(fd)
        reservation.unlink(missing_ok=True)


def _feature_dataset(parent: h5py.Group, name: str, n: int, shape: tuple[int, ...], dtype: np.dtype) -> h5py.Dataset:
    row_bytes = int(np.prod(shape)) * dtype.itemsize
    chunks = (_chunk_rows(row_bytes, n),) + tuple(shape) if n else None
    return parent.create_dataset(name, shape=(n,) + tuple(shape), dtype=dtype, chunks=chunks)


def sweep_temporaries(path: Path) -> None:
    """Remove temporary final files of killed runs (call only while holding the cache's lock)."""
    path = Path(path)
    for stale in glob.glob(glob.escape(str(path.with_name(f".{path.name}.tmp-"))) + "*"):
        with contextlib.suppress(OSError):
            os.unlink(stale)
