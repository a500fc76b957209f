"""Writing a cache file: every declared table, atomically, with the vectors streamed block by block.

A cache file is only ever visible complete: it is assembled under a temporary name in its folder, fsynced and
renamed into place, after its size has been claimed on the disk. Nothing here names a dataset: the tables come
from ``cache_tables``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import glob
import json
import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from . import cache_tables
from ._atomic import disk_errno, disk_error, fsync_dir, fsync_tree, translated
from ._errors import TransferCacheError
from .cache_tables import CLEAN_ROWS, Failure, Table, ViewEntry, empty_value, encode, table
from .feature_config import FORMAT_VERSION, fingerprint

FORMAT = "transfer_cache"

_STRING = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20
_WHERE = "pass --cache-dir on another disk"


def disk_write_error(exc: Exception, path: Path) -> TransferCacheError:
    """One line for a cache file that could not be written; a full disk says what was kept (``_atomic`` words the
    rest)."""
    if disk_errno(exc) in (errno.ENOSPC, errno.EDQUOT):
        return TransferCacheError(
            f"no space left on the device while writing {path}: the previous cache (if any) is untouched and "
            f"finished batches are kept for the next run; free some space or {_WHERE}, then run again"
        )
    return disk_error(exc, path, where=_WHERE) or TransferCacheError(
        f"could not write {path}: {getattr(exc, 'strerror', None) or exc}; "
        "check the folder's permissions and free space"
    )


class Rows:
    """The clean rows of a cache as columns (one list per column of table "rows", by name) and the images that
    failed, as (path, reason) pairs: for callers that hold columns rather than entries (tools, tests, benchmarks)."""

    def __init__(self, *, failed=(), **columns):
        declared = {column.name: column for column in table(CLEAN_ROWS).columns}
        unknown = sorted(set(columns) - set(declared))
        missing = sorted(name for name, column in declared.items() if name not in columns and not column.optional)
        if unknown or missing:
            raise ValueError(f"Rows takes the columns {sorted(declared)}; unknown {unknown}, missing {missing}")
        self.columns = columns
        self.failed = list(failed)


class TableData:
    """What the writer needs for one declared table: its columns, and for a table with vectors a streaming reader
    ``features(start, stop)`` returning one block per dataset (per layer for the clean rows) with ``shapes``."""

    def __init__(self, columns: dict, features=None, shapes: list | None = None):
        self.columns = columns
        self.features = features
        self.shapes = shapes

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
    """Write a complete cache atomically from columns (``write_tables`` from tables): a temporary file in the same
    folder, fsync, then ``os.replace``.

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
    failures = [Failure(path, reason, digest) for (path, reason), digest in zip(rows.failed, failed_ids)]
    data = {
        CLEAN_ROWS: TableData(dict(rows.columns), features=feature_rows, shapes=[tuple(s) for s in feature_shapes]),
        "failed": TableData(table("failed").columns_of(failures)),
    }
    if view_rows is not None and views:
        data["augmented"] = TableData(
            table("augmented").columns_of(ViewEntry(row) for row in view_rows),
            features=lambda start, stop: [view_features(start, stop)],
            shapes=[(views,) + tuple(feature_shapes[0])],
        )
    return write_tables(path, attrs=attrs, tables=data, block_rows=block_rows)


def write_tables(path: str | os.PathLike, *, attrs: dict, tables: dict, block_rows: int = 4096) -> Path:
    """Write every declared table of ``tables`` (name -> ``TableData``; an absent table is written empty, or
    left out when it holds vectors) into a new cache file, atomically."""
    path = Path(path)
    layers = list(attrs["layers"])
    dtype = np.dtype(attrs["dtype"])
    for name, data in tables.items():
        lengths = {len(values) for values in data.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"table {name!r}: its columns {list(data.columns)} must have one entry per row")
    clean = tables[CLEAN_ROWS]
    n = len(clean)
    full = dict(attrs)
    full["format"] = FORMAT
    full["format_version"] = FORMAT_VERSION
    full["fingerprint"] = fingerprint(full)
    full["feature_dim"] = int(np.prod(clean.shapes[0])) if len(layers) == 1 else [int(np.prod(s)) for s in clean.shapes]
    full.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    full["rows"] = n

    with translated(path, error=disk_write_error):
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _reserve_space(path.with_name(f".{path.name}.tmp-{os.getpid()}.reserve"), _estimated_size(tables, dtype), path)
    try:
        with h5py.File(temporary, "w") as out:
            for key, value in full.items():
                out.attrs[key] = json.dumps(value) if isinstance(value, (list, dict, tuple)) else value
            for declared in cache_tables.TABLES:
                data = tables.get(declared.name)
                if data is None and declared.features:
                    continue  # e.g. no augmented views: the group is absent
                _write_table(out, declared, data, layers=layers, dtype=dtype, block_rows=block_rows)
        fsync_tree(temporary)
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        temporary.unlink(missing_ok=True)
        raise disk_write_error(exc, path) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _write_table(out: h5py.File, table: Table, data: "TableData | None", *, layers, dtype, block_rows: int) -> None:
    group = out.require_group(table.group) if table.group else out
    n = len(data) if data is not None else 0
    for column in table.columns:
        values = data.columns.get(column.name) if data is not None else []
        if values is None and column.optional:  # a caller that does not know the column: its empty value
            values = [empty_value(column.kind)] * n
        elif values is None:
            raise ValueError(f"table {table.name!r} needs its column {column.name!r}")
        encoded = encode(column.kind, values)
        if column.kind == "text":
            group.create_dataset(column.name, data=encoded, dtype=_STRING)
        else:
            group.create_dataset(column.name, data=encoded)
    if not table.features or data is None:
        return
    if table.per_layer and len(layers) > 1:
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
        n = len(data)
        for shape in data.shapes or []:
            row_bytes = int(np.prod(shape)) * dtype.itemsize
            chunk = _chunk_rows(row_bytes, max(n, 1))
            total += -(-n // chunk) * chunk * row_bytes + 64 * (-(-n // chunk))
        for column in cache_tables.table(name).columns:
            if column.kind == "text":
                texts = data.columns.get(column.name) or []
                total += sum(64 + len(str(text).encode("utf-8", "surrogateescape")) for text in texts)
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
        raise disk_write_error(exc, path) from exc
    try:
        os.posix_fallocate(fd, 0, max(1, needed))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise disk_write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise disk_write_error(exc, path) from exc
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
