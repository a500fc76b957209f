"""Which approximate-neighbour library builds the kNN graph of a large cache: faiss-cpu, hnswlib or pynndescent.

``python benchmarks/knn_libraries.py [--rows 100000] [--dim 1280] [--queries 1000] [--method all]``

The vectors are seeded, cache-like ones (``clustered``): non-negative (ReLU-pooled), 200 clusters over a 64-d latent
space projected to ``dim`` plus isotropic noise, with 0.5% of the rows planted as copies of another row with 0.1%
noise (the near duplicates inspect must find). Rows are normalised, so inner product is cosine. Each method runs in
its own process; printed per method: build time, time for the whole self-kNN graph (k=10, every row querying the
index), query time per single query, recall@10 against brute-force numpy on ``--queries`` random rows, the share of
planted duplicates found as their copy's first neighbour, and the process's peak RSS above the vectors themselves
(the float32 unit rows, which a cache-streaming build does not hold: see ``transfer_cache.knn_index``).

Figures are in ``knn_libraries.md`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np


def clustered(rows: int, dim: int, *, seed: int = 0, clusters: int = 200, latent: int = 64,
              duplicates: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Cache-like unit vectors and the (original, copy) row pairs planted as near duplicates."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32) * 1.5
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 8192):
        stop = min(rows, start + 8192)
        z = centres[rng.integers(0, clusters, stop - start)] + rng.standard_normal((stop - start, latent))
        block = z.astype(np.float32) @ projection + 0.3 * rng.standard_normal((stop - start, dim)).astype(np.float32)
        out[start:stop] = np.maximum(block, 0)
    copies = rng.choice(rows, size=int(rows * duplicates) * 2, replace=False).reshape(-1, 2)
    out[copies[:, 1]] = out[copies[:, 0]] * (1 + 0.001 * rng.standard_normal((len(copies), dim)).astype(np.float32))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, copies


def exact(X: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    sims = X[queries] @ X.T
    sims[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-sims, axis=1)[:, :k]


def _faiss(X, k, kind):
    import faiss

    faiss.omp_set_num_threads(2)
    d = X.shape[1]
    started = time.perf_counter()
    if kind == "faiss-hnsw-sq8":
        index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.train(X[:: max(1, len(X) // 50000)])
        for start in range(0, len(X), 65536):
            index.add(X[start:start + 65536])
        index.hnsw.efSearch = 64
    elif kind == "faiss-hnsw-flat":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(X)
        index.hnsw.efSearch = 64
    else:  # faiss-ivf-sq8
        nlist = int(4 * np.sqrt(len(X)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.train(X[np.random.default_rng(0).choice(len(X), min(len(X), 40 * nlist), replace=False)])
        for start in range(0, len(X), 65536):
            index.add(X[start:start + 65536])
        index.nprobe = 16
    built = time.perf_counter() - started
    return built, lambda Q, kk: index.search(Q, kk)[1]


def _hnswlib(X, k, kind):
    import hnswlib

    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=X.shape[1])
    index.init_index(max_elements=len(X), ef_construction=80, M=32)
    index.set_num_threads(2)
    index.add_items(X, np.arange(len(X)))
    index.set_ef(64)
    built = time.perf_counter() - started
    return built, lambda Q, kk: index.knn_query(Q, k=kk)[0].astype(np.int64)


def _pynndescent(X, k, kind):
    import pynndescent

    started = time.perf_counter()
    index = pynndescent.NNDescent(X, metric="dot", n_neighbors=k + 1, random_state=0, n_jobs=2,
                                  low_memory=True)
    graph = index.neighbor_graph[0]
    built = time.perf_counter() - started
    return built, (lambda Q, kk: index.query(Q, k=kk)[0]), graph


METHODS = {"faiss-hnsw-sq8": _faiss, "faiss-hnsw-flat": _faiss, "faiss-ivf-sq8": _faiss, "hnswlib": _hnswlib,
           "pynndescent": _pynndescent}


class Peak:
    """The process's peak RSS, sampled every 50 ms; ``stop()`` says it in MB above the RSS when started
    (``above=False``: in all). ``knn_scale.py`` uses it too."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def stop(self, *, above: bool = True) -> int:
        self.running = False
        self.thread.join()
        return round((self.peak - (self.base if above else 0)) / 2**20)


def measure(method: str, rows: int, dim: int, queries: int, k: int = 10) -> dict:
    X, copies = clustered(rows, dim)
    chosen = np.random.default_rng(1).choice(rows, queries, replace=False)
    truth = exact(X, chosen, k)
    peak = Peak()
    made = METHODS[method](X, k, method)
    built, search = made[0], made[1]
    started = time.perf_counter()
    if len(made) == 3:  # pynndescent builds the self graph itself
        graph = made[2][:, 1:]
    else:
        graph = np.concatenate([search(X[s:s + 8192], k + 1) for s in range(0, rows, 8192)])
        graph = np.array([[c for c in row if c != i][:k] for i, row in enumerate(graph)])
    whole = time.perf_counter() - started
    recall = float(np.mean([len(set(graph[q]) & set(truth[i])) / k for i, q in enumerate(chosen)]))
    found = float(np.mean([copies[i, 1] in graph[copies[i, 0]][:1] for i in range(len(copies))]))
    single = []
    for q in chosen[:200]:
        started = time.perf_counter()
        search(X[q:q + 1], k)
        single.append(time.perf_counter() - started)
    return {"method": method, "rows": rows, "dim": dim, "build_s": round(built, 1),
            "graph_s": round(built + whole, 1), "query_ms": round(1000 * float(np.median(single)), 2),
            "recall@10": round(recall, 4), "duplicates_found": round(found, 4),
            "rss_above_vectors_mb": peak.stop()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--method", default="all", choices=["all", *METHODS])
    args = parser.parse_args()
    if args.method != "all":
        print(json.dumps(measure(args.method, args.rows, args.dim, args.queries)), flush=True)
        return
    for method in METHODS:
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--dim", str(args.dim),
                        "--queries", str(args.queries), "--method", method], check=False)


if __name__ == "__main__":
    main()
