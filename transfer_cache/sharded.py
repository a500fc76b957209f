"""A sharded extraction: every shard extracted as its own cache on an engine of ``distributed``, then merged.

The options are checked and the runtime chosen once, here, before any worker starts, so every shard computes the
same vectors; each worker receives the source spec and the typed options (plain, picklable values). A failed shard
is retried; if one still fails, the error names it and the finished shard files stay for the next run.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import TransferCacheError
from .cache import default_cache_dir
from .extract_options import ExtractOptions, option_names, resolve
from .extraction import ExtractResult, extract_here
from .runtimes import AUTO
from .shards import all_shards, check_sharded_run

# options a sharded run sets itself for each shard: which shard, its progress bar, and how the work is cut
_SET_PER_SHARD = ("shard", "progress", *option_names("engine"))


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
    compute_seconds: float = 0.0  # the shards' own forward-pass time, added up (not the wall time of the run)
    hit: bool = False

    def as_extract_result(self) -> ExtractResult:
        return ExtractResult(path=self.path, rows=self.rows, computed=self.computed, reused=self.reused,
                             failed=self.failed, seconds=self.seconds, compute_seconds=self.compute_seconds,
                             hit=self.hit)


def extract_shard(source: str, options: ExtractOptions, shard: str) -> dict:
    """The task a worker runs: one shard's extraction. Returns plain values only (paths as strings)."""
    result = extract_here(source, options.replace(shard=shard, progress=False))
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


def _shard_options(extract_options: dict) -> ExtractOptions:
    """The keyword options of ``run_sharded``, checked and typed."""
    reserved = [name for name in _SET_PER_SHARD if name in extract_options]
    if reserved:
        raise TransferCacheError(
            f"run_sharded sets {', '.join(reserved)} itself for each shard; drop "
            f"{'it' if len(reserved) == 1 else 'them'} from the extract options"
        )
    unknown = sorted(set(extract_options) - set(option_names("vectors", "run")))
    if unknown:
        raise TransferCacheError(f"unknown extract option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                 f"the options are: {', '.join(option_names('vectors', 'run'))}")
    return ExtractOptions(**extract_options)


def _fixed_once(options: ExtractOptions) -> ExtractOptions:
    """The options every shard runs with: the cache folder and the runtime fixed here, once."""
    # every worker must write into the same folder: resolve it here, once
    options = options.replace(cache_dir=str(Path(options.cache_dir or default_cache_dir()).resolve()))
    resolved = resolve(options)
    if options.runtime == AUTO:  # chosen once here, so every shard computes the same vectors
        options = options.replace(runtime=resolved.runtime)
    return options


def _failure(failures: dict, total: int, retries: int, cache_dir) -> TransferCacheError:
    done = total - len(failures)
    details = "; ".join(f"shard {spec}: {type(exc).__name__}: {exc}" for spec, exc in sorted(failures.items()))
    return TransferCacheError(
        f"{len(failures)} of {total} shards failed after {retries + 1} attempt{'s' if retries else ''} ({details}); "
        f"the {done} finished shard file{'s are' if done != 1 else ' is'} kept in {cache_dir}: fix the cause "
        "and run the same command again, which recomputes only the failed shards"
    )


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
    cache_dir, ...); they are checked here, before any worker starts.
    """
    started = time.perf_counter()
    check_sharded_run(source, shards=shards, engine=engine, workers=workers, retries=retries)
    return run_shards_typed(source, _shard_options(extract_options), shards=shards, engine=engine,
                            scheduler=scheduler, workers=workers, retries=retries, progress=progress,
                            started=started)


def run_shards_typed(source, options: ExtractOptions, *, shards: int, engine: str, scheduler: str | None,
                     workers: int, retries: int = 2, progress: bool = False,
                     started: float | None = None) -> ShardedResult:
    """``run_sharded_result`` for options already typed and checked (``extract``'s sharded path)."""
    from .distributed import run_tasks
    from .merge import merge

    started = time.perf_counter() if started is None else started
    options = _fixed_once(options)
    specs = [shard.spec for shard in all_shards(shards)]
    outcomes = run_tasks(functools.partial(extract_shard, str(source), options), specs, engine=engine,
                         scheduler=scheduler, workers=workers, retries=retries, progress=progress)
    failures = {spec: outcome for spec, outcome in outcomes.items() if isinstance(outcome, BaseException)}
    if failures:
        raise _failure(failures, len(specs), retries, options.cache_dir)
    reports = [outcomes[spec] for spec in specs]
    shard_paths = [Path(report["path"]) for report in reports]
    merged = merge(shard_paths)
    failed: dict[str, str] = {}
    for report in reports:
        for path, reason in report["failed"]:
            failed.setdefault(path, reason)
    return ShardedResult(
        path=merged,
        shard_paths=shard_paths,
        rows=sum(r["rows"] for r in reports),
        computed=sum(r["computed"] for r in reports),
        reused=sum(r["reused"] for r in reports),
        failed=list(failed.items()),
        seconds=time.perf_counter() - started,
        compute_seconds=sum(r["compute_seconds"] for r in reports),
        hit=all(r["hit"] for r in reports),
    )


def run_sharded(source, *, shards: int, engine: str = "dask", scheduler: str | None = None, workers: int = 2,
                retries: int = 2, **extract_options) -> Path:
    """``run_sharded_result``, returning only the merged cache's path."""
    return run_sharded_result(
        source, shards=shards, engine=engine, scheduler=scheduler, workers=workers, retries=retries, **extract_options
    ).path
