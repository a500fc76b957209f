"""``python -m transfer_cache.extract``: push every image through a frozen backbone once and cache the vectors.

A re-run with the same configuration is a cache hit and computes nothing; when images are added only the new
ones are computed (rows are keyed by content digest); a killed run resumes from its finished batches. The options
are declared once, in ``feature_config.EXTRACT_OPTIONS``; this module is the order of the work: hash, find what is
known, compute what is new, assemble the new cache.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _atomic, _cli
from ._checks import whole_number
from ._versions import library_versions
from ._errors import ImageError, TransferCacheError
from .backbones import DEFAULT_BACKBONE, get_spec, list_backbones
from .cache import (
    Cache,
    NewerFormatError,
    Rows,
    WorkParts,
    cache_filename,
    cache_lock,
    default_cache_dir,
    sweep_temporaries,
    write_cache,
)
from .feature_config import (
    FeatureConfig,
    add_extract_arguments,
    feature_config,  # noqa: F401  (re-exported: extract.feature_config(...) is part of the Python API)
    fingerprint,
    option_names,
    options_from_args,
)
from .runtimes import AUTO
from .sources import source_help


@dataclass
class ExtractResult:
    """What one extraction did, for the summary line and for callers."""

    path: Path
    rows: int
    computed: int
    reused: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    compute_seconds: float = 0.0
    hit: bool = False
    first_batch_seconds: float | None = None  # from the call until the first batch's vectors were durable

    @property
    def images_per_second(self) -> float:
        return self.computed / self.compute_seconds if self.compute_seconds > 0 else 0.0

    def summary(self) -> str:
        if self.hit:
            return f"cache hit: {self.rows} rows, nothing computed ({len(self.failed)} failed images listed) -> {self.path}"
        return (
            f"{self.rows} rows written ({self.computed} computed, {self.reused} reused), {len(self.failed)} failed, "
            f"{self.images_per_second:.1f} images/s, {self.seconds:.1f} s -> {self.path}"
        )


@dataclass
class ShardedResult:
    """What a sharded run did: the merged cache and the per-shard extraction figures."""

    path: Path
    shard_paths: list[Path]
    rows: int = 0
    computed: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    hit: bool = False


def parse_shard(shard) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N): shard K (0-based) of N contiguous, deterministic slices of the image list."""
    if shard in (None, ""):
        return None
    if isinstance(shard, tuple):
        k, n = shard
    else:
        try:
            k, n = (int(part) for part in str(shard).split("/"))
        except ValueError:
            raise TransferCacheError(f"shard must look like K/N with 0 <= K < N (e.g. 0/4); got {shard!r}") from None
    if not (0 <= k < n):
        raise TransferCacheError(f"shard must look like K/N with 0 <= K < N (e.g. 0/4); got {shard!r}")
    return int(k), int(n)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr)


# --------------------------------------------------------------------------- the Python API


def extract(
    source,
    *,
    backbone: str = DEFAULT_BACKBONE,
    layer=None,
    pooling: str = "avg",
    input_size: int | None = None,
    weights: str = "imagenet",
    resize: str | None = None,
    interpolation: str | None = None,
    preprocessing: str | None = None,
    dtype: str = "float32",
    augment: int = 0,
    augment_recipe: str = "standard",
    augment_seed: int = 0,
    mixed_precision: bool = False,
    runtime: str = "auto",
    batch_size: int = 32,
    cache_dir=None,
    shard=None,
    lock_timeout: float = 0.0,
    allow_outside_root: bool = False,
    progress: bool = True,
    shards: int | None = None,
    engine: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
) -> ExtractResult:
    """Extract (or reuse) the transfer values of every image in ``source`` and return where the cache is.

    ``source`` is a folder, a CSV manifest, an .npz/.npy file, a CIFAR batch folder, ``keras:cifar10`` style names,
    ``sklearn:digits``, or a ``sources.Source``. Every option is declared (with its help) in
    ``feature_config.EXTRACT_OPTIONS``; all are validated before any work starts. ``augment=K`` also stores K seeded
    augmented views (``augment_recipe``) of every training image (split "train", or every image of a source without
    splits: fit keeps each image's views on its side of the split). ``shards=N`` extracts N shard files and merges
    them (``engine="dask"`` runs them on a Dask ``LocalCluster`` of ``workers`` processes, or on the cluster at
    ``scheduler``). ``mixed_precision`` computes in float16 on GPUs (ignored, with a warning, when none is visible);
    several GPUs are used together through a ``tf.distribute.MirroredStrategy``.
    """
    options = {name: value for name, value in locals().items() if name in option_names()}
    from .sources import Source, open_source

    started = time.perf_counter()
    whole_number(batch_size, "batch size")
    _cli.check_folder(cache_dir if cache_dir is not None else default_cache_dir(), "cache folder", "--cache-dir")
    if _wants_sharded_run(engine=engine, scheduler=scheduler, workers=workers, shards=shards, shard=shard):
        if isinstance(source, Source):
            raise TransferCacheError(
                "a sharded extraction needs the source as a spec string or path (each shard opens it itself); got a "
                "Source object: pass the folder, manifest or name you opened it from"
            )
        per_shard = {name: options[name] for name in option_names("vectors", "run") if name not in ("shard", "progress")}
        workers = workers or 2
        result = run_sharded_result(
            str(source), shards=shards or workers, engine=engine, scheduler=scheduler, workers=workers, progress=progress,
            **per_shard,
        )
        return ExtractResult(
            path=result.path, rows=result.rows, computed=result.computed, reused=result.reused, failed=result.failed,
            seconds=result.seconds, compute_seconds=result.seconds, hit=result.hit,
        )
    shard_k_n = parse_shard(shard)
    config = FeatureConfig.resolve(**{name: options[name] for name in option_names("vectors")}).as_dict()
    src = source if isinstance(source, Source) else open_source(str(source), allow_outside_root=allow_outside_root)
    indices = list(range(len(src)))
    shard_name = ""
    if shard_k_n is not None:
        k, n = shard_k_n
        indices = indices[k * len(indices) // n : (k + 1) * len(indices) // n]
        shard_name = f"shard{k}-of-{n}"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with _atomic.translated(folder, where="give --cache-dir a folder on a writable disk"):  # read-only: one line
        folder.mkdir(parents=True, exist_ok=True)

    def cache_path(config: dict) -> Path:
        return folder / cache_filename(
            source_name=src.name, source_description=src.description, backbone=config["backbone"],
            fingerprint=fingerprint(config), shard=shard_name,
        )

    if runtime == AUTO:  # continue a cache another runtime made rather than compute everything again
        config = next((alt for alt in _runtime_alternatives(config) if cache_path(alt).exists()), config)
    path = cache_path(config)
    with cache_lock(path, timeout=lock_timeout):
        sweep_temporaries(path)
        return _extract_locked(src, indices, config, path, batch_size, progress, started, shard_k_n, lock_timeout)


def _runtime_alternatives(config: dict) -> list[dict]:
    from .runtimes import auto_candidates

    return [{**config, "runtime": name} for name in auto_candidates()]


def _wants_sharded_run(*, engine, scheduler, workers, shards, shard) -> bool:
    """Check the engine options; True when the work is to be cut into shards (and merged) rather than done here."""
    from .distributed import ENGINES

    if engine not in ENGINES:
        raise TransferCacheError(f"engine must be one of {', '.join(repr(e) for e in ENGINES)}; got {engine!r}")
    whole_number(shards, "shards", optional=True)
    whole_number(workers, "workers", optional=True)
    if engine == "local" and (scheduler is not None or workers is not None):
        raise TransferCacheError("--scheduler and --workers apply to --engine dask; add --engine dask or drop them")
    sharded = engine == "dask" or shards is not None
    if sharded and shard not in (None, ""):
        raise TransferCacheError("give --shard K/N (extract one shard here) or --shards N (extract all and merge), not both")
    return sharded


# --------------------------------------------------------------------------- sharded runs

_SET_PER_SHARD = ("shard", "progress", "shards", "engine", "scheduler", "workers")


def extract_shard(source: str, shard: str, options: dict) -> dict:
    """The shard task a worker runs: one shard's extraction. Returns plain values only (paths as strings)."""
    result = extract(source, shard=shard, progress=False, **options)
    return {
        "shard": shard,
        "path": str(result.path),
        "rows": result.rows,
        "computed": result.computed,
        "reused": result.reused,
        "failed": [list(item) for item in result.failed],
        "hit": result.hit,
        "compute_seconds": result.compute_seconds,
    }


def run_sharded_result(
    source,
    *,
    shards: int,
    engine: str = "dask",
    scheduler: str | None = None,
    workers: int = 2,
    retries: int = 2,
    progress: bool = False,
    **extract_options,
) -> ShardedResult:
    """Extract ``source`` as ``shards`` shard caches on an engine (``distributed``), merge them, and report.

    ``extract_options`` are ``extract``'s vector and run options (backbone, layer, pooling, input_size, weights,
    cache_dir, ...); they are checked here, before any worker starts. A failed shard is retried ``retries`` times;
    if one still fails, the error names it and the finished shard files stay for the next run.
    """
    from .distributed import check_arguments, run_shards
    from .merge import merge

    started = time.perf_counter()
    check_arguments(source, shards, engine, workers, retries)
    reserved = [name for name in _SET_PER_SHARD if name in extract_options]
    if reserved:
        raise TransferCacheError(
            f"run_sharded sets {', '.join(reserved)} itself for each shard; drop {'it' if len(reserved) == 1 else 'them'} "
            "from the extract options"
        )
    unknown = sorted(set(extract_options) - set(option_names("vectors", "run")))
    if unknown:
        raise TransferCacheError(f"unknown extract option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                 f"the options are: {', '.join(option_names('vectors', 'run'))}")
    options = dict(extract_options)
    # every worker must write into the same folder: resolve it here, once
    options["cache_dir"] = str(Path(options.get("cache_dir") or default_cache_dir()).resolve())
    resolved = FeatureConfig.resolve(**{name: options[name] for name in option_names("vectors") if name in options})
    if options.get("runtime", AUTO) == AUTO:  # chosen once here, so every shard computes the same vectors
        options["runtime"] = resolved.runtime
    reports = run_shards(
        extract_shard, source, shards=shards, options=options, engine=engine, scheduler=scheduler, workers=workers,
        retries=retries, progress=progress,
    )
    shard_paths = [Path(report["path"]) for report in reports]
    merged = merge(shard_paths)
    failed: list[tuple[str, str]] = []
    seen: set[str] = set()
    for report in reports:
        for path, reason in report["failed"]:
            if path not in seen:
                seen.add(path)
                failed.append((path, reason))
    return ShardedResult(
        path=merged,
        shard_paths=shard_paths,
        rows=sum(r["rows"] for r in reports),
        computed=sum(r["computed"] for r in reports),
        reused=sum(r["reused"] for r in reports),
        failed=failed,
        seconds=time.perf_counter() - started,
        hit=all(r["hit"] for r in reports),
    )


def run_sharded(source, *, shards: int, engine: str = "dask", scheduler: str | None = None, workers: int = 2,
                retries: int = 2, **extract_options) -> Path:
    """``run_sharded_result``, returning only the merged cache's path."""
    return run_sharded_result(
        source, shards=shards, engine=engine, scheduler=scheduler, workers=workers, retries=retries, **extract_options
    ).path


# --------------------------------------------------------------------------- one extraction, in order


@dataclass
class _Known:
    """What earlier work already holds: the previous cache of this configuration and a killed run's parts."""

    existing: Cache | None
    parts: WorkParts
    rows: dict[str, int]  # digest -> row of the previous cache
    failed: dict[str, str]  # digest -> why it could not be read
    views: dict[str, int]  # digest -> entry of the previous cache's augmented views

    def close(self) -> None:
        if self.existing is not None:
            self.existing.close()


def _extract_locked(
    src, indices, config, path: Path, batch_size: int, progress: bool, started: float, shard_k_n,
    lock_timeout: float = 0.0,
) -> ExtractResult:
    digests, listing_failed = _digest_images(src, indices, progress)
    known = _known_work(path, config)
    planned = [i for i in indices if i in digests]
    try:
        if known.existing is not None and _is_hit(known.existing, src, planned, digests, listing_failed, known.failed):
            known.parts.remove()
            return ExtractResult(
                path=path, rows=len(known.existing), computed=0, reused=len(known.existing),
                failed=list(known.existing.failed), seconds=time.perf_counter() - started, hit=True,
            )
        items = _work_items(src, planned, digests, known, n_views=_views(config))
        compute_seconds, shapes, computed, first_batch = 0.0, None, 0, None
        if items:
            compute_seconds, shapes, computed, first_batch = _compute(
                src, items, digests, config, known.parts, batch_size, progress, lock_timeout
            )
        rows, failed_ids, origins, row_images = _clean_rows(src, planned, digests, known, listing_failed)
        if shapes is None:
            shapes = _shapes_from(known, rows.ids[0], config["layers"])
        view_rows, view_features = _view_rows(src, rows, row_images, known, n_views=_views(config), config=config, shapes=shapes)
        attrs = _cache_attrs(config, src, shard_k_n)
        # what the cache cost: this run, and the killed runs whose parts it resumed from
        attrs.update(extraction_seconds=round(compute_seconds + known.parts.earlier_seconds, 3),
                     extraction_computed=computed + known.parts.earlier_computed)
        write_cache(
            path, attrs=attrs, rows=rows,
            feature_rows=_feature_reader(origins, rows.ids, known, config, shapes), feature_shapes=shapes,
            failed_ids=failed_ids, view_rows=view_rows, view_features=view_features, views=_views(config),
        )
    finally:
        known.close()
    known.parts.remove()
    return ExtractResult(
        path=path, rows=len(rows.ids), computed=computed, reused=len(rows.ids) - computed, failed=rows.failed,
        seconds=time.perf_counter() - started, compute_seconds=compute_seconds,
        first_batch_seconds=None if first_batch is None else first_batch - started,
    )


def _views(config: dict) -> int:
    return int(config["augment"]["views"]) if config["augment"] else 0


def _digest_images(src, indices, progress: bool) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """Who is who: the content digest of every image (an unreadable one is recorded, never fatal).

    Files are read and hashed on a thread pool (hashlib and file reads release the GIL), in source order.
    """
    from concurrent.futures import ThreadPoolExecutor

    def digest(i: int):
        try:
            return src.digest(i), None
        except ImageError as exc:  # unreadable (permissions) or gone since listing: one bad image, not a crash
            return None, str(exc)
        except OSError as exc:
            return None, f"cannot read file: {exc.strerror or exc}"

    listing_failed = list(getattr(src, "failed", []))
    digests: dict[int, str] = {}
    with _progress(len(indices), "hashing", progress) as bar, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, (value, reason) in zip(indices, pool.map(digest, indices, chunksize=64)):
            if value is None:
                listing_failed.append((src.records[i].path, reason))
            else:
                digests[i] = value
            bar.update(1)
    return digests, listing_failed


def _known_work(path: Path, config: dict) -> _Known:
    existing = _open_existing(path)
    rows: dict[str, int] = {}
    failed: dict[str, str] = {}
    views: dict[str, int] = {}
    if existing is not None:
        rows = {digest: row for row, digest in enumerate(existing.ids)}
        failed = {d: reason for d, (_, reason) in zip(existing.failed_ids, existing.failed) if d}
        if _views(config):
            views = {existing.ids[row]: m for m, row in enumerate(existing.view_rows.tolist())}
    parts = WorkParts(path, layers=config["layers"])
    parts.scan()
    failed.update(parts.failed)
    return _Known(existing=existing, parts=parts, rows=rows, failed=failed, views=views)


def _work_items(src, planned, digests, known: _Known, *, n_views: int) -> list[tuple[int, int]]:
    """(image index, view) pairs still to compute; view 0 is the clean image, 1..K its augmented views."""
    items: list[tuple[int, int]] = []
    seen: set[str] = set()
    for i in planned:
        digest = digests[i]
        if digest in known.failed or digest in seen:
            continue
        seen.add(digest)
        if digest not in known.rows and digest not in known.parts:
            items.append((i, 0))
        if n_views and _augmentable(src.records[i]) and digest not in known.views:
            items.extend((i, v) for v in range(1, n_views + 1) if f"{digest}:{v}" not in known.parts)
    return items


def _clean_rows(src, planned, digests, known: _Known, listing_failed):
    """The new cache's rows in source order, where each one's vectors come from, and what failed."""
    rows = Rows(ids=[], paths=[], labels=[], split=[], failed=list(listing_failed))
    failed_ids: list[str] = [""] * len(rows.failed)  # parallel to rows.failed; "" = rejected while listing
    failed_now = {**known.failed, **known.parts.failed}
    origins: list[tuple[str, int]] = []  # ("part", -1) or ("old", row in the previous cache)
    row_images: list[int] = []  # the source index of each row
    for i in planned:
        digest = digests[i]
        record = src.records[i]
        if digest in known.parts:
            origins.append(("part", -1))
        elif digest in known.rows:
            origins.append(("old", known.rows[digest]))
        else:
            rows.failed.append((record.path, failed_now.get(digest, "not computed")))
            failed_ids.append(digest)
            continue
        row_images.append(i)
        rows.ids.append(digest)
        rows.paths.append(record.path)
        rows.labels.append(int(record.label))
        rows.split.append(record.split)
    if not rows.ids:
        reasons = "; ".join(f"{p}: {r}" for p, r in rows.failed[:3])
        raise TransferCacheError(f"no image in {src.description} could be read ({len(rows.failed)} failed: {reasons})")
    return rows, failed_ids, origins, row_images


def _feature_reader(origins, ids, known: _Known, config: dict, shapes):
    """Blocks of the new cache's vectors, copied from the previous cache or read from this run's parts."""

    def feature_rows(start: int, stop: int):
        block = [np.empty((stop - start,) + tuple(shape), dtype=config["dtype"]) for shape in shapes]
        old_positions = [(k, origins[start + k][1]) for k in range(stop - start) if origins[start + k][0] == "old"]
        if old_positions:
            wanted = np.asarray([row for _, row in old_positions])
            unique, inverse = np.unique(wanted, return_inverse=True)
            for layer_index, layer_name in enumerate(config["layers"]):
                values = known.existing.features_for(layer_name)[unique.tolist()]
                for (k, _), j in zip(old_positions, inverse):
                    block[layer_index][k] = values[j]
        for k in range(stop - start):
            if origins[start + k][0] == "part":
                for layer_index, vector in enumerate(known.parts.features(ids[start + k])):
                    block[layer_index][k] = vector
        return block

    return feature_rows


def _view_rows(src, rows: Rows, row_images, known: _Known, *, n_views: int, config: dict, shapes):
    """The rows that have all their augmented views, and a block reader of those views."""
    if not n_views:
        return None, None
    parts = known.parts
    view_rows = [
        row
        for row, i in enumerate(row_images)
        if _augmentable(src.records[i])
        and (rows.ids[row] in known.views or all(f"{rows.ids[row]}:{v}" in parts for v in range(1, n_views + 1)))
    ]

    def view_features(start: int, stop: int):
        block = np.empty((stop - start, n_views) + tuple(shapes[0]), dtype=config["dtype"])
        for k, row in enumerate(view_rows[start:stop]):
            digest = rows.ids[row]
            if f"{digest}:1" in parts:
                for v in range(n_views):
                    block[k, v] = parts.features(f"{digest}:{v + 1}")[0]
            else:
                block[k] = known.existing.views[known.views[digest]]
        return block

    return view_rows, view_features


def _cache_attrs(config: dict, src, shard_k_n) -> dict:
    attrs = dict(config)
    attrs.update(
        class_names=list(src.class_names),
        source=src.description,
        source_kind=src.kind,
        source_root=str(src.root or ""),
        shard=f"{shard_k_n[0]}/{shard_k_n[1]}" if shard_k_n else "",
        versions=library_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return attrs


def _open_existing(path: Path) -> Cache | None:
    if not path.exists():
        return None
    if path.is_dir():
        raise TransferCacheError(f"{path} is a folder, where this cache's file goes; move or rename it and run again")
    try:
        return Cache(path)
    except NewerFormatError:  # not damaged: another version's work is never deleted
        raise
    except TransferCacheError as exc:  # kept aside, not deleted: it may be a file the user still wants
        kept, number = path.with_name(path.name + ".unreadable"), 1
        while kept.exists():  # an earlier unreadable file is kept too
            number += 1
            kept = path.with_name(f"{path.name}.unreadable-{number}")
        with _atomic.translated(path, where="move it out of the cache folder and run again"):
            os.rename(path, kept)
        print(f"warning: {exc}; kept as {kept.name} and recomputing it", file=sys.stderr)
        return None


def _is_hit(existing: Cache, src, planned, digests, listing_failed, known_failed) -> bool:
    """The previous cache holds exactly what this run would write: the same rows (every declared column of the
    clean rows), the same classes, the same failures."""
    from .cache import TABLES_BY_NAME

    good = [i for i in planned if digests[i] not in known_failed]
    expected = {
        "ids": [digests[i] for i in good],
        "paths": [src.records[i].path for i in good],
        "labels": [int(src.records[i].label) for i in good],
        "split": [src.records[i].split for i in good],
    }
    same_rows = all(
        list(np.asarray(existing.tables["rows"][column.name]).tolist()) == expected[column.name]
        for column in TABLES_BY_NAME["rows"].columns
    )
    return (
        same_rows
        and existing.class_names == list(src.class_names)
        and sorted(p for p, _ in existing.failed) == sorted([p for p, _ in listing_failed] + [src.records[i].path for i in planned if digests[i] in known_failed])
    )


def _shapes_from(known: _Known, digest: str, layers: Sequence[str]):
    if digest in known.parts:
        return [vector.shape for vector in known.parts.features(digest)]
    return [known.existing.features_for(layer).shape[1:] for layer in layers]


def _augmentable(record) -> bool:
    """Training images get augmented views; so does every image of a source without splits (fit then keeps
    each image's views on the same side of its split). Validation and test images never do."""
    return record.split in ("train", "")


# --------------------------------------------------------------------------- computing what is new

class _ReadAhead:
    """Iterate a dataset in a background thread, ``depth`` batches ahead, from the moment it is created.

    A pipeline only starts decoding when it is first asked for a batch; asking from a thread at once lets the first
    batches decode while the model is loaded (or built and traced), instead of after. Use it as a context manager, so the
    thread stops whatever happens in between.
    """

    _FINISHED = object()

    def __init__(self, dataset, depth: int = 2):
        import queue
        import threading

        self._buffer: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(dataset,), name="transfer_cache-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, dataset) -> None:
        try:
            for item in dataset:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._FINISHED)

    def __iter__(self):
        while True:
            item = self._buffer.get()
            if item is self._FINISHED:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __enter__(self) -> "_ReadAhead":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _compute(src, items, digests, config, parts: WorkParts, batch_size: int, progress: bool, lock_timeout: float = 0.0):
    from .pipeline import image_batches
    from .runtimes import get_runtime

    augment = None
    if config["augment"]:
        from .augment import Recipe, augment_image, view_rng

        described = dict(config["augment"]["recipe"])
        recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in described.items()})
        seed = int(config["augment"]["seed"])
        work_size = 2 * int(config["input_size"])

        def augment(image, index, view):
            return augment_image(image, recipe=recipe, rng=view_rng(digests[index], view, seed), work_size=work_size)

    def key(position: int) -> str:
        index, view = items[position]
        return digests[index] if view == 0 else f"{digests[index]}:{view}"

    batches = image_batches(
        src,
        [index for index, _ in items],
        views=[view for _, view in items],
        augment=augment,
        input_size=config["input_size"],
        resize=config["resize"],
        crop_fraction=config["crop_fraction"],
        interpolation=config["interpolation"],
        batch_size=batch_size,
    )
    with _ReadAhead(batches) as stream:  # images decode while the model is built
        # lock_timeout: how long to wait for another process converting the same model (OpenVINO)
        forward = get_runtime(config["runtime"]).forward(FeatureConfig(**config), batch_size=batch_size,
                                                         lock_timeout=lock_timeout)
        return _run_batches(stream, forward, key, items, config, parts, progress)


def _run_batches(stream, forward, key, items, config, parts: WorkParts, progress: bool):
    """Push each decoded batch through the backbone and make its vectors durable as one part."""
    shapes, computed, first_batch = None, 0, None
    begin = mark = time.perf_counter()
    with _progress(len(items), f"extracting ({config['backbone']})", progress) as bar:
        for pixels, positions, ok, reasons in stream:
            failed = [(key(int(p)), reason) for p, good, reason in zip(positions, ok, reasons) if not good]
            good_ids = [key(int(p)) for p, good in zip(positions, ok) if good]
            if good_ids:
                arrays = [output.astype(config["dtype"]) for output in forward(pixels[ok])]
                shapes = [a.shape[1:] for a in arrays]
            else:  # a batch of only bad images: nothing to store but its failures
                arrays = [np.empty((0,), config["dtype"]) for _ in config["layers"]]
            clean = sum(1 for p, good in zip(positions, ok) if good and items[int(p)][1] == 0)
            now = time.perf_counter()
            parts.write(good_ids, arrays, failed, seconds=now - mark, computed=clean)
            mark = now
            first_batch = first_batch or time.perf_counter()
            computed += clean
            bar.update(len(positions))
    return time.perf_counter() - begin, shapes, computed, first_batch


# --------------------------------------------------------------------------- command line

EPILOG = f"""examples:
  python -m transfer_cache.extract sklearn:digits
  python -m transfer_cache.extract data/flowers --backbone efficientnet_lite0 --batch-size 64
  python -m transfer_cache.extract data/train --backbone inception_v3 --input-size 150 --layer mixed7 --pooling flatten
  python -m transfer_cache.extract data/cats_dogs --backbone vgg16 --layer fc2 --weights vgg16_weights.h5
  python -m transfer_cache.extract data/big --engine dask --workers 2 --shards 8
  python -m transfer_cache.extract --list-backbones

{textwrap.fill(source_help() + ".", 110)}
The cache goes to --cache-dir (default $TRANSFER_CACHE_DIR or ./caches); running the same command again reuses it.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.extract",
        "Push every image of SOURCE through a frozen pretrained backbone once and cache the transfer values in HDF5.",
        EPILOG,
    )
    parser.add_argument("source", nargs="?", metavar="SOURCE", help="images to extract (see below)")
    add_extract_arguments(parser)
    parser.add_argument("--list-backbones", action="store_true", help="list the backbone names and exit")
    parser.add_argument("--list-layers", metavar="BACKBONE", default=None, help="list a backbone's layer names and exit")
    return parser


def _main(args) -> int:
    if args.list_backbones:
        for name in list_backbones():
            spec = get_spec(name)
            print(f"{name:22s} input {spec.input_size:3d}  preprocessing {spec.preprocessing:7s} weights {spec.weights_source}")
        return 0
    if args.list_layers:
        from .backbones import layer_names

        print("\n".join(layer_names(args.list_layers, include_top=get_spec(args.list_layers).top_input_size is not None)))
        return 0
    if not args.source:
        raise TransferCacheError(f"SOURCE is missing: {source_help()}")
    result = extract(args.source, **options_from_args(args))
    for path, reason in result.failed[:10]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(result.failed) > 10:
        print(f"... and {len(result.failed) - 10} more skipped images (listed in the cache's /failed)", file=sys.stderr)
    print(result.summary())
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
