"""``python -m transfer_cache.extract``: push every image through a frozen backbone once and cache the vectors.

A re-run with the same configuration is a cache hit and computes nothing; when images are added only the new
ones are computed (rows are keyed by content digest); a killed run resumes from its finished batches.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _cli
from ._errors import ImageError, TransferCacheError
from .backbones import (
    DEFAULT_BACKBONE,
    POOLINGS,
    default_layers,
    get_spec,
    list_backbones,
    resolve_weights,
    validate_choices,
)
from .cache import (
    DTYPES,
    FORMAT_VERSION,
    Cache,
    NewerFormatError,
    Rows,
    WorkParts,
    cache_filename,
    cache_lock,
    default_cache_dir,
    fingerprint,
    sweep_temporaries,
    write_cache,
)
from .pipeline import validate_resize
from .runtimes.tensorflow import compute_precision


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


def _parse_layers(layer) -> list[str]:
    if layer is None:
        return []
    items = layer.split(",") if isinstance(layer, str) else list(layer)
    return [item.strip() for item in items if item and item.strip()]


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


def _versions() -> dict:
    import h5py
    import keras
    import tensorflow as tf

    from . import __version__

    return {
        "transfer_cache": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }


def feature_config(
    *,
    backbone: str = DEFAULT_BACKBONE,
    layer=None,
    pooling: str = "avg",
    input_size: int | None = None,
    weights: str = "imagenet",
    resize: str | None = None,
    preprocessing: str | None = None,
    dtype: str = "float32",
    augment: int = 0,
    augment_recipe: str = "standard",
    augment_seed: int = 0,
    interpolation: str | None = None,
    mixed_precision: bool = False,
) -> dict:
    """Validate the user's choices and return every field of the fingerprint (nothing is computed)."""
    spec = get_spec(backbone)
    validate_choices(pooling=pooling, preprocessing=preprocessing, input_size=input_size)
    if dtype not in DTYPES:
        raise TransferCacheError(f"dtype must be one of {', '.join(repr(d) for d in DTYPES)}; got {dtype!r}")
    resize = resize or spec.resize
    crop_fraction = spec.crop_fraction if resize == "center-crop" and resize == spec.resize else 1.0
    size = int(input_size or spec.input_size)
    interpolation = interpolation or spec.interpolation
    validate_resize(size=size, policy=resize, interpolation=interpolation, crop_fraction=crop_fraction)
    if not isinstance(mixed_precision, bool):
        raise TransferCacheError(f"mixed_precision must be True or False; got {mixed_precision!r}")
    _, weights_name, weights_identity = resolve_weights(spec, weights)
    if not isinstance(augment, int) or augment < 0:
        raise TransferCacheError(f"augment must be a whole number of views, 0 or more; got {augment!r}")
    augmentation = 0
    if augment:
        from .augment import get_recipe

        augmentation = {"views": augment, "recipe": get_recipe(augment_recipe).describe(), "seed": int(augment_seed)}
    layers = _parse_layers(layer) or default_layers(spec.name, size)
    if augment and len(layers) > 1:
        raise TransferCacheError(f"--augment works with one feature layer; got {len(layers)} ({', '.join(layers)})")
    return {
        "backbone": spec.name,
        "weights": weights_name,
        "weights_sha256": weights_identity,
        "layers": layers,
        "pooling": pooling,
        "input_size": size,
        "resize": resize,
        "crop_fraction": float(crop_fraction),
        "interpolation": interpolation,
        "preprocessing": preprocessing or spec.preprocessing,
        "dtype": dtype,
        "augment": augmentation,
        "compute_precision": compute_precision(mixed_precision),  # float16 compute changes the vectors
        "format_version": FORMAT_VERSION,
    }


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr)


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
    batch_size: int = 32,
    dtype: str = "float32",
    augment: int = 0,
    augment_recipe: str = "standard",
    augment_seed: int = 0,
    cache_dir=None,
    shard=None,
    lock_timeout: float = 0.0,
    allow_outside_root: bool = False,
    progress: bool = True,
    engine: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    shards: int | None = None,
    mixed_precision: bool = False,
) -> ExtractResult:
    """Extract (or reuse) the transfer values of every image in ``source`` and return where the cache is.

    ``source`` is a folder, a CSV manifest, an .npz/.npy file, a CIFAR batch folder, ``keras:cifar10`` style names,
    ``sklearn:digits``, or a ``sources.Source``. All arguments are validated before any work starts.
    ``augment=K`` also stores K seeded augmented views (``augment_recipe``) of every training image (split
    "train", or every image of a source without splits: fit keeps each image's views on its side of the split).
    ``shards=N`` extracts N shard files and merges them (``engine="dask"`` runs them on a Dask ``LocalCluster`` of
    ``workers`` processes, or on the cluster at ``scheduler``; see ``distributed.run_sharded``). ``mixed_precision``
    computes in float16 on GPUs (ignored, with a warning, when none is visible); several GPUs are used together
    through a ``tf.distribute.MirroredStrategy``.
    """
    from .sources import Source, open_source

    started = time.perf_counter()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise TransferCacheError(f"batch size must be a whole number of at least 1; got {batch_size!r}")
    if _wants_sharded_run(engine=engine, scheduler=scheduler, workers=workers, shards=shards, shard=shard):
        return _extract_sharded(
            source, engine=engine, scheduler=scheduler, workers=workers, shards=shards, progress=progress,
            backbone=backbone, layer=layer, pooling=pooling, input_size=input_size, weights=weights, resize=resize,
            preprocessing=preprocessing, interpolation=interpolation, batch_size=batch_size, dtype=dtype, augment=augment,
            augment_recipe=augment_recipe, augment_seed=augment_seed, cache_dir=cache_dir, lock_timeout=lock_timeout,
            allow_outside_root=allow_outside_root, mixed_precision=mixed_precision,
        )
    shard_k_n = parse_shard(shard)
    config = feature_config(
        backbone=backbone,
        layer=layer,
        pooling=pooling,
        input_size=input_size,
        weights=weights,
        resize=resize,
        preprocessing=preprocessing,
        dtype=dtype,
        augment=augment,
        augment_recipe=augment_recipe,
        augment_seed=augment_seed,
        interpolation=interpolation,
        mixed_precision=mixed_precision,
    )
    src = source if isinstance(source, Source) else open_source(str(source), allow_outside_root=allow_outside_root)
    indices = list(range(len(src)))
    shard_name = ""
    if shard_k_n is not None:
        k, n = shard_k_n
        indices = indices[k * len(indices) // n : (k + 1) * len(indices) // n]
        shard_name = f"shard{k}-of-{n}"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(config)
    path = folder / cache_filename(
        source_name=src.name, source_description=src.description, backbone=config["backbone"], fingerprint=fp, shard=shard_name
    )
    with cache_lock(path, timeout=lock_timeout):
        sweep_temporaries(path)
        return _extract_locked(src, indices, config, path, batch_size, progress, started, shard_k_n)


ENGINES = ("local", "dask")


def _wants_sharded_run(*, engine, scheduler, workers, shards, shard) -> bool:
    """Check the engine options; True when the work is to be cut into shards (and merged) rather than done here."""
    if engine not in ENGINES:
        raise TransferCacheError(f"engine must be one of {', '.join(repr(e) for e in ENGINES)}; got {engine!r}")
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):
        raise TransferCacheError(f"shards must be a whole number of at least 1; got {shards!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise TransferCacheError(f"workers must be a whole number of at least 1; got {workers!r}")
    if engine == "local" and (scheduler is not None or workers is not None):
        raise TransferCacheError("--scheduler and --workers apply to --engine dask; add --engine dask or drop them")
    sharded = engine == "dask" or shards is not None
    if sharded and shard not in (None, ""):
        raise TransferCacheError("give --shard K/N (extract one shard here) or --shards N (extract all and merge), not both")
    return sharded


def _extract_sharded(source, *, engine, scheduler, workers, shards, progress, **options) -> ExtractResult:
    from .distributed import run_sharded_result
    from .sources import Source

    if isinstance(source, Source):
        raise TransferCacheError(
            "a sharded extraction needs the source as a spec string or path (each shard opens it itself); got a Source "
            "object: pass the folder, manifest or name you opened it from"
        )
    workers = workers or 2
    result = run_sharded_result(
        str(source), shards=shards or workers, engine=engine, scheduler=scheduler, workers=workers, progress=progress,
        **options,
    )
    return ExtractResult(
        path=result.path, rows=result.rows, computed=result.computed, reused=result.reused, failed=result.failed,
        seconds=result.seconds, compute_seconds=result.seconds, hit=result.hit,
    )


def _extract_locked(
    src, indices, config, path: Path, batch_size: int, progress: bool, started: float, shard_k_n
) -> ExtractResult:
    # 1. who is who: the content digest of every image
    listing_failed = list(getattr(src, "failed", []))
    digests: dict[int, str] = {}
    with _progress(len(indices), "hashing", progress) as bar:
        for i in indices:
            try:
                digests[i] = src.digest(i)
            except ImageError as exc:  # unreadable (permissions) or gone since listing: one bad image, not a crash
                listing_failed.append((src.records[i].path, str(exc)))
            except OSError as exc:
                listing_failed.append((src.records[i].path, f"cannot read file: {exc.strerror or exc}"))
            bar.update(1)

    # 2. what is already known: an earlier cache of this configuration, and finished batches of a killed run
    existing = _open_existing(path)
    known_rows: dict[str, int] = {}
    known_failed: dict[str, str] = {}
    if existing is not None:
        known_rows = {digest: row for row, digest in enumerate(existing.ids)}
        known_failed = {d: reason for d, (_, reason) in zip(existing.failed_ids, existing.failed) if d}
    parts = WorkParts(path, layers=config["layers"])
    parts.scan()
    known_failed.update(parts.failed)

    planned = [i for i in indices if i in digests]
    if existing is not None and _is_hit(existing, src, planned, digests, listing_failed, known_failed):
        result = ExtractResult(
            path=path, rows=len(existing), computed=0, reused=len(existing), failed=list(existing.failed),
            seconds=time.perf_counter() - started, hit=True,
        )
        existing.close()
        parts.remove()
        return result

    n_views = config["augment"]["views"] if config["augment"] else 0
    known_views: dict[str, int] = {}
    if existing is not None and n_views:
        known_views = {existing.ids[row]: m for m, row in enumerate(existing.view_rows.tolist())}

    # work items: (image index, view); view 0 is the clean image, 1..K its augmented views
    items: list[tuple[int, int]] = []
    seen: set[str] = set()
    for i in planned:
        digest = digests[i]
        if digest in known_failed or digest in seen:
            continue
        seen.add(digest)
        if digest not in known_rows and digest not in parts:
            items.append((i, 0))
        if n_views and _augmentable(src.records[i]) and digest not in known_views:
            items.extend((i, v) for v in range(1, n_views + 1) if f"{digest}:{v}" not in parts)

    # 3. compute what is new, one durable part per batch
    compute_seconds, shapes, computed = 0.0, None, 0
    if items:
        compute_seconds, shapes, computed = _compute(
            src, items, digests, config, parts, batch_size, progress
        )
    failed_now = dict(known_failed)
    failed_now.update(parts.failed)

    # 4. assemble the new cache in source order from the old cache and the parts
    rows = Rows(ids=[], paths=[], labels=[], split=[], failed=list(listing_failed))
    failed_ids: list[str] = [""] * len(rows.failed)  # parallel to rows.failed; "" = rejected while listing
    sources_of_rows: list[tuple[str, int]] = []
    row_images: list[int] = []  # the source index of each row
    for i in planned:
        digest = digests[i]
        record = src.records[i]
        if digest in parts:
            sources_of_rows.append(("part", -1))
        elif digest in known_rows:
            sources_of_rows.append(("old", known_rows[digest]))
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
        if existing is not None:
            existing.close()
        reasons = "; ".join(f"{p}: {r}" for p, r in rows.failed[:3])
        raise TransferCacheError(f"no image in {src.description} could be read ({len(rows.failed)} failed: {reasons})")
    if shapes is None:
        shapes = _shapes_from(existing, parts, rows.ids[0], config["layers"])

    def feature_rows(start: int, stop: int):
        block = [np.empty((stop - start,) + tuple(shape), dtype=config["dtype"]) for shape in shapes]
        old_positions = [(k, sources_of_rows[start + k][1]) for k in range(stop - start) if sources_of_rows[start + k][0] == "old"]
        if old_positions:
            wanted = np.asarray([row for _, row in old_positions])
            unique, inverse = np.unique(wanted, return_inverse=True)
            for layer_index, layer_name in enumerate(config["layers"]):
                values = existing.features_for(layer_name)[unique.tolist()]
                for (k, _), j in zip(old_positions, inverse):
                    block[layer_index][k] = values[j]
        for k in range(stop - start):
            if sources_of_rows[start + k][0] == "part":
                for layer_index, vector in enumerate(parts.features(rows.ids[start + k])):
                    block[layer_index][k] = vector
        return block

    attrs = dict(config)
    attrs.update(
        class_names=list(src.class_names),
        source=src.description,
        source_kind=src.kind,
        source_root=str(src.root or ""),
        shard=f"{shard_k_n[0]}/{shard_k_n[1]}" if shard_k_n else "",
        versions=_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    view_rows = None
    view_features = None
    if n_views:
        view_rows = [
            row
            for row, i in enumerate(row_images)
            if _augmentable(src.records[i])
            and (rows.ids[row] in known_views or all(f"{rows.ids[row]}:{v}" in parts for v in range(1, n_views + 1)))
        ]

        def view_features(start: int, stop: int):
            block = np.empty((stop - start, n_views) + tuple(shapes[0]), dtype=config["dtype"])
            for k, row in enumerate(view_rows[start:stop]):
                digest = rows.ids[row]
                if f"{digest}:1" in parts:
                    for v in range(n_views):
                        block[k, v] = parts.features(f"{digest}:{v + 1}")[0]
                else:
                    block[k] = existing.views[known_views[digest]]
            return block

    try:
        write_cache(
            path, attrs=attrs, rows=rows, feature_rows=feature_rows, feature_shapes=shapes, failed_ids=failed_ids,
            view_rows=view_rows, view_features=view_features, views=n_views,
        )
    finally:
        if existing is not None:
            existing.close()
    parts.remove()
    return ExtractResult(
        path=path,
        rows=len(rows.ids),
        computed=computed,
        reused=len(rows.ids) - computed,
        failed=rows.failed,
        seconds=time.perf_counter() - started,
        compute_seconds=compute_seconds,
    )


def _open_existing(path: Path) -> Cache | None:
    if not path.exists():
        return None
    try:
        return Cache(path)
    except NewerFormatError:  # not damaged: another version's work is never deleted
        raise
    except TransferCacheError as exc:
        print(f"warning: {exc}; recomputing it", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


def _is_hit(existing: Cache, src, planned, digests, listing_failed, known_failed) -> bool:
    expected_ids = [digests[i] for i in planned if digests[i] not in known_failed]
    if existing.ids != expected_ids:
        return False
    good = [i for i in planned if digests[i] not in known_failed]
    return (
        existing.paths == [src.records[i].path for i in good]
        and existing.labels.tolist() == [int(src.records[i].label) for i in good]
        and list(existing.split) == [src.records[i].split for i in good]
        and existing.class_names == list(src.class_names)
        and sorted(p for p, _ in existing.failed) == sorted([p for p, _ in listing_failed] + [src.records[i].path for i in planned if digests[i] in known_failed])
    )


def _shapes_from(existing: Cache | None, parts: WorkParts, digest: str, layers: Sequence[str]):
    if digest in parts:
        return [vector.shape for vector in parts.features(digest)]
    return [existing.features_for(layer).shape[1:] for layer in layers]


def _augmentable(record) -> bool:
    """Training images get augmented views; so does every image of a source without splits (fit then keeps
    each image's views on the same side of its split). Validation and test images never do."""
    return record.split in ("train", "")


class _ReadAhead:
    """Iterate a dataset in a background thread, ``depth`` batches ahead, from the moment it is created.

    tf.data only starts decoding when it is first asked for a batch; asking from a thread at once lets the first
    batches decode while the model is built and traced, instead of after. Use it as a context manager, so the
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


def _compute(src, items, digests, config, parts: WorkParts, batch_size: int, progress: bool):
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
        forward = get_runtime("tensorflow").forward(config, batch_size=batch_size)
        return _run_batches(stream, forward, key, items, config, parts, progress)


def _run_batches(stream, forward, key, items, config, parts: WorkParts, progress: bool):
    """Push each decoded batch through the backbone and make its vectors durable as one part."""
    shapes, computed = None, 0
    begin = time.perf_counter()
    with _progress(len(items), f"extracting ({config['backbone']})", progress) as bar:
        for pixels, position, ok, reason in stream:
            ok = ok.numpy()
            position = position.numpy()
            failed = [(key(int(p)), r.decode("utf-8")) for p, good, r in zip(position, ok, reason.numpy()) if not good]
            good_ids = [key(int(p)) for p, good in zip(position, ok) if good]
            if good_ids:
                arrays = [output.astype(config["dtype"]) for output in forward(pixels.numpy()[ok])]
                shapes = [a.shape[1:] for a in arrays]
            else:  # a batch of only bad images: nothing to store but its failures
                arrays = [np.empty((0,), config["dtype"]) for _ in config["layers"]]
            parts.write(good_ids, arrays, failed)
            computed += sum(1 for p, good in zip(position, ok) if good and items[int(p)][1] == 0)
            bar.update(len(position))
    return time.perf_counter() - begin, shapes, computed


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.extract sklearn:digits
  python -m transfer_cache.extract data/flowers --backbone efficientnet_lite0 --batch-size 64
  python -m transfer_cache.extract data/train --backbone inception_v3 --input-size 150 --layer mixed7 --pooling flatten
  python -m transfer_cache.extract data/cats_dogs --backbone vgg16 --layer fc2 --weights vgg16_weights.h5
  python -m transfer_cache.extract data/big --engine dask --workers 2 --shards 8
  python -m transfer_cache.extract --list-backbones

SOURCE is a folder (root/<class>/<image> or root/<split>/<class>/<image>), a CSV manifest (path,label[,split]),
an .npz/.npy file of uint8 images, a CIFAR-10/100 python batch folder, or keras:cifar10 / sklearn:digits.
The cache goes to --cache-dir (default $TRANSFER_CACHE_DIR or ./caches); running the same command again reuses it.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.extract",
        "Push every image of SOURCE through a frozen pretrained backbone once and cache the transfer values in HDF5.",
        EPILOG,
    )
    parser.add_argument("source", nargs="?", metavar="SOURCE", help="images to extract (see below)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"pretrained network (default {DEFAULT_BACKBONE}; --list-backbones)")
    parser.add_argument("--layer", default=None, help="feature layer name(s), comma-separated (default: the last feature map)")
    parser.add_argument("--pooling", default="avg", choices=POOLINGS, help="how a feature map becomes a vector (default avg)")
    parser.add_argument("--input-size", type=int, default=None, help="image side in pixels (default: the backbone's)")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none (random, tests only) or a weights file path")
    parser.add_argument("--resize", default=None, help="squash, center-crop or pad (default: the backbone's)")
    parser.add_argument("--interpolation", default=None, help="resize filter: bilinear, bicubic, nearest (flow_from_directory's) or area (default: the backbone's)")
    parser.add_argument("--preprocessing", default=None, help="override the backbone's preprocessing: caffe, tf, torch, lite, rescale, none")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="stored precision (default float32)")
    parser.add_argument("--augment", type=int, default=0, metavar="K", help="also store K seeded augmented views of each training image")
    parser.add_argument("--augment-recipe", default="standard", help="standard, imagedatagenerator (the seeds' settings), flip, or mild (no flip: digits, text)")
    parser.add_argument("--augment-seed", type=int, default=0, help="seed of the augmented views (default 0)")
    parser.add_argument("--cache-dir", default=None, help="where caches live (default $TRANSFER_CACHE_DIR or ./caches)")
    parser.add_argument("--shard", default=None, help="extract only shard K of N (K/N, 0-based) into its own file")
    parser.add_argument("--shards", type=int, default=None, help="cut the images into N shards, extract each, then merge")
    parser.add_argument("--engine", default="local", choices=ENGINES, help="run the shards here (local) or on Dask (dask)")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786; default: a local cluster)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes of the local Dask cluster (default 2)")
    parser.add_argument("--mixed-precision", action="store_true", help="compute in float16 on GPUs (ignored without a GPU)")
    parser.add_argument("--lock-timeout", type=float, default=0.0, help="seconds to wait for another extraction of the same cache")
    parser.add_argument("--allow-outside-root", action="store_true", help="let a CSV manifest name files outside its folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
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

        _cli.quiet_tensorflow()
        print("\n".join(layer_names(args.list_layers, include_top=get_spec(args.list_layers).top_input_size is not None)))
        return 0
    _cli.quiet_tensorflow()
    if not args.source:
        raise TransferCacheError("SOURCE is missing: give a folder, a CSV manifest, an .npz/.npy file or a name such as sklearn:digits")
    result = extract(
        args.source,
        backbone=args.backbone,
        layer=args.layer,
        pooling=args.pooling,
        input_size=args.input_size,
        weights=args.weights,
        resize=args.resize,
        interpolation=args.interpolation,
        preprocessing=args.preprocessing,
        batch_size=args.batch_size,
        dtype=args.dtype,
        augment=args.augment,
        augment_recipe=args.augment_recipe,
        augment_seed=args.augment_seed,
        cache_dir=args.cache_dir,
        shard=args.shard,
        lock_timeout=args.lock_timeout,
        allow_outside_root=args.allow_outside_root,
        progress=not args.quiet,
        engine=args.engine,
        scheduler=args.scheduler,
        workers=args.workers,
        shards=args.shards,
        mixed_precision=args.mixed_precision,
    )
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
