"""One approximate-neighbour index per cache, built once from its vectors and kept beside it.

Below ``EXACT_ROWS`` rows the findings and ``neighbors`` search exactly, all pairs in blocks (a few seconds); above,
they read this index. It is faiss's HNSW graph over 8-bit scalar-quantised unit rows (``IndexHNSWSQ``, inner product
= cosine), chosen from ``benchmarks/knn_libraries.md`` (100,000 cache-like rows of 1280-d on this 2-core machine):
hnswlib and pynndescent hold every row as float32 (5.1 GB at a million rows of 1280-d, over the 6 GB an inspection
may take with the rest) and pynndescent's build alone was the slowest; the 8-bit codes are a quarter of that
(1.3 GB), are built from blocks streamed off the cache, and reached the same recall@10 (>= 0.99) with every planted
near duplicate found; its links and search depth are set so that a million rows take less than half an hour
(below). The similarities it returns are those of the 8-bit codes (about 1e-3 off); whoever needs a cosine exactly
(near duplicates at their threshold, ``neighbors``' list) re-scores the few pairs it keeps with ``exact_cosines``.

The index file is ``.<cache name>.knn-<key>.faiss`` beside the cache (the first cache of a table), and each row's
nearest rows (the self-kNN graph) ``.<cache name>.knn-<key>-k<k>.npy``; ``<key>`` digests the caches' names,
fingerprints, rows, creation times and layer, so a re-extracted cache gets a new index. Both are written atomically
(``_atomic``); files of an older extraction of the same cache (older than it) are removed when a new one is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import _atomic
from ._errors import TransferCacheError

EXACT_ROWS = 20_000  # below: exact blocks, about 10 s at 20,000 x 1280 on 2 cores (all pairs grow as rows squared)
# links per node and candidates kept while adding: on the first 100,000 rows of a synthetic million-row Lite0 cache
# (as python benchmarks/knn_scale.py params CACHE measures them), 32/80 took 39 s to build and 51 s for the self
# graph (recall@10 after exact re-scoring of the 40 candidates 0.997), 16/40 17 s and 29 s (0.970); at a million
# rows 32/80 took 17 min to build and its graph ran at 830 rows/s (20 min more), past the half hour an inspection
# may take.
HNSW_LINKS = 16
EF_CONSTRUCTION = 40
# candidates kept while searching: a single query (neighbors) keeps 512 (recall@10 of its re-scored answer on 1,000
# rows of the million-row cache: 0.876 at 64, 0.938 at 128, 0.975 at 256, 0.991 at 512, for 3.4 ms a query;
# python benchmarks/knn_scale.py recall CACHE); the self graph, which searches every row, keeps 64
EF_SEARCH = 512
GRAPH_EF_SEARCH = 64
BLOCK_ROWS = 16384  # rows read, normalised and added (or searched) at a time: 80 MB of 1280-d float32
METHOD = f"faiss-hnsw-sq8-M{HNSW_LINKS}-efc{EF_CONSTRUCTION}"  # part of the key: another method, another file


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise TransferCacheError(
            f"caches of more than {EXACT_ROWS} rows are searched with faiss, which is not installed: "
            "pip install faiss-cpu"
        ) from None
    return faiss


def unit(block: np.ndarray, *, first: int = 0, source: str = "the vectors") -> np.ndarray:
    """Rows of unit length as contiguous float32 (zero rows stay zero); refuses NaN or infinity, naming the row
    (``first`` is the block's first row in ``source``)."""
    block = np.ascontiguousarray(block, dtype=np.float32).reshape(len(block), -1)
    if not np.isfinite(block).all():
        row = first + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
        raise TransferCacheError(f"row {row} of {source} holds NaN or infinity: the cache is damaged; extract it "
                                 "again")
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.maximum(norms, np.finfo(np.float32).tiny)


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps({**key, "method": METHOD}, sort_keys=True).encode()).hexdigest()[:16]


def index_path(beside: Path, key: dict) -> Path:
    return Path(beside).with_name(f".{Path(beside).name}.knn-{key_digest(key)}.faiss")


def graph_path(beside: Path, key: dict, k: int) -> Path:
    return Path(beside).with_name(f".{Path(beside).name}.knn-{key_digest(key)}-k{k}.npy")


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="rows", disable=not progress, file=sys.stderr, leave=False)


class NeighbourIndex:
    """A faiss index over the unit rows of a table: ``search`` gives (indices, similarities), best first."""

    def __init__(self, index, path: Path):
        self.index, self.path = index, path

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, vectors: np.ndarray, k: int, *, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows nearest to each of ``vectors`` (raw, normalised here); missing places are -1. ``ef_search``:
        the candidates kept while searching (default ``EF_SEARCH``, or twice ``k`` when that is more)."""
        self.index.hnsw.efSearch = max(k, ef_search or max(EF_SEARCH, 2 * k))
        sims, indices = self.index.search(unit(vectors), k)
        return indices.astype(np.int64), sims.astype(np.float32)


def build_index(reader, *, progress: bool = True):
    """An HNSW index over 8-bit codes of the unit rows of ``reader``: one pass for each dimension's range (the
    quantiser's), one to add the rows; a block of rows in memory at a time."""
    faiss = _faiss()
    low = high = None
    source = str(getattr(reader, "first_path", "the vectors"))
    with _bar(2 * len(reader), "neighbour index", progress) as bar:
        for start in range(0, len(reader), BLOCK_ROWS):
            block = unit(reader.read(np.arange(start, min(len(reader), start + BLOCK_ROWS))), first=start,
                         source=source)
            low = block.min(axis=0) if low is None else np.minimum(low, block.min(axis=0))
            high = block.max(axis=0) if high is None else np.maximum(high, block.max(axis=0))
            bar.update(len(block))
        index = faiss.IndexHNSWSQ(len(low), faiss.ScalarQuantizer.QT_8bit, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.train(np.stack([low, high]))  # the per-dimension range of every row, not of a sample
        for start in range(0, len(reader), BLOCK_ROWS):
            block = unit(reader.read(np.arange(start, min(len(reader), start + BLOCK_ROWS))))
            index.add(block)
            bar.update(len(block))
    return index


def kept_index(reader, *, beside, key: dict, progress: bool = True) -> NeighbourIndex:
    """The index of ``reader`` kept beside ``beside``, built (with a note on stderr) and written when absent."""
    faiss = _faiss()
    path = index_path(beside, key)
    if path.exists():  # its 8-bit codes mapped, not read: a query touches a few pages of them
        return NeighbourIndex(faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC), path)
    print(f"note: building the neighbour index of {len(reader)} rows (once; kept as {path})", file=sys.stderr)
    index = build_index(reader, progress=progress)
    with _atomic.replacing(path, where="give the cache a folder with room for its neighbour index") as temporary:
        faiss.write_index(index, str(temporary))
    _remove_older(beside, keep=path)
    return NeighbourIndex(index, path)


def self_graph(reader, *, k: int, beside, key: dict, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows and their (8-bit) similarities, best first: read from the kept graph,
    else computed from the kept index a block of rows at a time and kept."""
    path = graph_path(beside, key, k)
    if path.exists():
        both = np.load(path, allow_pickle=False)
        return both[:, :k].astype(np.int64), both[:, k:].view(np.float32)
    index = kept_index(reader, beside=beside, key=key, progress=progress)
    k = min(k, len(reader) - 1)
    indices = np.empty((len(reader), k), dtype=np.int32)
    sims = np.empty((len(reader), k), dtype=np.float32)
    hidden, first_found = [], []
    with _bar(len(reader), "nearest rows", progress) as bar:
        for start in range(0, len(reader), BLOCK_ROWS):
            rows = np.arange(start, min(len(reader), start + BLOCK_ROWS))
            found, found_sims = index.search(reader.read(rows), k + 1, ef_search=GRAPH_EF_SEARCH)
            indices[rows], sims[rows] = _without_self(rows, found, found_sims, k)
            missed = ~(found == rows[:, None]).any(axis=1)
            hidden.append(rows[missed])
            first_found.append(found[missed, 0])
            bar.update(len(rows))
    _join_hidden(reader, np.concatenate(hidden), np.concatenate(first_found), indices, sims)
    with _atomic.replacing(path, keep_suffix=True,
                           where="give the cache a folder with room for its neighbour index") as temporary:
        np.save(temporary, np.concatenate([indices, sims.view(np.int32)], axis=1))
    return indices.astype(np.int64), sims


HIDDEN_WINDOW = 4096  # hidden rows compared exactly at a time (a 64 MB block of similarities)


def _join_hidden(reader, hidden: np.ndarray, first_found: np.ndarray, indices: np.ndarray, sims: np.ndarray) -> None:
    """Compare exactly the rows the index does not reach, and add what is found to their lists.

    HNSW prunes a node's links to keep them diverse, so a row with a near-identical twin can end up with no links to
    it: a search for its own vector finds neither it nor its twin (3.6% of the rows of a synthetic million-row cache;
    15 of its 2,000 planted copies were missed this way). The searches of two twins find the same rows, so the
    hidden rows are ordered by the row their search found first and compared in overlapping windows."""
    if len(hidden) < 2:
        return
    order = hidden[np.lexsort((hidden, first_found))]
    half = HIDDEN_WINDOW // 2
    k = indices.shape[1]
    for start in range(0, max(1, len(order) - half), half):
        window = np.sort(order[start : start + HIDDEN_WINDOW])
        vectors = unit(reader.read(window))
        window_sims = vectors @ vectors.T
        np.fill_diagonal(window_sims, -np.inf)
        take = min(k, len(window) - 1)
        best = np.argpartition(-window_sims, take - 1, axis=1)[:, :take]
        for place, row in enumerate(window):
            merged: dict[int, float] = {}
            for other, sim in zip(indices[row].tolist() + window[best[place]].tolist(),
                                  sims[row].tolist() + window_sims[place, best[place]].tolist()):
                if other >= 0 and sim > merged.get(other, -np.inf):
                    merged[other] = sim
            ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:k]
            indices[row] = [other for other, _ in ranked] + [-1] * (k - len(ranked))
            sims[row] = [sim for _, sim in ranked] + [-np.inf] * (k - len(ranked))


def _without_self(rows: np.ndarray, found: np.ndarray, sims: np.ndarray, k: int):
    """Drop each row's own entry (or, when the search missed it, its last) from its k + 1 nearest."""
    drop = found == rows[:, None]
    drop[~drop.any(axis=1), -1] = True
    keep = np.argsort(drop, axis=1, kind="stable")[:, :k]
    indices = np.take_along_axis(found, keep, axis=1)
    kept_sims = np.take_along_axis(sims, keep, axis=1)
    kept_sims[indices < 0] = -np.inf  # a search that found fewer rows than asked
    return indices, kept_sims


def exact_cosines(reader, a: np.ndarray, b: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
    """The exact cosine of each pair (a[i], b[i]) of table rows, reading the rows involved (a chunk of pairs at a
    time, so memory stays at ``chunk_rows`` vectors)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    out = np.empty(len(a), dtype=np.float32)
    order = np.argsort(a, kind="stable")
    start = 0
    while start < len(order):
        stop = start
        involved: set[int] = set()
        while stop < len(order) and len(involved) < chunk_rows:
            involved.update((int(a[order[stop]]), int(b[order[stop]])))
            stop += 1
        rows = np.array(sorted(involved), dtype=np.int64)
        vectors = unit(reader.read(rows))
        chosen = order[start:stop]
        first = vectors[np.searchsorted(rows, a[chosen])]
        second = vectors[np.searchsorted(rows, b[chosen])]
        out[chosen] = np.einsum("ij,ij->i", first, second)
        start = stop
    return out


def _remove_older(beside, *, keep: Path) -> None:
    """Remove the kept index files of an earlier extraction of this cache (older than the cache file)."""
    beside = Path(beside)
    made = beside.stat().st_mtime_ns
    for old in beside.parent.glob(f".{beside.name}.knn-*"):
        try:
            if old != keep and old.stat().st_mtime_ns < made:
                os.remove(old)
        except OSError:
            pass
