"""The HDF5 cache of transfer values: the contract between extraction and every later stage.

One file per (image source, feature configuration), named by the configuration's fingerprint. This module reads
caches (``Cache``: validated on open, vectors sliced lazily), names them, and locks one cache path against two
writers; ``cache_writer`` writes them atomically and ``cache_tables`` declares their per-row datasets. The format
stands on its own: it knows tables, columns, attributes and the typed ``FeatureConfig`` record, nothing of the
backbone or runtime registries. A cache file is only ever visible complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from . import cache_tables
from ._atomic import translated
from ._errors import TransferCacheError
from .cache_tables import (  # noqa: F401  (the cache's contract, importable from here)
    CLEAN_ROWS,
    REBUILD,
    TABLES,
    Column,
    Failure,
    ImageRow,
    Table,
    ViewEntry,
    decode,
    empty_value,
)
from .cache_writer import (  # noqa: F401  (the cache's contract, importable from here)
    FORMAT,
    Rows,
    TableData,
    disk_write_error,
    sweep_temporaries,
    write_cache,
    write_tables,
)
from .feature_config import DTYPES, FINGERPRINT_FIELDS, FORMAT_VERSION, FeatureConfig, fingerprint  # noqa: F401
from .shards import SUFFIX, Shard

# the fingerprint in a cache's file name (see cache_filename), with an optional shard suffix
NAME_FINGERPRINT = re.compile(rf"\.([0-9a-f]{{16}})(?:{SUFFIX})?\.h5$")


class NewerFormatError(TransferCacheError):
    """A cache written by a newer transfer_cache: not damaged, so it is never deleted or overwritten."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:40] or "source"


def cache_filename(
    *, source_name: str, source_description: str, backbone: str, fingerprint: str, shard: Shard | None = None,  # noqa: F811
) -> str:
    """``<source>-<source hash>.<backbone>.<fingerprint>[.shardK-of-N].h5``: readable, and never shared by two
    configurations."""
    source_hash = hashlib.sha256(source_description.encode("utf-8")).hexdigest()[:6]
    suffix = f".{shard.suffix}" if shard is not None else ""
    return f"{_slug(source_name)}-{source_hash}.{backbone}.{fingerprint}{suffix}.h5"


def default_cache_dir() -> Path:
    """``$TRANSFER_CACHE_DIR`` when set, else ``./caches``."""
    return Path(os.environ.get("TRANSFER_CACHE_DIR") or "caches")


@dataclass(frozen=True)
class CacheInfo:
    """A cache's attributes other than its feature configuration: where its images came from, what it cost."""

    source: str = ""
    source_kind: str = ""
    source_root: str = ""
    shard: str = ""
    created: str = ""
    versions: dict = dataclasses.field(default_factory=dict)
    extraction_seconds: float | None = None
    extraction_computed: int | None = None
    merged_from: list = dataclasses.field(default_factory=list)

    @classmethod
    def from_attrs(cls, attrs) -> "CacheInfo":
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: attrs[name] for name in names if attrs.get(name) is not None})

    def as_attrs(self) -> dict:
        """The attributes to write; ``merged_from`` only on a merged cache."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "merged_from" or v}


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def cache_lock(path: Path, *, timeout: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on one cache path so two extractions never write it at once.

    The lock is an ``flock`` on ``.<name>.lock`` beside the cache: the kernel releases it when the holder
    dies, so a killed run never leaves a stale lock. ``timeout`` seconds are waited before giving up.
    """
    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    with translated(path, error=disk_write_error):  # a read-only or missing cache folder is one line, not a traceback
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


# --------------------------------------------------------------------------- reading


class Cache:
    """A finished cache, opened read-only. Features stay on disk and are sliced lazily.

    ``features`` is the (N, D) dataset of the only layer (``features_for(layer)`` when there are several);
    ``labels`` and ``class_names`` are loaded into memory, ``ids``, ``paths`` and ``split`` on first use (read them
    while the cache is open); ``config`` holds
    every root attribute (backbone, layers, pooling, input size, fingerprint, ...). ``tables[name][column]`` holds
    every declared per-row dataset (``TABLES``).
    """

    def __init__(self, path: str | os.PathLike, *, check_vectors: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise TransferCacheError(
                f"cache file {self.path} does not exist; run python -m transfer_cache.extract first"
            )
        if self.path.is_dir():
            raise TransferCacheError(f"{self.path} is a folder; give the cache file in it (a .h5 file written by "
                                     f"python -m transfer_cache.extract), e.g. {self.path / '*.h5'}")
        if not h5py.is_hdf5(self.path):
            if NAME_FINGERPRINT.search(self.path.name):  # named as extract names its caches: one of ours, damaged
                raise TransferCacheError(f"cache {self.path} is damaged (not an HDF5 file any more); {REBUILD}")
            raise TransferCacheError(
                f"{self.path} is not a cache: it is not an HDF5 file; expected a cache file (.h5) written by "
                "python -m transfer_cache.extract"
            )
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            if NAME_FINGERPRINT.search(self.path.name):
                raise TransferCacheError(
                    f"cannot open cache {self.path}: the file is damaged ({exc}); {REBUILD}"
                ) from exc
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
            raise TransferCacheError(
                f"cache {self.path} is damaged: it has no valid format_version attribute; {REBUILD}"
            )
        self.config: dict = {key: _attr(value) for key, value in attrs.items()}
        self.layers: list[str] = list(self.config["layers"])
        self.fingerprint: str = self.config["fingerprint"]
        named = NAME_FINGERPRINT.search(self.path.name)
        if named and named.group(1) != self.fingerprint:
            raise TransferCacheError(
                f"cache {self.path} holds fingerprint {self.fingerprint} but its name says {named.group(1)}: it was "
                f"renamed or copied from another feature configuration; give it back its name "
                f"({NAME_FINGERPRINT.sub(lambda m: m.group(0).replace(m.group(1), self.fingerprint), self.path.name)})"
            )
        self.class_names: list[str] = self._class_names()
        self.tables: dict[str, _Columns] = {table.name: self._read_table(table) for table in cache_tables.TABLES}
        for table in cache_tables.TABLES:  # the vectors of tables with one dataset under their attribute (views)
            if table.features_attribute is not None:
                node = table.node("features")
                setattr(self, table.features_attribute, self._file[node] if node in self._file else None)
        n = len(self)
        for layer in self.layers:
            dataset = self.features_for(layer)
            if dataset.shape[0] != n:
                raise TransferCacheError(
                    f"cache {self.path} is inconsistent: {dataset.name} holds {dataset.shape[0]} rows of vectors but "
                    f"/labels {n} (layer '{layer}'); {REBUILD}"
                )
        for table in cache_tables.TABLES:
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
                if value == "infinity" and dataset.dtype == np.float16:  # past float16's range: extract repeats it
                    advice = "extract it again with --dtype float32, which holds values that large"
                else:  # extract's hit check compares rows and options, not vectors: it would keep this file
                    advice = (
                        "extract would keep it as it is (its rows and options match): "
                        f"move it out of its folder, then {REBUILD}"
                    )
                raise TransferCacheError(
                    f"cache {self.path} is damaged: row {row} of {what} ({dataset.name}) holds {value}; {advice}"
                )

    def require_rows(self, doing: str = "look at") -> None:
        """One line, not an empty page or an IndexError, when the cache holds no rows (a command has nothing to do)."""
        if len(self) == 0:
            failed = f"; {len(self.failed)} images failed to decode" if self.failed else ""
            raise TransferCacheError(
                f"cache {self.path} holds no images (0 rows{failed}): there is nothing to {doing}; give a cache that "
                "python -m transfer_cache.extract wrote from a source with images"
            )

    def _read_table(self, table: Table) -> "_Columns":
        """One declared table's columns: whole numbers read now (they are small and checked), text and digests on
        first use (decoding a million paths and ids took 2 s of every command that opened a large cache); checks
        that every column (and its vectors) has one length from the datasets' shapes."""
        present = table.group == "" or table.group in self._file
        if not present:
            if table.promised_by and self.config.get(table.promised_by):
                raise TransferCacheError(
                    f"cache {self.path} is damaged: its attributes promise /{table.group} ({table.promised_by}: "
                    f"{self.config.get(table.promised_by)}) but the file has none; {REBUILD}"
                )
            return _Columns(self, table, None, 0)
        group = self._file[table.group] if table.group else self._file
        lengths = set()
        for column in table.columns:
            if column.name in group:
                lengths.add(group[column.name].shape[0] if group[column.name].shape else -1)
            elif not column.optional:
                raise TransferCacheError(
                    f"cache {self.path} is damaged: /{table.node(column.name)} is missing; {REBUILD}"
                )
        if len(lengths) > 1 or -1 in lengths:
            which = f"/{table.group} datasets differ in length" if table.group else "its datasets differ in length"
            raise TransferCacheError(f"cache {self.path} is inconsistent: {which}; {REBUILD}")
        n = lengths.pop() if lengths else 0
        if table.group and table.features and "features" in group and group["features"].shape[0] != n:
            raise TransferCacheError(
                f"cache {self.path} is inconsistent: /{table.group} rows and features differ; {REBUILD}"
            )
        columns = _Columns(self, table, group, n)
        for column in table.columns:
            if column.kind == "int" or column.check is not None:
                columns[column.name]  # noqa: B018  (read and checked now: small, and a damaged one must not open)
        return columns

    def table_features(self, table: Table, layer: str | None = None) -> "h5py.Dataset | None":
        """The vectors of one declared table (the clean rows' per layer), or None when it holds none."""
        if table.per_layer:
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
        """The length of a vector of the first (usually only) layer."""
        return self.feature_dims[0]

    @property
    def feature_dims(self) -> list[int]:
        """The length of a vector of each layer."""
        return [int(np.prod(self.features_for(layer).shape[1:])) for layer in self.layers]

    @property
    def failed(self) -> list[tuple[str, str]]:
        """The images that could not be read, as (path, reason) pairs."""
        return list(zip(self.failed_paths, self.failed_reasons))

    @property
    def feature_config(self) -> FeatureConfig:
        """The configuration the vectors were computed with, typed."""
        return FeatureConfig.from_attrs(self.config)

    @property
    def info(self) -> "CacheInfo":
        """The attributes that are not the feature configuration: where the images came from, what it cost."""
        return CacheInfo.from_attrs(self.config)

    def __len__(self) -> int:
        return self.tables[CLEAN_ROWS].rows

    def values_at(self, attribute: str, rows) -> list:
        """The values of the declared column under ``attribute`` (``"paths"``, ``"ids"``, ...) for a few ``rows``,
        read alone when the whole column has not been read: a neighbour query shows 12 paths of a million."""
        table, column = _declared(attribute)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if attribute in self.__dict__ or column.name in dict.keys(self.tables[table.name]) or not len(rows):
            values = getattr(self, attribute)
            return [values[row] for row in rows]
        unique, back = np.unique(rows, return_inverse=True)
        if not self._file.id.valid:
            raise TransferCacheError(f"cache {self.path} is closed; read its {column.name} while it is open (inside "
                                     "its with block)")
        group = self._file[table.group] if table.group else self._file
        if column.name not in group:  # an optional column of an older cache
            return [empty_value(column.kind)] * len(rows)
        try:
            read = decode(column.kind, group[column.name][unique])
        except Exception as exc:  # undecodable text
            raise TransferCacheError(f"cannot read cache {self.path}: the file is damaged ({exc}); {REBUILD}") from exc
        return [read[i] for i in back.reshape(-1)]

    def __getattr__(self, name: str):
        """A declared column under its attribute (``cache.paths``, ``cache.ids``, ...), read on first use."""
        if "tables" not in self.__dict__ or _declared(name) is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        table, column = _declared(name)
        values = self.tables[table.name][column.name]
        values = np.asarray(values, dtype=object) if column.as_array else values
        setattr(self, name, values)
        return values

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, rows={len(self)}, layers={self.layers}, fingerprint={self.fingerprint!r})"


def _declared(attribute: str) -> "tuple[Table, Column] | None":
    """The declared table and column held under a ``Cache`` attribute."""
    return next(((table, column) for table in cache_tables.TABLES for column in table.columns
                 if column.attribute == attribute), None)


class _Columns(dict):
    """The columns of one table of an open cache: each is read and decoded from the file the first time it is asked
    for (``rows``: the table's row count, known from the datasets' shapes without reading them)."""

    def __init__(self, cache: "Cache", table: Table, group, rows: int):
        super().__init__()
        self._cache, self._table, self._group, self.rows = cache, table, group, rows

    def __missing__(self, name: str):
        column = next((c for c in self._table.columns if c.name == name), None)
        if column is None:
            raise KeyError(name)
        if self._group is not None and not self._cache._file.id.valid:
            raise TransferCacheError(
                f"cache {self._cache.path} was closed before its {column.name} were read; read them while it is "
                "open (inside its with block)"
            )
        try:
            if self._group is None:
                values = decode(column.kind, [])
            elif column.name not in self._group:  # an optional column of an older cache
                values = decode(column.kind, [empty_value(column.kind)] * self.rows)
            else:
                values = decode(column.kind, self._group[column.name][()])
        except TransferCacheError:
            raise
        except Exception as exc:  # undecodable text
            raise TransferCacheError(
                f"cannot read cache {self._cache.path}: the file is damaged ({exc}); {REBUILD}"
            ) from exc
        if column.check is not None:
            column.check(self._cache, values)
        self[name] = values
        return values

    def __iter__(self):
        return iter(column.name for column in self._table.columns)

    def __len__(self) -> int:
        return len(self._table.columns)

    def __contains__(self, name) -> bool:
        return any(column.name == name for column in self._table.columns)

    def keys(self):
        return [column.name for column in self._table.columns]

    def values(self):
        return [self[name] for name in self.keys()]

    def items(self):
        return [(name, self[name]) for name in self.keys()]


_READ_BLOCK_BYTES = 64 << 20


def block_rows(dataset: h5py.Dataset) -> int:
    """Rows per block of about 64 MB: how every streaming reader of a cache walks a dataset."""
    row_bytes = max(1, int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize)
    return max(1, _READ_BLOCK_BYTES // row_bytes)


# A block holding fewer wanted rows than one in this many is read one selection per row instead: a handful of
# scattered rows (a neighbour query's candidates, exact re-scoring) must not cost 64 MB each.
_SPARSE_SHARE = 64


def read_rows(dataset: h5py.Dataset, rows) -> np.ndarray:
    """``dataset[rows]`` for sorted row numbers, as float32: whole contiguous blocks of about 64 MB are read and the
    wanted rows kept, rather than one HDF5 selection per row (fast) or the whole dataset (memory stays flat); a
    block with only a few wanted rows reads just those."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows),) + tuple(dataset.shape[1:]), dtype=np.float32)
    block = block_rows(dataset)
    done = 0
    while done < len(rows):
        start = int(rows[done])
        stop = min(dataset.shape[0], start + block)
        count = int(np.searchsorted(rows, stop, side="left")) - done
        wanted = rows[done : done + count]
        if count * _SPARSE_SHARE < stop - start:
            for place, row in enumerate(wanted, done):
                out[place] = dataset[int(row)]
        else:
            out[done : done + count] = np.asarray(dataset[start:stop], dtype=np.float32)[wanted - start]
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

