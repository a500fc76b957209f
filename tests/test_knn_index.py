"""The approximate-neighbour index kept beside a cache, against brute-force numpy on seeded cache-like vectors: its
recall, the near duplicates it must not miss, inspect's leakage and conflicts identical to the exact search's, and
neighbors answering from it (the exact threshold lowered by a keyword, so small caches take the approximate path)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from transfer_cache import knn_index
from transfer_cache._errors import TransferCacheError
from transfer_cache.cache import open_cache
from transfer_cache.cache_rows import CacheRows
from transfer_cache.findings import class_distances, inspect_caches
from transfer_cache.neighbors import neighbors

from conftest import write_synthetic_cache


def clustered(rows: int, dim: int = 64, *, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Non-negative cache-like vectors: clusters in an 8-d latent space, projected, plus noise."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((8, dim))
    z = rng.standard_normal((clusters, 8))[rng.integers(0, clusters, rows)] * 2 + rng.standard_normal((rows, 8))
    return np.maximum(z @ projection + 0.3 * rng.standard_normal((rows, dim)), 0).astype(np.float32)


def brute_force(X: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``rows``' k nearest other rows by cosine, and those cosines (the oracle)."""
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = unit[rows] @ unit.T
    sims[np.arange(len(rows)), rows] = -np.inf
    order = np.argsort(-sims, axis=1)[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def _table(path) -> CacheRows:
    table = CacheRows()
    table.add(open_cache(path), path=path, layer=None, test=False)
    return table


def test_recall_at_10_against_brute_force_and_the_graph_is_kept(tmp_path):
    X = clustered(3000)
    path = write_synthetic_cache(tmp_path / "c.h5", features=X, labels=np.zeros(len(X), int))
    with _table(path) as table:
        indices, sims = knn_index.self_graph(table, k=10, beside=path, key=table.index_key(), progress=False)
        queries = np.random.default_rng(1).choice(len(X), 300, replace=False)
        truth, truth_sims = brute_force(X, queries, 10)
        recall = np.mean([len(set(indices[q]) & set(truth[i])) / 10 for i, q in enumerate(queries)])
        assert recall >= 0.95
        assert np.abs(sims[queries, 0] - truth_sims[:, 0]).max() < 0.01  # 8-bit codes: about 1e-3 off
        kept = sorted(p.name for p in tmp_path.glob(".c.h5.knn-*"))
        assert kept == sorted([knn_index.index_path(path, table.index_key()).name,
                               knn_index.graph_path(path, table.index_key(), 10).name])
        again = knn_index.self_graph(table, k=10, beside=path, key=table.index_key(), progress=False)
        np.testing.assert_array_equal(again[0], indices)
        np.testing.assert_array_equal(again[1], sims)
    # another extraction of the cache (a new creation time) is another key: another index
    assert knn_index.index_path(path, {"caches": [{"created": "later"}]}).name not in kept


def test_the_row_reader_reads_rows_of_both_caches_in_the_order_asked(tmp_path):
    X, Y = clustered(50, seed=1), clustered(30, seed=2)
    first = write_synthetic_cache(tmp_path / "a.h5", features=X, labels=np.zeros(50, int))
    second = write_synthetic_cache(tmp_path / "b.h5", features=Y, labels=np.ones(30, int))
    with CacheRows() as table:
        table.add(open_cache(first), path=first, layer=None, test=False)
        table.add(open_cache(second), path=second, layer=None, test=True)
        rows = np.array([79, 3, 50, 49, 3, 0, 65])
        np.testing.assert_array_equal(table.read(rows), np.concatenate([X, Y])[rows])
        np.testing.assert_array_equal(np.asarray(table), np.concatenate([X, Y]))
        assert len(table) == 80 and table.split[50:] == ["test"] * 30


def _planted(rows: int, *, seed: int = 0):
    """Cache-like vectors with 20 rows replaced by copies of others with 0.1% noise: (X, [(original, copy)])."""
    rng = np.random.default_rng(seed)
    X = clustered(rows, seed=seed)
    pairs = rng.choice(rows, size=40, replace=False).reshape(20, 2)
    X[pairs[:, 1]] = X[pairs[:, 0]] * (1 + 0.001 * rng.standard_normal((20, X.shape[1]))).astype(np.float32)
    return X, pairs


def test_every_planted_near_duplicate_is_found_by_the_approximate_path(tmp_path):
    X, pairs = _planted(2500)
    path = write_synthetic_cache(tmp_path / "c.h5", features=X, labels=np.arange(len(X)) % 3,
                                 class_names=("a", "b", "c"))
    findings = inspect_caches(path, exact_rows=100, folds=2, threshold=0.999)
    found = {(p["row_a"], p["row_b"]) for p in findings.duplicates}
    assert {(int(min(a, b)), int(max(a, b))) for a, b in pairs} <= found
    assert any("approximate index" in note for note in findings.notes)


def test_leakage_and_conflicts_are_the_exact_searchs(tmp_path):
    X, _ = _planted(3000, seed=3)
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, len(X))
    split = rng.choice(["train", "val", "test"], len(X)).tolist()
    path = write_synthetic_cache(tmp_path / "c.h5", features=X, labels=labels, split=split,
                                 class_names=("a", "b", "c"))
    exact = inspect_caches(path, folds=2, threshold=0.99)
    approximate = inspect_caches(path, folds=2, threshold=0.99, exact_rows=100)
    assert exact.leakage and exact.conflicts
    for found, truth in ((approximate.leakage, exact.leakage), (approximate.conflicts, exact.conflicts),
                         (approximate.duplicates, exact.duplicates)):
        assert _pairs(found) == _pairs(truth)
        # the same cosines, to the last of their 6 digits (float32 sums in another order round differently)
        cosines = {(p["row_a"], p["row_b"]): p["cosine"] for p in truth}
        assert all(abs(p["cosine"] - cosines[(p["row_a"], p["row_b"])]) <= 2e-6 for p in found)


def _pairs(pairs: list[dict]) -> set:
    return {tuple((key, value) for key, value in sorted(p.items()) if key != "cosine") for p in pairs}


def test_within_class_distances_equal_the_exact_ones_when_the_candidates_hold_the_class():
    X = clustered(200, seed=5)
    labels = np.random.default_rng(6).integers(-1, 3, len(X))
    indices, sims = brute_force(X, np.arange(len(X)), len(X) - 1)  # every other row: the list holds every class
    got = class_distances(indices, sims, labels, k=5)
    for row in range(len(X)):
        if labels[row] < 0:
            assert np.isnan(got[row])
            continue
        members = np.flatnonzero(labels == labels[row])
        _, own = brute_force(X[members], np.flatnonzero(members == row), 5)
        assert got[row] == pytest.approx(1 - own.mean(), abs=1e-5)


def test_neighbors_answers_from_the_kept_index_with_exact_cosines(tmp_path, capsys):
    X = clustered(3000, seed=7)
    path = write_synthetic_cache(tmp_path / "c.h5", features=X, labels=np.zeros(len(X), int))
    found = neighbors(path, "17", k=8, exact_rows=100, progress=False)
    assert "building the neighbour index of 3000 rows" in capsys.readouterr().err
    order, sims = brute_force(X, np.array([17]), 7)
    assert [item["row"] for item in found] == [17, *order[0]]
    np.testing.assert_allclose([item["similarity"] for item in found[1:]], sims[0], atol=1e-5)
    neighbors(path, "18", k=8, exact_rows=100, progress=False)
    assert capsys.readouterr().err == ""  # the kept index: no second build


def test_a_cache_written_again_gets_a_new_index_and_the_old_one_goes(tmp_path):
    path = write_synthetic_cache(tmp_path / "c.h5", features=clustered(300, seed=8), labels=np.zeros(300, int))
    neighbors(path, "0", k=3, exact_rows=100, progress=False)
    before = sorted(p.name for p in tmp_path.glob(".c.h5.knn-*"))
    X = clustered(300, seed=9)
    write_synthetic_cache(path, features=X, labels=np.zeros(300, int))
    found = neighbors(path, "0", k=3, exact_rows=100, progress=False)
    after = sorted(p.name for p in tmp_path.glob(".c.h5.knn-*"))
    assert len(before) == len(after) == 1 and before != after
    assert [item["row"] for item in found] == [0, *brute_force(X, np.array([0]), 2)[0][0]]


def test_a_vector_of_nan_is_named_when_the_index_is_built(tmp_path):
    X = clustered(300, seed=10)
    X[123, 5] = np.nan
    path = write_synthetic_cache(tmp_path / "c.h5", features=X, labels=np.zeros(300, int))
    with pytest.raises(TransferCacheError, match=f"^row 123 of {re.escape(str(path))} holds NaN or infinity: the "
                       "cache is damaged; extract it again$"):
        neighbors(path, "0", k=3, exact_rows=100, progress=False)


def test_rows_the_index_cannot_reach_are_compared_exactly_and_find_their_twins(monkeypatch):
    from transfer_cache.label_errors import ArrayRows

    X = clustered(600, seed=5)
    twins = [(10, 400), (20, 310), (33, 599)]
    for a, b in twins:
        X[b] = X[a] * (1 + 1e-3 * np.random.default_rng(b).standard_normal(X.shape[1]).astype(np.float32))
    truth, truth_sims = brute_force(X, np.arange(600), 6)
    # what the index answered for these rows: the graph without their twins (as HNSW's pruning can leave it)
    indices, sims = truth.astype(np.int32).copy(), truth_sims.astype(np.float32).copy()
    hidden = np.array(sorted(r for pair in twins for r in pair) + [50, 51, 52])
    for a, b in twins:
        for row, twin in ((a, b), (b, a)):
            keep = indices[row] != twin
            indices[row] = np.concatenate([indices[row][keep], [-1]])[:6]
            sims[row] = np.concatenate([sims[row][keep], [-np.inf]])[:6]
    first_found = indices[hidden, 0]
    monkeypatch.setattr(knn_index, "HIDDEN_WINDOW", 4)  # windows of 4 rows: the twins must sit side by side
    knn_index._join_hidden(ArrayRows(X), hidden, first_found, indices, sims)
    for a, b in twins:
        assert indices[a, 0] == b and indices[b, 0] == a
        assert sims[a, 0] == pytest.approx(truth_sims[a, 0], abs=1e-6)
    assert (indices == truth).all()  # nothing else moved: every list is the exact one again
