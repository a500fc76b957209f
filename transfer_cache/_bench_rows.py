"""The bench's ``rows`` part: the light stage on a synthetic cache of N rows, as whole processes.

A cache of ``--rows`` rows is sampled from the vectors of a real small cache (``sklearn:digits`` through the embedded
Lite0, extracted once into the work folder) by ``_synthetic_cache``; then ``inspect``, ``neighbors`` (one row's
query) and ``fit --classifier logreg`` each run as the user runs them, in a child process of their own, timed from
its start, with its peak resident memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REAL_SOURCE = "sklearn:digits"

# runs ``python -m MODULE ARGS...`` in this child and prints its exit status and peak RSS as the last line
_COMMAND_CHILD = textwrap.dedent(
    """
    import json, resource, runpy, sys
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    status = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    print(json.dumps({"exit": status, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
    """
)


def timed_command(module: str, *args: str) -> dict:
    """Wall seconds, exit status and peak RSS (MB) of ``python -m module args...`` as its own process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _COMMAND_CHILD, module, *args], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - begin
    lines = done.stdout.strip().splitlines()
    try:
        figures = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"benchmark child {module} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    if figures["exit"] != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)} ended with {figures['exit']}: "
                           f"{done.stderr.strip()[-2000:]}")
    return {"wall_seconds": wall, "peak_rss_mb": figures["peak_rss_mb"]}


def real_cache(work: Path) -> tuple[Path, float | None]:
    """The real small cache the rows are sampled like, extracted once into ``work`` (and the seconds it took)."""
    folder = work / "real"
    found = sorted(folder.glob("*.h5"))
    if found:
        return found[0], None
    figures = timed_command("transfer_cache.extract", REAL_SOURCE, "--cache-dir", str(folder), "--quiet")
    return sorted(folder.glob("*.h5"))[0], figures["wall_seconds"]


def rows_figures(work: Path, *, rows: int, seed: int = 0, progress: bool = False) -> dict:
    """Build a synthetic cache of ``rows`` rows in ``work`` and time inspect, neighbors and fit logreg on it."""
    from ._synthetic_cache import write_synthetic

    work.mkdir(parents=True, exist_ok=True)
    like, real_seconds = real_cache(work)
    cache = work / f"synthetic-{rows}.h5"
    begin = time.perf_counter()
    planted = write_synthetic(cache, like=like, rows=rows, seed=seed, progress=progress)
    report = {
        "rows": rows, "feature_dim": 0, "cache_megabytes": cache.stat().st_size / 2**20,
        "build_seconds": time.perf_counter() - begin, "real_cache_seconds": real_seconds,
        "planted": {key: len(planted[key]) for key in ("duplicates", "leakage", "conflicts", "flipped")},
    }
    from .cache import open_cache

    with open_cache(cache) as opened:
        report["feature_dim"] = opened.feature_dim
    report["inspect"] = timed_command("transfer_cache.inspect", str(cache), "--out", str(work / "inspect"))
    report["neighbors"] = timed_command("transfer_cache.neighbors", str(cache), "0")
    report["fit_logreg"] = timed_command("transfer_cache.fit", str(cache), "--classifier", "logreg", "--runs-dir",
                                         str(work / "runs"), "--quiet")
    return report


def rows_table(figures: dict) -> list[tuple[str, str]]:
    """The bench table's rows for this part: (name, value)."""
    n = f"{figures['rows']:,} rows"
    out = [(f"synthetic cache of {n} x {figures['feature_dim']} ({figures['cache_megabytes']:.0f} MB): build (s)",
            f"{figures['build_seconds']:.1f}")]
    for key, name in (("inspect", "inspect"), ("neighbors", "neighbors, one row"), ("fit_logreg", "fit logreg")):
        out.append((f"  {name} on {n}: whole process (s) / peak RSS (MB)",
                    f"{figures[key]['wall_seconds']:.1f} / {figures[key]['peak_rss_mb']:.0f}"))
    return out
