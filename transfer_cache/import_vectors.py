"""``python -m transfer_cache.import_vectors``: a cache written from a Parquet file of vectors computed elsewhere.

A file ``export_vectors`` wrote carries its feature configuration, class names, source and failed images in its
metadata: it becomes the same cache again (same name, fingerprint, rows and vectors), so a later ``extract`` of that
source with those options finds it. A file from elsewhere needs the extract options that made its vectors
(``--backbone`` at least; the options are ``extract_options.ExtractOptions``' group "vectors", declared once): the
vector length is checked against what that backbone, layer, pooling and input size make, and every vector must be
finite. ``--source`` names the images the vectors were computed from, so the cache gets that source's name, labels
and splits, and a later ``extract`` of it reuses every row the file held and computes only the rest. Vectors are
read one row group at a time and written straight into the cache, so memory stays flat in the number of rows.
"""

from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _atomic, _cli, _options
from ._checks import check_folder
from ._errors import ImageError, TransferCacheError
from ._versions import library_versions
from .cache import (
    NAME_FINGERPRINT,
    CacheInfo,
    Rows,
    cache_filename,
    cache_lock,
    default_cache_dir,
    open_cache,
    write_cache,
)
from .extract_options import ExtractOptions, feature_config, for_source, option_names
from .feature_config import FeatureConfig
from .parquet_rows import (
    ImportedRows,
    checked_paths,
    checked_splits,
    exported_labels,
    file_ids,
    given_ids,
    labels_from_file,
    read_columns,
    source_rows,
)
from .parquet_vectors import COLUMNS, decode_metadata, require_pyarrow

__all__ = ["import_vectors", "VectorsImport"]


@dataclass(frozen=True)
class VectorsImport:
    """What one import wrote."""

    path: Path
    rows: int
    dim: int
    classes: int
    fingerprint: str

    def summary(self) -> str:
        return (f"imported {self.rows} rows of {self.dim} values ({self.classes} classes, fingerprint "
                f"{self.fingerprint}) -> {self.path}")


@dataclass
class _Plan:
    """The cache to write: its configuration, rows, per-row vector shape, source attributes and file name."""

    config: FeatureConfig
    rows: ImportedRows
    row_shape: tuple
    info: CacheInfo
    name: str


def _open(parquet) -> tuple[Path, object]:
    path = Path(parquet)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise TransferCacheError(f"{path} {what}; give a Parquet file of vectors, e.g. one written by python -m "
                                 "transfer_cache.export_vectors CACHE OUT.parquet")
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return path, pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise TransferCacheError(f"{path} is not a Parquet file ({exc}); give a Parquet file of vectors") from None


def _vector_field(pf, column: str, path: Path) -> int | None:
    """The vector length the file declares (a fixed-size list), or that its first row has (lists of any length: the
    others are checked as they are read); refused when the column holds no lists of floats."""
    import pyarrow as pa

    schema = pf.schema_arrow
    if column not in schema.names:
        raise TransferCacheError(
            f"{path} has no column '{column}' (its columns: {', '.join(schema.names)}); name the column of vectors "
            f"'{COLUMNS.vector}' or give it with --vector-column NAME"
        )
    kind = schema.field(column).type
    is_list = pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)
    if not is_list or not pa.types.is_floating(kind.value_type):
        raise TransferCacheError(
            f"column '{column}' of {path} holds {kind}; expected one list of floats per row (a fixed-size list of "
            "float32, as export_vectors writes it)"
        )
    if pa.types.is_fixed_size_list(kind):
        return kind.list_size
    first = pf.read_row_group(0, columns=[column]).column(0)[0] if pf.num_row_groups else None
    return len(first) if first is not None and first.is_valid else None


# --------------------------------------------------------------------------- the plan: a file of ours, or not


def _flags(names) -> str:
    fields = {f.name: _options.cli_flag(f) for f, _ in _options.declared(ExtractOptions)}
    return ", ".join(fields.get(name, f"--{name.replace('_', '-')}") for name in names)


def _exported_plan(pf, meta: dict, path: Path, *, fixed: int | None, given: dict, source, images_root) -> _Plan:
    """A file export_vectors wrote: everything comes from it; options that would contradict it are refused."""
    extra = [*given] + ["source"] * (source is not None) + ["images_root"] * (images_root is not None)
    if extra:
        raise TransferCacheError(
            f"{path} was written by export_vectors and carries the feature configuration of its vectors "
            f"(fingerprint {meta['fingerprint']}) and their source; drop {_flags(extra)}"
        )
    config = FeatureConfig.from_attrs(meta["feature_config"])
    row_shape = _checked_shape(tuple(meta["row_shape"]), fixed, config, path)
    columns = read_columns(pf, path)
    ids = given_ids(columns, path)
    if ids is None:
        raise TransferCacheError(f"{path} was written by export_vectors but has no column '{COLUMNS.id}'; "
                                 "export the cache again")
    rows = ImportedRows(ids=ids, paths=checked_paths(columns, path),
                        labels=exported_labels(columns, list(meta["class_names"]), path),
                        split=checked_splits(columns, path), class_names=list(meta["class_names"]),
                        failed=[tuple(entry) for entry in meta["failed"]])
    recorded = meta["source"] if isinstance(meta["source"], dict) else {}
    info = CacheInfo(**{key: str(recorded.get(key, "")) for key in ("source", "source_kind", "source_root", "shard")})
    named = NAME_FINGERPRINT.search(meta["cache_name"])
    name = (meta["cache_name"][:named.start(1)] + config.fingerprint + meta["cache_name"][named.end(1):] if named
            else cache_filename(source_name=Path(meta["cache_name"]).stem, source_description=info.source,
                                backbone=config.backbone, fingerprint=config.fingerprint))
    return _Plan(config=config, rows=rows, row_shape=row_shape, info=info, name=name)


def _foreign_config(given: dict, path: Path) -> FeatureConfig:
    if "backbone" not in given:
        raise TransferCacheError(
            f"{path} does not say which feature configuration made its vectors (export_vectors did not write it); "
            "give the extract options that made them: --backbone NAME at least, and --layer, --pooling, --input-size, "
            "--weights as they were"
        )
    config = feature_config(**given)
    if config.views:
        raise TransferCacheError(f"{path} holds one vector per image and no augmented views; drop --augment")
    if len(config.layers) != 1:
        raise TransferCacheError(f"{path} holds one vector column, so one layer; --layer names "
                                 f"{len(config.layers)} ({', '.join(config.layers)})")
    return config


def _foreign_plan(pf, path: Path, *, fixed: int | None, given: dict, source, images_root, progress: bool) -> _Plan:
    """A file from elsewhere: the configuration the user gives; rows from the file, or from ``source``. Every column
    is checked, then the vector length, before any image is read for its id."""
    config = _foreign_config(given, path)
    columns = read_columns(pf, path)
    paths = checked_paths(columns, path)
    ids = given_ids(columns, path)
    if source is not None:
        if images_root is not None:
            raise TransferCacheError("--source knows where its images are; drop --images-root")
        from .sources import open_source

        src = open_source(str(source))
        config = for_source(config, src)
        records, labels, splits = source_rows(columns, src, path)
        rows = ImportedRows(ids=ids or [], paths=paths, labels=labels, split=splits,
                            class_names=list(src.class_names),
                            failed=[(failed_path, reason, "") for failed_path, reason in src.failed])
        info = CacheInfo(source=src.description, source_kind=src.kind, source_root=str(src.root or ""))
        name = cache_filename(source_name=src.name, source_description=src.description, backbone=config.backbone,
                              fingerprint=config.fingerprint)
    else:
        root = Path(images_root) if images_root is not None else path.parent
        labels, class_names = labels_from_file(columns, path)
        rows = ImportedRows(ids=ids or [], paths=paths, labels=labels, split=checked_splits(columns, path),
                            class_names=class_names)
        info = CacheInfo(source=f"parquet:{path.resolve()}", source_kind="parquet", source_root=str(root))
        name = cache_filename(source_name=path.stem, source_description=info.source, backbone=config.backbone,
                              fingerprint=config.fingerprint)
    row_shape = _checked_shape(_made_shape(config), fixed, config, path)
    if ids is None:  # the images themselves, read once every other check has passed
        rows.ids = _source_ids(src, records, path) if source is not None else file_ids(paths, root, path, progress)
    return _Plan(config=config, rows=rows, row_shape=row_shape, info=info, name=name)


def _source_ids(src, records: list[int], path: Path) -> list[str]:
    ids = []
    for i in records:
        try:
            ids.append(src.digest(i))
        except (ImageError, OSError) as exc:
            raise TransferCacheError(f"{src.records[i].path}, an image of {path}, cannot be read from "
                                     f"{src.description} to compute its id: {exc}") from None
    return ids


def _wrong_length(path: Path, length: int, config: FeatureConfig, row_shape: tuple) -> TransferCacheError:
    return TransferCacheError(
        f"{path} holds vectors of {length} values, but {config.backbone} (layer {config.layers[0]}, pooling "
        f"{config.pooling}, input size {config.input_size}) makes vectors of {int(np.prod(row_shape))}; give the "
        "extract options that made these vectors (--backbone, --layer, --pooling, --input-size)"
    )


def _checked_shape(row_shape: tuple, fixed: int | None, config: FeatureConfig, path: Path) -> tuple:
    """``row_shape``, when the file's vector length (None: unknown, checked row by row) agrees with it."""
    if fixed is not None and fixed != int(np.prod(row_shape)):
        raise _wrong_length(path, fixed, config, row_shape)
    return row_shape


def _made_shape(config: FeatureConfig) -> tuple:
    """The shape of one vector as ``config`` makes it: read off the feature model built with random weights."""
    from .backbones import build_feature_model

    model, _ = build_feature_model(backbone=config.backbone, layers=list(config.layers), pooling=config.pooling,
                                   input_size=int(config.input_size), weights="none",
                                   preprocessing=config.preprocessing)
    return tuple(int(d) for d in model.output_shape[1:])


# --------------------------------------------------------------------------- the vectors, streamed and checked


class _VectorStream:
    """``feature_rows(start, stop)`` for the cache writer, called with consecutive blocks: the file's row groups read
    in order, each vector checked (present, one length, the configuration's length, finite) as it passes."""

    def __init__(self, pf, *, column: str, path: Path, paths: list[str], row_shape: tuple, config: FeatureConfig):
        # one row group at a time (iter_batches reads ahead: a 1 GB file held 1.2 GB at its peak)
        self._batches = (batch for k in range(pf.num_row_groups)
                         for batch in pf.read_row_group(k, columns=[column]).to_batches(max_chunksize=4096))
        self._path, self._paths, self._row_shape, self._config = path, paths, row_shape, config
        self._dim = int(np.prod(row_shape))
        self._buffer = np.empty((0, self._dim), dtype=np.float32)
        self._next = 0  # the file row of the buffer's first vector

    def __call__(self, start: int, stop: int) -> list[np.ndarray]:
        if start != self._next:
            raise ValueError(f"vectors are read in order: expected block {self._next}.., got {start}..")
        parts, have = [self._buffer], len(self._buffer)
        while have < stop - start:
            block = self._checked(next(self._batches).column(0), start + have)
            parts.append(block)
            have += len(block)
        joined = np.concatenate(parts) if len(parts) > 1 else self._buffer
        self._buffer, self._next = joined[stop - start:], stop
        return [joined[: stop - start].reshape((stop - start,) + self._row_shape)]

    def _where(self, row: int) -> str:
        return f"row {row} of {self._path} ({self._paths[row]})"

    def _checked(self, array, first: int) -> np.ndarray:
        import pyarrow as pa

        if array.null_count:
            row = first + int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
            raise TransferCacheError(f"{self._where(row)} has no vector (null); every row needs one")
        lengths = (np.full(len(array), array.type.list_size) if pa.types.is_fixed_size_list(array.type)
                   else array.value_lengths().to_numpy(zero_copy_only=False))
        wrong = np.flatnonzero(lengths != self._dim)
        if len(wrong):
            row = first + int(wrong[0])
            if row == 0:
                raise _wrong_length(self._path, int(lengths[wrong[0]]), self._config, self._row_shape)
            raise TransferCacheError(
                f"{self._where(row)} holds a vector of {int(lengths[wrong[0]])} values but row 0 one of {self._dim}; "
                "every vector must have the same length"
            )
        values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        block = values.reshape(len(array), self._dim)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            k = int(np.argmin(finite))
            value = "NaN" if np.isnan(block[k]).any() else "infinity"
            raise TransferCacheError(f"{self._where(first + k)} holds {value} in its vector; a cache holds finite "
                                     "vectors: fix or drop that row")
        return block


# --------------------------------------------------------------------------- writing the cache


def _attrs(plan: _Plan) -> dict:
    info = CacheInfo(source=plan.info.source, source_kind=plan.info.source_kind, source_root=plan.info.source_root,
                     shard=plan.info.shard, versions=library_versions(),
                     created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    attrs = {key: value for key, value in info.as_attrs().items() if value is not None}
    return {**plan.config.as_dict(), **attrs, "class_names": list(plan.rows.class_names)}


def _write(plan: _Plan, pf, *, target: Path, column: str, path: Path, overwrite: bool, progress: bool) -> None:
    from tqdm.auto import tqdm

    rows = plan.rows
    stream = _VectorStream(pf, column=column, path=path, paths=rows.paths, row_shape=plan.row_shape,
                           config=plan.config)

    def counted(start: int, stop: int) -> list[np.ndarray]:
        block = stream(start, stop)
        bar.update(stop - start)
        return block

    with cache_lock(target):
        if target.exists() and not overwrite:  # before the progress bar: a refusal is one line, not a bar and a line
            raise TransferCacheError(
                f"cache {target} already exists; import_vectors replaces a cache only when given --overwrite "
                "(python -m transfer_cache.extract reuses the one there)"
            )
        with tqdm(total=len(rows.ids), desc="importing", unit="row", disable=not progress, file=sys.stderr,
                  leave=False) as bar:
            write_cache(target, attrs=_attrs(plan), feature_rows=counted, feature_shapes=[plan.row_shape],
                        rows=Rows(**rows.columns(), failed=[(p, reason) for p, reason, _ in rows.failed]),
                        failed_ids=[digest for _, _, digest in rows.failed])
    with open_cache(target) as check:  # the file is the cache that was planned, or nothing is claimed
        if check.fingerprint != plan.config.fingerprint or len(check) != len(rows.ids):
            raise TransferCacheError(f"imported cache {target} does not match {path}; import it again")


def import_vectors(parquet, *, cache_dir=None, source=None, images_root=None, vector_column: str = COLUMNS.vector,
                   overwrite: bool = False, progress: bool = False, **vector_options) -> VectorsImport:
    """Write a cache from the Parquet file ``parquet`` into ``cache_dir`` (default ``$TRANSFER_CACHE_DIR`` or
    ``./caches``) and say what was written. ``vector_options`` are extract's options of group "vectors" (backbone,
    layer, pooling, input_size, weights, ...): required for a file export_vectors did not write, refused for one it
    did (that file says them itself). ``source``: the images the vectors were computed from (their labels, splits
    and the cache's name come from it); else ``images_root`` is where the file's relative paths point, when ids are
    computed from the images (default: the file's folder)."""
    folder = check_folder(cache_dir if cache_dir is not None else default_cache_dir(), "cache folder", "--cache-dir")
    path, pf = _open(parquet)
    try:
        meta = decode_metadata(pf.schema_arrow.metadata)
    except ValueError as exc:
        raise TransferCacheError(f"{path} is damaged: {exc}; export the cache again") from None
    fixed = _vector_field(pf, vector_column, path)
    if pf.metadata.num_rows == 0:
        raise TransferCacheError(f"{path} holds no rows: there is nothing to import")
    if meta:
        plan = _exported_plan(pf, meta, path, fixed=fixed, given=vector_options, source=source,
                              images_root=images_root)
    else:
        plan = _foreign_plan(pf, path, fixed=fixed, given=vector_options, source=source, images_root=images_root,
                             progress=progress)
    dim = int(np.prod(plan.row_shape))
    target = folder / plan.name
    with _atomic.translated(folder, where="give --cache-dir a folder on a writable disk"):
        folder.mkdir(parents=True, exist_ok=True)
    _write(plan, pf, target=target, column=vector_column, path=path, overwrite=overwrite, progress=progress)
    return VectorsImport(path=target, rows=len(plan.rows.ids), dim=dim, classes=len(plan.rows.class_names),
                         fingerprint=plan.config.fingerprint)


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.import_vectors vectors.parquet --cache-dir caches
  python -m transfer_cache.import_vectors theirs.parquet --backbone efficientnet_lite0 --source photos
  python -m transfer_cache.import_vectors theirs.parquet --backbone tiny --weights none --images-root photos

A file written by python -m transfer_cache.export_vectors becomes the same cache again (its configuration is in
its metadata). Any other file needs the extract options that made its vectors (--backbone at least), a column
'path' and a column 'vector' (one list of floats per row); optional: 'id' (sha256 of each image's file; computed
from the images when missing), 'label' (class index, -1 unlabelled), 'class' (class name), 'split'.
Needs pyarrow (pip install "transfer_cache[parquet]").
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.import_vectors",
        "Write a cache from a Parquet file of vectors: one exported by export_vectors, or computed elsewhere with a "
        "feature configuration you name.",
        EPILOG,
    )
    parser.add_argument("parquet", metavar="IN.parquet", help="the Parquet file of vectors")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="where caches live (default $TRANSFER_CACHE_DIR or ./caches)")
    parser.add_argument("--source", default=None, metavar="SOURCE",
                        help="the images the vectors were computed from (as extract takes them): the cache gets its "
                             "name, labels and splits, so a later extract of it reuses these vectors")
    parser.add_argument("--images-root", default=None, metavar="FOLDER",
                        help="without --source: the folder the file's relative paths are in, to compute missing ids "
                             "(default: the file's folder)")
    parser.add_argument("--vector-column", default=COLUMNS.vector, metavar="NAME",
                        help=f"the column of vectors (default '{COLUMNS.vector}')")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache of the same name")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    _options.add_arguments(parser, ExtractOptions, {"vectors": "what made the vectors (files from elsewhere only; "
                                                               "extract's options)"}, only=("vectors",))
    parser.set_defaults(**{name: None for name in option_names("vectors")})  # None: not given
    return parser


def _main(args) -> int:
    given = {name: getattr(args, name) for name in option_names("vectors") if getattr(args, name) is not None}
    result = import_vectors(args.parquet, cache_dir=args.cache_dir, source=args.source, images_root=args.images_root,
                            vector_column=args.vector_column, overwrite=args.overwrite, progress=args.progress,
                            **given)
    print(result.summary())
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
