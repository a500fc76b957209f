"""One extraction, here, in order: hash every image, find what earlier work holds, compute only the rest, and
assemble the new cache atomically.

A re-run with the same configuration is a cache hit and computes nothing; when images are added only the new ones
are computed (rows are keyed by content digest); a killed run resumes from its finished batches.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import _atomic
from ._checks import check_folder, whole_number
from ._errors import ImageError
from .assemble import cache_attrs, row_shapes, write_new_cache
from .cache import cache_filename, cache_lock, default_cache_dir, sweep_temporaries
from .extract_options import ExtractOptions, for_source, resolve
from .extraction_plan import PriorWork, is_hit, plan_rows, work_items
from .feature_config import FULL_DECODING, FeatureConfig
from .forward_pass import compute, progress_bar
from .runtimes import AUTO
from .shards import Shard, all_shards


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
            return (f"cache hit: {self.rows} rows, nothing computed ({len(self.failed)} failed images listed) -> "
                    f"{self.path}")
        return (
            f"{self.rows} rows written ({self.computed} computed, {self.reused} reused), {len(self.failed)} failed, "
            f"{self.images_per_second:.1f} images/s, {self.seconds:.1f} s -> {self.path}"
        )


def check_run_options(options: ExtractOptions) -> Path:
    """The run options every extraction checks before any work (sharded or not); returns the cache folder."""
    whole_number(options.batch_size, "batch size")
    return check_folder(options.cache_dir if options.cache_dir is not None else default_cache_dir(), "cache folder",
                      "--cache-dir")


def extract_here(source, options: ExtractOptions) -> ExtractResult:
    """Extract ``source`` (or shard ``options.shard`` of it) in this process; see ``extract.extract``."""
    from .sources import Source, open_source

    started = time.perf_counter()
    folder = check_run_options(options)
    shard = Shard.parse(options.shard)
    config = resolve(options)
    src = source if isinstance(source, Source) else open_source(str(source),
                                                                allow_outside_root=options.allow_outside_root)
    indices = list(range(len(src)))
    if shard is not None:
        indices = shard.select(indices)
    with _atomic.translated(folder, where="give --cache-dir a folder on a writable disk"):  # read-only: one line
        folder.mkdir(parents=True, exist_ok=True)

    def cache_path(config: FeatureConfig, part: Shard | None = shard) -> Path:
        return folder / cache_filename(source_name=src.name, source_description=src.description,
                                       backbone=config.backbone, fingerprint=config.fingerprint, shard=part)

    config = for_source(config, src)
    # continue a cache another runtime, or a full decoding, made rather than compute everything again; a shard
    # looks at every shard of its run, so that the shards of one run agree (their merge needs one configuration)
    family = [shard] if shard is None else all_shards(shard.n)
    config = next((alt for alt in _alternatives(config, options)
                   if any(cache_path(alt, part).exists() for part in family)), config)
    path = cache_path(config)
    with cache_lock(path, timeout=options.lock_timeout):
        sweep_temporaries(path)
        return _extract_locked(src, indices, config, path, options=options, shard=shard, started=started)


def _alternatives(config: FeatureConfig, options: ExtractOptions) -> list[FeatureConfig]:
    """The configurations whose existing cache this run continues, preferred first: every runtime ``auto`` may pick
    when the runtime was not given, and a full decoding (the caches of 0.1.0 and 0.2.0) when the decoding was not."""
    import dataclasses

    from .runtimes import auto_candidates

    runtimes = auto_candidates() if options.runtime == AUTO else [config.runtime]
    decodings = [config.decoding] if options.decoding is not None else [config.decoding, FULL_DECODING]
    return [dataclasses.replace(config, runtime=runtime, decoding=decoding)
            for decoding in dict.fromkeys(decodings) for runtime in runtimes]


def _extract_locked(src, indices, config: FeatureConfig, path: Path, *, options: ExtractOptions, shard: Shard | None,
                    started: float) -> ExtractResult:
    digests, listing_failed = _digest_images(src, indices, options.progress)
    prior = PriorWork.find(path, config)
    planned = [i for i in indices if i in digests]
    try:
        if prior.existing is not None and is_hit(prior.existing, src, planned, digests, listing_failed, prior.failed):
            prior.parts.remove()
            return ExtractResult(
                path=path, rows=len(prior.existing), computed=0, reused=len(prior.existing),
                failed=list(prior.existing.failed), seconds=time.perf_counter() - started, hit=True,
            )
        items = work_items(src, planned, digests, prior, n_views=config.views)
        compute_seconds, shapes, computed, first_batch = 0.0, None, 0, None
        if items:
            compute_seconds, shapes, computed, first_batch = compute(
                src, items, config, prior.parts, batch_size=options.batch_size, progress=options.progress,
                lock_timeout=options.lock_timeout,
            )
        plan = plan_rows(src, planned, digests, prior, listing_failed)
        # what the cache cost: this run, and the killed runs whose parts it resumed from
        attrs = cache_attrs(config, src, shard, seconds=compute_seconds + prior.parts.earlier_seconds,
                            computed=computed + prior.parts.earlier_computed)
        write_new_cache(path, src, plan, prior, config, attrs=attrs, shapes=shapes or row_shapes(plan, prior, config))
    finally:
        prior.close()
    prior.parts.remove()
    return ExtractResult(
        path=path, rows=len(plan.rows), computed=computed, reused=len(plan.rows) - computed,
        failed=[(f.path, f.reason) for f in plan.failures], seconds=time.perf_counter() - started,
        compute_seconds=compute_seconds, first_batch_seconds=None if first_batch is None else first_batch - started,
    )


def _digest_images(src, indices, progress: bool) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """Who is who: the content digest of every image (an unreadable one is recorded, never fatal).

    Files are read and hashed on a thread pool (hashlib and file reads release the GIL), in source order.
    """

    def digest(i: int):
        try:
            return src.digest(i), None
        except ImageError as exc:  # unreadable (permissions) or gone since listing: one bad image, not a crash
            return None, str(exc)
        except OSError as exc:
            return None, f"cannot read file: {exc.strerror or exc}"

    listing_failed = list(getattr(src, "failed", []))
    digests: dict[int, str] = {}
    with progress_bar(len(indices), "hashing", progress) as bar, \
            ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, (value, reason) in zip(indices, pool.map(digest, indices, chunksize=64)):
            if value is None:
                listing_failed.append((src.records[i].path, reason))
            else:
                digests[i] = value
            bar.update(1)
    return digests, listing_failed
