"""``python -m transfer_cache.export_vectors``: a cache's vectors as one Parquet file that any tool reads.

One row per image (``parquet_vectors.COLUMNS``: id, path, label, class, split, and the vector as a fixed-size list
of float32), so pandas, DuckDB, Polars or Spark read it without this package. The feature configuration that made
the vectors, the class names and the failed images go into the file's key-value metadata, so
``python -m transfer_cache.import_vectors`` makes the same cache of it again. The cache is read and the file written
one row group at a time (``Cache.read_rows`` blocks of about 16 MB), so memory stays flat however many rows there
are; the file is written under a temporary name and renamed when complete, like every file the package writes.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _atomic, _cli
from ._checks import check_file_target
from ._errors import TransferCacheError
from .cache import Cache, open_cache
from .parquet_vectors import COLUMNS, FORMAT, FORMAT_VERSION, require_pyarrow, schema

__all__ = ["export_vectors", "VectorsExport"]

_WHERE = "choose an OUT path on another disk"
_PARQUET_MAGIC = b"PAR1"  # the first four bytes of every Parquet file
# the text columns repeat (classes, splits): dictionary-encoded; the vectors never do, and trying costs a pass
_DICTIONARY = [COLUMNS.label_name, COLUMNS.split]
# vectors per row group: about 16 MB. The peak memory is about 8 times that (the block read, its Arrow table, the
# encoded and compressed pages): 300 MB for 200 000 x 1280 float32 against 620 MB with 64 MB, at the same speed
_ROW_GROUP_BYTES = 16 << 20


def _group_rows(dim: int) -> int:
    return max(1, _ROW_GROUP_BYTES // (4 * dim))


@dataclass(frozen=True)
class VectorsExport:
    """What one export wrote."""

    path: Path
    rows: int
    dim: int
    layer: str
    fingerprint: str

    def summary(self) -> str:
        return (f"exported {self.rows} rows of {self.dim} float32 (layer '{self.layer}', fingerprint "
                f"{self.fingerprint}) -> {self.path}")


def _checked_out(out) -> Path:
    """The Parquet file to write: not a folder, under a folder that is one (a missing folder is created), and when
    it exists a Parquet file (derived data, replaced), never another kind of file such as a cache."""
    out = Path(out)
    if out.is_dir():
        raise TransferCacheError(f"{out} is a folder; give the Parquet file to write, e.g. {out / 'vectors.parquet'}")
    if out.is_file():
        with open(out, "rb") as handle:
            magic = handle.read(4)
        if magic != _PARQUET_MAGIC:
            raise TransferCacheError(f"{out} exists and is not a Parquet file; export_vectors replaces only a Parquet "
                                     "file: choose another OUT path")
    return check_file_target(out, "OUT")


def file_metadata(cache: Cache, layer: str) -> dict:
    """The ``transfer_cache.*`` metadata of an export of ``layer``: the configuration of exactly these vectors (this
    one layer; the clean vectors, which augmented views do not change), and what else the cache knows."""
    config = dataclasses.replace(cache.feature_config, layers=[layer], augment=0)
    info = cache.info
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": config.fingerprint,
        "cache_fingerprint": cache.fingerprint,
        "feature_config": config.as_dict(),
        "layer": layer,
        "row_shape": list(cache.features_for(layer).shape[1:]),
        "class_names": list(cache.class_names),
        "source": {"source": info.source, "source_kind": info.source_kind, "source_root": info.source_root,
                   "shard": info.shard},
        "cache_name": cache.path.name,
        "failed": [[path, reason, digest] for (path, reason), digest in zip(cache.failed, cache.failed_ids)],
    }


def _block_table(pa, cache: Cache, start: int, stop: int, vectors: np.ndarray, table_schema):
    """Rows ``start:stop`` of the cache as one Arrow table of ``table_schema``."""
    labels = cache.labels[start:stop]
    names = cache.class_names
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    columns = {
        COLUMNS.id: pa.array(cache.ids[start:stop], type=pa.string()),
        COLUMNS.path: pa.array(cache.paths[start:stop], type=pa.string()),
        COLUMNS.label: pa.array(labels, type=pa.int64()),
        COLUMNS.label_name: pa.array([names[label] if label >= 0 else None for label in labels.tolist()],
                                     type=pa.string()),
        COLUMNS.split: pa.array(list(cache.split[start:stop]), type=pa.string()),
        COLUMNS.vector: pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
    }
    return pa.Table.from_pydict(columns, schema=table_schema)


def export_vectors(cache, out, *, layer: str | None = None, progress: bool = False) -> VectorsExport:
    """Write the vectors of ``cache`` (one ``layer``: required when it holds several) to the Parquet file ``out``.

    An existing ``out`` is replaced only once the new file is complete (it is derived data: the cache can write it
    again); a missing folder is created.
    """
    out = _checked_out(out)
    with open_cache(cache, check_vectors=True) as opened:
        opened.require_rows("export")
        chosen = opened.layer_name(layer, must_choose=True)
        pa = require_pyarrow()
        import pyarrow.parquet as pq
        from tqdm.auto import tqdm

        dataset = opened.features_for(chosen)
        n, dim = len(opened), int(np.prod(dataset.shape[1:]))
        metadata = file_metadata(opened, chosen)
        table_schema = schema(pa, dim, metadata)
        step = _group_rows(dim)
        with _atomic.replacing(out, where=_WHERE) as temporary, _atomic.writing(temporary), \
                tqdm(total=n, desc="exporting", unit="row", disable=not progress, file=sys.stderr,
                     leave=False) as bar:
            with pq.ParquetWriter(temporary, table_schema, use_dictionary=_DICTIONARY) as writer:
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    vectors = opened.read_rows(np.arange(start, stop), layer=chosen).reshape(stop - start, dim)
                    writer.write_table(_block_table(pa, opened, start, stop, vectors, table_schema),
                                       row_group_size=step)
                    bar.update(stop - start)
        return VectorsExport(path=out, rows=n, dim=dim, layer=chosen, fingerprint=metadata["fingerprint"])


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.export_vectors caches/photos-*.h5 vectors.parquet
  python -m transfer_cache.export_vectors caches/flowers-*.h5 mixed7.parquet --layer mixed7

Columns: id (sha256 of the image), path, label (-1 unlabelled), class (its name), split, vector (a fixed-size list
of float32). The feature configuration, fingerprint and class names are in the file's key-value metadata
(transfer_cache.*), so python -m transfer_cache.import_vectors turns the file into the same cache again.
An existing OUT is replaced once the new file is complete. Needs pyarrow (pip install "transfer_cache[parquet]").
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.export_vectors",
        "Write the vectors of a cache to a Parquet file that pandas, DuckDB and pyarrow read without transfer_cache.",
        EPILOG,
    )
    parser.add_argument("cache", metavar="CACHE", help="cache file (.h5) written by python -m transfer_cache.extract")
    parser.add_argument("out", metavar="OUT.parquet", help="the Parquet file to write (replaced when it exists)")
    parser.add_argument("--layer", default=None, metavar="NAME",
                        help="the layer to export (required when the cache holds several)")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
    return parser


def _main(args) -> int:
    print(export_vectors(args.cache, args.out, layer=args.layer, progress=args.progress).summary())
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
