"""Shards on an existing distributed engine (Dask distributed), or one after the other in this process.

This module knows nothing about extraction: it receives a *shard task* (a module-level function, so it pickles by
reference: ``task(source, shard_spec, options) -> dict of plain values``) and runs it once per shard on the chosen
engine, with retries, naming the shards that still fail. ``extract`` gives it the task that extracts one shard and
merges the shard files afterwards. Workers receive plain strings and dicts, never h5py handles or Source objects:
those cannot cross process boundaries safely.

Dask is an optional extra: ``pip install transfer_cache[dask]``. The engines are a registry (``ENGINES``): adding one
is one function here.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from ._checks import whole_number
from ._errors import TransferCacheError


def check_arguments(source, shards: int, engine: str, workers: int, retries: int) -> None:
    """Check the engine arguments before any work (run_shards calls it too)."""
    if not isinstance(source, (str, os.PathLike)):
        raise TransferCacheError(
            f"a sharded run needs the source as a spec string or path (each worker opens it itself); got a "
            f"{type(source).__name__} object: pass the folder, manifest or name you opened it from"
        )
    whole_number(shards, "shards")
    if engine not in ENGINES:
        raise TransferCacheError(f"engine must be one of {', '.join(repr(e) for e in ENGINES)}; got {engine!r}")
    whole_number(workers, "workers")
    whole_number(retries, "retries", at_least=0)


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


def _run_task(task: Callable, source: str, spec: str, options: dict, intra_op_threads: int | None = None) -> dict:
    """What a worker runs: its share of the cores, then the shard task."""
    _limit_threads(intra_op_threads)
    return task(source, spec, options)


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


def _run_dask(task, source, shard_specs, options, *, scheduler, workers, retries, progress):
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
                    _run_task, task, str(source), spec, options, threads,
                    key=f"transfer-cache-shard-{spec.replace('/', '-of-')}-{os.getpid()}-{time.time_ns()}",
                    retries=retries, pure=False,
                )
                for spec in shard_specs
            }
            outcomes = {}
            import sys

            from tqdm.auto import tqdm

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


def _run_local(task, source, shard_specs, options, *, scheduler, workers, retries, progress):
    import sys

    from tqdm.auto import tqdm

    outcomes = {}
    for spec in tqdm(shard_specs, desc="shards", unit="shard", disable=not progress, file=sys.stderr, leave=False):
        for attempt in range(retries + 1):
            try:
                outcomes[spec] = _run_task(task, str(source), spec, options)
                break
            except TransferCacheError as exc:  # a user mistake does not get better by retrying
                outcomes[spec] = exc
                break
            except Exception as exc:
                outcomes[spec] = exc
    return outcomes


ENGINES: dict[str, Callable] = {"local": _run_local, "dask": _run_dask}


def run_shards(
    task: Callable,
    source,
    *,
    shards: int,
    options: dict,
    engine: str = "dask",
    scheduler: str | None = None,
    workers: int = 2,
    retries: int = 2,
    progress: bool = False,
) -> list[dict]:
    """Run ``task(source, "K/N", options)`` for K in 0..N-1 on ``engine``; return the outcomes in shard order.

    ``scheduler`` is a Dask scheduler address (``tcp://host:8786``); None starts a ``LocalCluster`` of ``workers``
    single-threaded worker processes, each TensorFlow limited to its share of the cores. A failed shard is retried
    ``retries`` times; if one still fails, the error names it (finished shards keep their files for the next run).
    """
    check_arguments(source, shards, engine, workers, retries)
    specs = [f"{k}/{shards}" for k in range(shards)]
    outcomes = ENGINES[engine](
        task, source, specs, options, scheduler=scheduler, workers=workers, retries=retries, progress=progress
    )
    failures = {spec: outcome for spec, outcome in outcomes.items() if isinstance(outcome, BaseException)}
    if failures:
        done = len(specs) - len(failures)
        details = "; ".join(f"shard {spec}: {type(exc).__name__}: {exc}" for spec, exc in sorted(failures.items()))
        raise TransferCacheError(
            f"{len(failures)} of {len(specs)} shards failed after {retries + 1} attempt{'s' if retries else ''} ({details}); "
            f"the {done} finished shard file{'s are' if done != 1 else ' is'} kept in {options.get('cache_dir')}: fix the cause "
            "and run the same command again, which recomputes only the failed shards"
        )
    return [outcomes[spec] for spec in specs]
