"""Shards on an existing distributed engine (Dask distributed), or one after the other in this process.

This module knows nothing about extraction or sources: it receives a *task* (a module-level function, or a
``functools.partial`` of one, so it pickles by reference: ``task(spec) -> dict of plain values``) and runs it once per
spec on the chosen engine, with retries, and returns each spec's result or the exception that ended it. ``sharded``
gives it the task that extracts one shard. Workers receive plain strings and dataclasses, never h5py handles or
Source objects: those cannot cross process boundaries safely.

Dask is an optional extra: ``pip install transfer_cache[dask]``. The engines are a registry (``ENGINES``): adding one
is one function here.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from ._errors import TransferCacheError


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


def _run_task(task: Callable, spec: str, intra_op_threads: int | None = None) -> dict:
    """What a worker runs: its share of the cores, then the task."""
    _limit_threads(intra_op_threads)
    return task(spec)


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


def _run_dask(task, specs, *, scheduler, workers, retries, progress):
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
                    _run_task, task, spec, threads,
                    key=f"transfer-cache-shard-{spec.replace('/', '-of-')}-{os.getpid()}-{time.time_ns()}",
                    retries=retries, pure=False,
                )
                for spec in specs
            }
            outcomes = {}
            import sys

            from tqdm.auto import tqdm

            with tqdm(
                total=len(futures), desc="shards", unit="shard", disable=not progress, file=sys.stderr, leave=False
            ) as bar:
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


def _run_local(task, specs, *, scheduler, workers, retries, progress):
    import sys

    from tqdm.auto import tqdm

    outcomes = {}
    for spec in tqdm(specs, desc="shards", unit="shard", disable=not progress, file=sys.stderr, leave=False):
        for attempt in range(retries + 1):
            try:
                outcomes[spec] = _run_task(task, spec)
                break
            except TransferCacheError as exc:  # a user mistake does not get better by retrying
                outcomes[spec] = exc
                break
            except Exception as exc:
                outcomes[spec] = exc
    return outcomes


ENGINES: dict[str, Callable] = {"local": _run_local, "dask": _run_dask}


def run_tasks(
    task: Callable[[str], dict],
    specs: list[str],
    *,
    engine: str = "dask",
    scheduler: str | None = None,
    workers: int = 2,
    retries: int = 2,
    progress: bool = False,
) -> dict[str, "dict | BaseException"]:
    """Run ``task(spec)`` for every spec on ``engine``; return each spec's result, or the exception that ended it.

    ``scheduler`` is a Dask scheduler address (``tcp://host:8786``); None starts a ``LocalCluster`` of ``workers``
    single-threaded worker processes, each TensorFlow limited to its share of the cores. A failed task is retried
    ``retries`` times (a ``TransferCacheError``, a user's mistake, is not retried by the local engine).
    """
    return ENGINES[engine](task, specs, scheduler=scheduler, workers=workers, retries=retries, progress=progress)
