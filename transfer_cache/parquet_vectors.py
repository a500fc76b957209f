"""The Parquet file of vectors, declared once: its columns and its key-value metadata.

``export_vectors`` writes it and ``import_vectors`` reads it, so both spell its layout through here. The file is
plain Parquet that pandas, DuckDB and pyarrow read without this package: one row per image, the vector as a
fixed-size list of float32. What only a cache knows (the feature configuration that made the vectors, the class
names, the images that failed) travels in the file's key-value metadata under ``transfer_cache.*`` keys, so a file
this package wrote becomes the same cache again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._errors import TransferCacheError

FORMAT = "transfer_cache.vectors"
FORMAT_VERSION = 1
#: the first pyarrow that reads a Parquet file from elsewhere safely (14.0.1 fixed CVE-2023-47248: a crafted file
#: could run code while its extension types were read)
PYARROW_MINIMUM = "14.0.1"
INSTALL = f'pip install "pyarrow>={PYARROW_MINIMUM}" (or pip install "transfer_cache[parquet]")'


@dataclass(frozen=True)
class Columns:
    """The column names of a file of vectors (what ``export_vectors`` writes and ``import_vectors`` reads)."""

    id: str = "id"  # sha256 of the image's content (the cache's row key)
    path: str = "path"
    label: str = "label"  # class index, -1 unlabelled
    label_name: str = "class"  # the class name, null when unlabelled
    split: str = "split"  # train, val, test or "" (none)
    vector: str = "vector"  # fixed-size list of float32


COLUMNS = Columns()

# the metadata keys (bytes in the file; JSON values)
_PREFIX = "transfer_cache."
KEYS = ("format", "format_version", "fingerprint", "cache_fingerprint", "feature_config", "layer", "row_shape",
        "class_names", "source", "cache_name", "failed")


def require_pyarrow():
    """``pyarrow`` and ``pyarrow.parquet``, or one line saying how to install them (they are an optional extra)."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise TransferCacheError(f"reading and writing Parquet needs pyarrow, which is not installed; {INSTALL}") \
            from None
    return pyarrow


def schema(pa, dim: int, metadata: dict[str, Any]):
    """The file's Arrow schema: the columns of ``COLUMNS`` (vectors of ``dim`` float32) and the metadata."""
    fields = [
        pa.field(COLUMNS.id, pa.string(), nullable=False),
        pa.field(COLUMNS.path, pa.string(), nullable=False),
        pa.field(COLUMNS.label, pa.int64(), nullable=False),
        pa.field(COLUMNS.label_name, pa.string()),
        pa.field(COLUMNS.split, pa.string(), nullable=False),
        pa.field(COLUMNS.vector, pa.list_(pa.float32(), dim), nullable=False),
    ]
    return pa.schema(fields, metadata=encode_metadata(metadata))


def encode_metadata(values: dict[str, Any]) -> dict[bytes, bytes]:
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ValueError(f"metadata keys {unknown} are not declared in parquet_vectors.KEYS")
    return {(_PREFIX + key).encode(): json.dumps(value).encode("utf-8") for key, value in values.items()}


def decode_metadata(raw: dict | None) -> dict[str, Any]:
    """The ``transfer_cache.*`` entries of a file's metadata: {} for a file from elsewhere (none of them), all of
    ``KEYS`` for one this package wrote; anything between raises ValueError saying what is wrong."""
    found: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        name = key.decode("utf-8", "replace")
        if name.startswith(_PREFIX) and name[len(_PREFIX):] in KEYS:
            try:
                found[name[len(_PREFIX):]] = json.loads(value.decode("utf-8"))
            except ValueError:
                raise ValueError(f"its metadata entry {name} is not JSON") from None
    if not found:
        return {}
    if found.get("format") != FORMAT or int(found.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"its metadata says format {found.get('format')!r} version {found.get('format_version')!r}; "
                         f"this transfer_cache reads {FORMAT!r} up to version {FORMAT_VERSION}")
    missing = [_PREFIX + key for key in KEYS if key not in found]
    if missing:
        raise ValueError(f"its metadata lacks {', '.join(missing)}")
    return found
