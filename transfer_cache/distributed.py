"""Sharded extraction on an existing distributed engine (Dask distributed), then one merge.

The image list is cut into N deterministic, contiguous shards (``extract(..., shard="K/N")``); each shard is an
independent extraction that writes its own cache file, so a worker that dies loses only its shard, and a re-run
finds the finished shard files and recomputes only the rest (a finished shard is a cache hit). Workers receive plain
strings (the source spec, the cache folder, the options), never h5py handles or Source objects: those cannot cross
process boundaries safely. The cache folder must be one that every worker can reach (a shared file system when the
scheduler is remote).

Dask is an optional extra: ``pip install transfer_cache[dask]``. ``engine="local"`` runs the shards one after the
other in this process, with the same files and the same merge (useful without Dask, and to resume).
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import TransferCacheError

ENGINES = ("local", "dask")
_RESERVED = ("shard", "progress", "engine", "scheduler", "workers", "shards")


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


def _validate(source, shards, engine, workers, retries, extract_kwargs) -> None:
    if not isinstance(source, (str, os.PathLike)):
        raise TransferCacheError(
            f"a sharded run needs the source as a spec string or path (each worker opens it itself); got a "
            f"{type(source).__name__} object: pass the folder, manifest or name you opened it from"
        )
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise TransferCacheError(f"shards must be a whole number of at least 1; got {shards!r}")
    if engine not in ENGINES:
        raise TransferCacheError(f"engine must be one of {', '.join(repr(e) for e in ENGINES)}; got {engine!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise TransferCacheError(f"workers must be a whole number of at least 1; got {workers!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TransferCacheError(f"retries must be a whole number of at least 0; got {retries!r}")
    reserved = sorted(set(extract_kwargs) & set(_RESERVED))
    if reserved:
        raise TransferCacheError(
            f"run_sharded sets {', '.join(reserved)} itself for each shard; drop {'it' if len(reserved) == 1 else 'them'} from the extract options"
        )


def _limit_threads(intra_op_threads: int | None) -> None:
    """Keep TensorFlow in a worker to its share of the cores (only possible before TF's runtime starts)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not intra_op_threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, intra_op_threads))
    except RuntimeError:  # the runtime of this worker process is already up: its first setting stays
        pass


def extract_shard(source: str, shard: str, options: dict, intra_op_threads: int | None = None) -> dict:
    """The task a worker runs: one shard's extraction. Returns plain values only (paths as strings)."""
    _limit_threads(intra_op_threads)
    from .extract import extract

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


def _import_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise TransferCacheError(
            "engine 'dask' needs Dask distributed, which is not installed; pip install transfer_cache[dask] "
            "(or pip install 'dask[distributed]'), or use engine 'local'"
        ) from None
    import distributed

    return distributed


def _unreachable(scheduler, exc) -> TransferCacheError:
    return TransferCacheError(
        f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); check the address (tcp://host:8786) and that "
        "the scheduler is running, or omit --scheduler to start a local cluster"
    )


def _check_reachable(scheduler: str) -> None:
    """Fail in a moment, not after the client's 30 s of retries, when nothing listens at a tcp:// address."""
    import socket
    from urllib.parse import urlsplit

    if not isinstance(scheduler, str) or not scheduler.startswith("tcp://"):
        return
    parts = urlsplit(scheduler)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise _unreachable(scheduler, exc) from None
    if not host or not port:
        return
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        raise _unreachable(scheduler, exc) from None


def _run_dask(source, shard_specs, options, *, scheduler, workers, retries, progress):
    distributed = _import_dask()
    cluster = None
    if scheduler is None:
        cores = os.cpu_count() or 1
        threads = max(1, cores // workers)
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR: the progress bar and summary are what the user reads
            env={
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "OMP_NUM_THREADS": str(threads),
                "TF_NUM_INTRAOP_THREADS": str(threads),
                "TF_NUM_INTEROP_THREADS": "1",
            },
        )
        address = cluster
    else:
        threads = None  # a remote cluster's workers are configured by whoever runs them
        address = scheduler
        _check_reachable(scheduler)
    try:
        try:
            client = distributed.Client(address, timeout="30s")
        except OSError as exc:
            raise _unreachable(scheduler, exc) from None
        with client:
            futures = {
                spec: client.submit(
                    extract_shard, str(source), spec, options, threads,
                    key=f"transfer-cache-shard-{spec.replace('/', '-of-')}-{os.getpid()}-{time.time_ns()}",
                    retries=retries, pure=False,
                )
                for spec in shard_specs
            }
            outcomes = {}
            from tqdm.auto import tqdm
            import sys

            with tqdm(total=len(futures), desc="shards", unit="shard", disable=not progress, file=sys.stderr, leave=False) as bar:
                for future in distributed.as_completed(list(futures.values())):
                    bar.update(1)
            for spec, future in futures.items():
                if future.status == "finished":
                    outcomes[spec] = future.result()
                else:
                    exc = future.exception()
                    outcomes[spec] = exc if exc is not None else RuntimeError(f"task ended as {future.status}")
            return outcomes
    finally:
        if cluster is not None:
            cluster.close()


def _run_local(source, shard_specs, options, *, retries, progress):
    import sys

    from tqdm.auto import tqdm

    outcomes = {}
    for spec in tqdm(shard_specs, desc="shards", unit="shard", disable=not progress, file=sys.stderr, leave=False):
        for attempt in range(retries + 1):
            try:
                outcomes[spec] = extract_shard(str(source), spec, options)
                break
            except TransferCacheError as exc:  # a user mistake does not get better by retrying
                outcomes[spec] = exc
                break
            except Exception as exc:
                outcomes[spec] = exc
    return outcomes


def run_sharded_result(
    source,
    *,
    shards: int,
    engine: str = "dask",
    scheduler: str | None = None,
    workers: int = 2,
    retries: int = 2,
    progress: bool = False,
    **extract_kwargs,
) -> ShardedResult:
    """``run_sharded`` returning the per-shard figures too (what ``extract(engine="dask")`` reports)."""
    from .extract import feature_config
    from .cache import default_cache_dir
    from .merge import merge

    started = time.perf_counter()
    _validate(source, shards, engine, workers, retries, extract_kwargs)
    options = dict(extract_kwargs)
    # every worker must write into the same folder: resolve it here, once
    options["cache_dir"] = str(Path(options.get("cache_dir") or default_cache_dir()).resolve())
    # the options are checked here, before any worker starts (the same checks extract makes)
    config_keys = inspect.signature(feature_config).parameters
    feature_config(**{key: options[key] for key in config_keys if key in options})
    if "source" in options:
        raise TransferCacheError("give the source once, as the first argument")

    specs = [f"{k}/{shards}" for k in range(shards)]
    if engine == "dask":
        outcomes = _run_dask(source, specs, options, scheduler=scheduler, workers=workers, retries=retries, progress=progress)
    else:
        outcomes = _run_local(source, specs, options, retries=retries, progress=progress)

    failures = {spec: outcome for spec, outcome in outcomes.items() if isinstance(outcome, BaseException)}
    if failures:
        done = len(specs) - len(failures)
        details = "; ".join(f"shard {spec}: {type(exc).__name__}: {exc}" for spec, exc in sorted(failures.items()))
        raise TransferCacheError(
            f"{len(failures)} of {len(specs)} shards failed after {retries + 1} attempt{'s' if retries else ''} ({details}); "
            f"the {done} finished shard file{'s are' if done != 1 else ' is'} kept in {options['cache_dir']}: fix the cause "
            "and run the same command again, which recomputes only the failed shards"
        )
    shard_paths = [Path(outcomes[spec]["path"]) for spec in specs]
    merged = merge(shard_paths)
    reports = [outcomes[spec] for spec in specs]
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


def run_sharded(
    source,
    *,
    shards: int,
    engine: str = "dask",
    scheduler: str | None = None,
    workers: int = 2,
    retries: int = 2,
    **extract_kwargs,
) -> Path:
    """Extract ``source`` as ``shards`` independent shard caches on Dask (or locally), then merge; return the merged cache.

    ``scheduler`` is a Dask scheduler address (``tcp://host:8786``); None starts a ``LocalCluster`` of ``workers``
    single-threaded worker processes, each TensorFlow limited to its share of the cores. A failed shard is retried
    ``retries`` times; if one still fails, the error names it and the finished shard files stay for the next run.
    ``extract_kwargs`` are ``extract``'s options (backbone, layer, pooling, input_size, weights, cache_dir, ...).
    """
    return run_sharded_result(
        source, shards=shards, engine=engine, scheduler=scheduler, workers=workers, retries=retries, **extract_kwargs
    ).path
