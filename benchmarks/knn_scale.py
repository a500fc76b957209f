"""The neighbour index at scale: its build and self-kNN graph on a large cache, inspect's findings against the exact
search's, and ``neighbors`` per query and per process.

``python benchmarks/knn_scale.py graph CACHE [--k 40]``: builds (or reads) the kept index and graph of ``CACHE`` as
inspect does at its default k=10 (a candidate list of 40); prints wall seconds and the peak RSS (psutil, 50 ms).
``python benchmarks/knn_scale.py compare CACHE``: inspect's duplicates, leakage and conflicts on the exact path and
on the approximate one (the same process, label errors left out with ``--folds`` above every class size since both
paths run the same search); prints both counts, whether the pairs are identical and the largest cosine difference.
``python benchmarks/knn_scale.py neighbors CACHE``: ``neighbors`` of 20 random rows in one process (per query), and
``python -m transfer_cache.neighbors CACHE 17`` as a whole process.
``python benchmarks/knn_scale.py recall CACHE``: recall@10 of ``neighbors`` and of the index alone against exact
search, on 1,000 random rows.
``python benchmarks/knn_scale.py params CACHE --rows 100000 --configs 32/80/82,16/40/64``: the index's build and
self-graph times and recall for each HNSW setting (links, efConstruction, efSearch) on the first rows of ``CACHE``.

The caches are ``transfer_cache._synthetic_cache`` ones (a Gaussian mixture fitted to the digits cache of the
embedded Lite0, 1280-d, planted near duplicates, leakage and conflicts). Figures: ``knn_libraries.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
from knn_libraries import Peak  # this folder is on the path of a script run from it


def graph(cache: str, k: int) -> None:
    from transfer_cache import knn_index
    from transfer_cache.cache import open_cache
    from transfer_cache.cache_rows import CacheRows

    peak, started = Peak(), time.perf_counter()
    with CacheRows() as table:
        table.add(open_cache(cache), path=cache, layer=None, test=False)
        opened = time.perf_counter() - started
        knn_index.self_graph(table, k=k, beside=table.first_path, key=table.index_key())
    print(f"graph: {len(table)} rows, k={k}: opening {opened:.1f} s, total {time.perf_counter() - started:.1f} s, "
          f"peak RSS {peak.stop(above=False)} MB")


def compare(cache: str) -> None:
    from transfer_cache.findings import inspect_caches

    results = {}
    for name, exact_rows in (("approximate", 0), ("exact", 10**9)):
        peak, started = Peak(), time.perf_counter()
        results[name] = inspect_caches(cache, folds=10**6, exact_rows=exact_rows, progress=True)
        f = results[name]
        print(f"{name}: {time.perf_counter() - started:.1f} s, peak RSS {peak.stop(above=False)} MB; "
              f"{len(f.duplicates)} pairs, "
              f"{len(f.leakage)} leakage, {len(f.conflicts)} conflicts", flush=True)
    strip = [{key: value for key, value in p.items() if key != "cosine"} for p in results["exact"].duplicates]
    cosines = {(p["row_a"], p["row_b"]): p["cosine"] for p in results["exact"].duplicates}
    found = results["approximate"].duplicates
    same = sorted(map(str, strip)) == sorted(str({k: v for k, v in p.items() if k != "cosine"}) for p in found)
    worst = max((abs(p["cosine"] - cosines.get((p["row_a"], p["row_b"]), 9)) for p in found), default=0)
    print(f"identical pairs (leakage, conflicts, kinds, sides): {same}; largest cosine difference {worst:.2g}")


def neighbors(cache: str) -> None:
    from transfer_cache.neighbors import neighbors as find

    find(cache, "0", k=12)  # the index built or loaded once
    times = []
    for row in np.random.default_rng(0).integers(0, 1000, 20):
        started = time.perf_counter()
        find(cache, str(row), k=12, progress=False)
        times.append(time.perf_counter() - started)
    print(f"neighbors in one process: median {1000 * np.median(times):.0f} ms per query (opening the cache included)")
    from transfer_cache import knn_index
    from transfer_cache.cache import open_cache
    from transfer_cache.cache_rows import CacheRows

    with CacheRows() as table:
        table.add(open_cache(cache), path=cache, layer=None, test=False)
        index = knn_index.kept_index(table, beside=table.first_path, key=table.index_key())
        searched = []
        for row in np.random.default_rng(1).integers(0, len(table), 50):
            started = time.perf_counter()
            found, _ = index.search(table.read([row]), 28)
            knn_index.unit(table.read(np.sort(found[0])))  # the candidates re-scored, as neighbors does
            searched.append(time.perf_counter() - started)
    print(f"a query alone (read the row, search 28 candidates, read them): median {1000 * np.median(searched):.1f} ms")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "transfer_cache.neighbors", cache, "17"], check=True)
    print(f"whole process: {time.perf_counter() - started:.2f} s")


def recall(cache: str, queries: int = 1000, k: int = 10) -> None:
    """Recall@k of ``neighbors`` (the kept index's candidates re-scored exactly) and of the index alone, against exact
    search over every row (streamed in blocks), for ``queries`` random rows; each row's own entry left out."""
    from transfer_cache import knn_index
    from transfer_cache.cache import open_cache
    from transfer_cache.cache_rows import CacheRows
    from transfer_cache.neighbors import _from_index

    with CacheRows() as table:
        table.add(open_cache(cache), path=cache, layer=None, test=False)
        rows = np.sort(np.random.default_rng(2).choice(len(table), queries, replace=False))
        Q = knn_index.unit(table.read(rows))
        best = np.full((queries, k + 1), -np.inf, dtype=np.float32)
        best_rows = np.zeros((queries, k + 1), dtype=np.int64)
        started = time.perf_counter()
        for start, block in table.blocks():
            sims = Q @ knn_index.unit(block).T
            both = np.concatenate([best, sims], axis=1)
            both_rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + len(block)), sims.shape)],
                                       axis=1)
            top = np.argsort(-both, axis=1, kind="stable")[:, : k + 1]
            best, best_rows = np.take_along_axis(both, top, axis=1), np.take_along_axis(both_rows, top, axis=1)
        exact = time.perf_counter() - started
        index = knn_index.kept_index(table, beside=table.first_path, key=table.index_key())
        rescored, raw = [], []
        for j, row in enumerate(rows):
            truth = set(best_rows[j][best_rows[j] != row][:k].tolist())
            found, _ = _from_index(table, table.read([row])[0], k=k + 1, progress=False, row=row)
            rescored.append(len(set(found[found != row][:k].tolist()) & truth) / k)
            alone, _ = index.search(Q[j : j + 1], k + 1)
            raw.append(len(set(alone[0][alone[0] != row][:k].tolist()) & truth) / k)
    print(f"recall@{k} over {queries} random rows of {len(table)}: neighbors (candidates re-scored) "
          f"{np.mean(rescored):.4f}, the index alone {np.mean(raw):.4f}; exact search took {exact:.0f} s")


def params(cache: str, rows: int, configs: str, k: int) -> None:
    """Build time, self-graph time and recall@10 (raw, and after exact re-scoring of the ``k - 1`` candidates) of
    HNSW-SQ8 for each ``M/efConstruction/efSearch`` on the first ``rows`` rows, against exact search of 1,000 rows."""
    import json

    import faiss
    import h5py

    from transfer_cache._synthetic_cache import planted_path
    from transfer_cache.knn_index import unit

    with h5py.File(cache, "r") as f:
        X = unit(np.asarray(f["features"][:rows], dtype=np.float32))
    planted = planted_path(cache)
    planted = json.loads(planted.read_text())["duplicates"] if planted.exists() else []
    duplicates = [(a, b) for a, b in planted if b < rows]
    queries = np.sort(np.random.default_rng(0).choice(rows, 1000, replace=False))
    sims = X[queries] @ X.T
    sims[np.arange(len(queries)), queries] = -9
    truth = np.argsort(-sims, axis=1)[:, :10]
    for config in configs.split(","):
        links, construction, search = (int(v) for v in config.split("/"))
        index = faiss.IndexHNSWSQ(X.shape[1], faiss.ScalarQuantizer.QT_8bit, links, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = construction
        index.train(np.stack([X.min(axis=0), X.max(axis=0)]))
        started = time.perf_counter()
        for s in range(0, rows, 16384):
            index.add(X[s:s + 16384])
        built = time.perf_counter() - started
        index.hnsw.efSearch = search
        started = time.perf_counter()
        graph = np.concatenate([index.search(X[s:s + 16384], k)[1] for s in range(0, rows, 16384)])
        searched = time.perf_counter() - started
        raw, rescored = [], []
        for j, q in enumerate(queries):
            candidates = graph[q][(graph[q] != q) & (graph[q] >= 0)]
            raw.append(len(set(candidates[:10]) & set(truth[j])) / 10)
            best = candidates[np.argsort(-(X[candidates] @ X[q]), kind="stable")[:10]]
            rescored.append(len(set(best) & set(truth[j])) / 10)
        found = np.mean([b in graph[a] or a in graph[b] for a, b in duplicates]) if duplicates else float("nan")
        print(f"{rows} rows, M={links} efConstruction={construction} efSearch={search}: build {built:.0f} s, "
              f"graph of {k} {searched:.0f} s, recall@10 {np.mean(raw):.4f} (re-scored {np.mean(rescored):.4f}), "
              f"planted duplicates found {found:.3f} of {len(duplicates)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["graph", "compare", "neighbors", "params", "recall"])
    parser.add_argument("cache")
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--rows", type=int, default=100_000, help="params: the first ROWS rows")
    parser.add_argument("--configs", default="32/80/82,16/40/64", help="params: M/efConstruction/efSearch,...")
    args = parser.parse_args()
    {"graph": lambda: graph(args.cache, args.k), "compare": lambda: compare(args.cache),
     "neighbors": lambda: neighbors(args.cache), "recall": lambda: recall(args.cache),
     "params": lambda: params(args.cache, args.rows, args.configs, args.k + 1)}[args.what]()


if __name__ == "__main__":
    main()
