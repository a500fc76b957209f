"""Synthetic large caches: the real cache's configuration and class structure, planted problems where the record
says, the same rows from the same seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transfer_cache._synthetic_cache import fit_mixture, planted_path, write_synthetic
from transfer_cache.cache import open_cache

from conftest import write_synthetic_cache


@pytest.fixture
def real_cache(tmp_path):
    """A small real cache of three well-separated classes (positive vectors, as after a ReLU)."""
    rng = np.random.default_rng(7)
    centres = rng.uniform(2.0, 6.0, size=(3, 48))
    labels = np.repeat(np.arange(3), [30, 20, 10])
    X = (centres[labels] + 0.3 * rng.standard_normal((len(labels), 48))).astype(np.float32)
    path = write_synthetic_cache(tmp_path / "real.h5", features=X, labels=labels, class_names=("a", "b", "c"))
    return path, X, labels


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_synthetic_cache_keeps_the_configuration_and_the_classes(real_cache, tmp_path):
    path, X, labels = real_cache
    out = tmp_path / "big" / "synthetic.h5"
    record = write_synthetic(out, like=path, rows=3000, seed=3, flip_share=0.0, duplicate_share=0.0, block_rows=512)
    with open_cache(path) as real, open_cache(out, check_vectors=True) as synthetic:
        assert synthetic.fingerprint == real.fingerprint
        assert synthetic.class_names == ["a", "b", "c"]
        assert len(synthetic) == 3000 and synthetic.feature_dim == 48
        assert len(set(synthetic.ids)) == 3000
        assert all(p.startswith("synthetic/") for p in synthetic.paths)
        S, given = synthetic.read_rows(np.arange(3000)), synthetic.labels
    assert record["flipped"] == [] and record["duplicates"] == []
    shares = np.bincount(given, minlength=3) / 3000
    np.testing.assert_allclose(shares, [0.5, 1 / 3, 1 / 6], atol=0.03)
    for k in range(3):  # each class sampled around the real class's mean, with the real spread
        np.testing.assert_allclose(S[given == k].mean(axis=0), X[labels == k].mean(axis=0), atol=0.08)
        real_spread = np.sqrt(((X[labels == k] - X[labels == k].mean(axis=0)) ** 2).sum(axis=1).mean())
        spread = np.sqrt(((S[given == k] - S[given == k].mean(axis=0)) ** 2).sum(axis=1).mean())
        assert 0.8 < spread / real_spread < 1.25
    assert S.min() >= 0.0


def test_planted_problems_are_where_the_record_says(real_cache, tmp_path):
    path, _, _ = real_cache
    out = tmp_path / "synthetic.h5"
    record = write_synthetic(out, like=path, rows=4000, seed=5, duplicate_share=0.01, flip_share=0.05,
                             block_rows=700)
    assert json.loads(planted_path(out).read_text()) == record
    with open_cache(out) as synthetic:
        S, given, split = synthetic.read_rows(np.arange(4000)), synthetic.labels, np.asarray(synthetic.split)
    pairs = np.asarray(record["duplicates"])
    assert len(pairs) == 40 and np.all(pairs[:, 0] < pairs[:, 1])
    assert np.all(pairs[:, 0] // 700 == pairs[:, 1] // 700)  # planted within a block
    cosine = (_unit(S[pairs[:, 0]]) * _unit(S[pairs[:, 1]])).sum(axis=1)
    assert cosine.min() > 0.99999 and not np.any(np.all(S[pairs[:, 0]] == S[pairs[:, 1]], axis=1))
    leakage = {tuple(p) for p in record["leakage"]}
    conflicts = {tuple(p) for p in record["conflicts"]}
    assert leakage and conflicts and len(leakage) < len(pairs) and len(conflicts) < len(pairs)
    for source, copy in map(tuple, pairs):
        assert (split[source] != split[copy]) == ((source, copy) in leakage)
        assert (given[source] != given[copy]) == ((source, copy) in conflicts)
    # nothing else is that close (brute force over all pairs): two copies of one row are close to each other too
    group = np.arange(4000)
    for source, copy in pairs:
        group[group == group[copy]] = group[source]
    U = _unit(S)
    close = np.argwhere(np.triu(U @ U.T, k=1) > 0.9999)
    assert len(close) >= len(pairs) and np.all(group[close[:, 0]] == group[close[:, 1]])
    assert {tuple(p) for p in pairs} <= {tuple(p) for p in close}
    flipped, truth = np.asarray(record["flipped"]), np.asarray(record["true_labels_of_flipped"])
    assert len(flipped) == 200 and np.all(given[flipped] != truth)
    assert not set(flipped) & set(pairs.ravel())


def test_the_same_seed_writes_the_same_cache(real_cache, tmp_path):
    path, _, _ = real_cache
    one = write_synthetic(tmp_path / "one.h5", like=path, rows=900, seed=1, block_rows=256)
    two = write_synthetic(tmp_path / "two.h5", like=path, rows=900, seed=1, block_rows=256)
    other = write_synthetic(tmp_path / "other.h5", like=path, rows=900, seed=2, block_rows=256)
    assert {k: v for k, v in one.items() if k != "mixture_from"} == {k: v for k, v in two.items()
                                                                     if k != "mixture_from"}
    assert one["flipped"] != other["flipped"]
    with open_cache(tmp_path / "one.h5") as a, open_cache(tmp_path / "two.h5") as b, \
            open_cache(tmp_path / "other.h5") as c:
        rows = np.arange(900)
        assert np.array_equal(a.read_rows(rows), b.read_rows(rows))
        assert a.ids == b.ids and not np.array_equal(a.read_rows(rows), c.read_rows(rows))


def test_mixture_keeps_the_principal_spread():
    rng = np.random.default_rng(0)
    direction = _unit(rng.standard_normal((1, 20)))[0]
    labels = np.repeat([0, 1], 500)
    X = 10.0 + np.outer(rng.standard_normal(1000) * 3.0, direction) + 0.1 * rng.standard_normal((1000, 20))
    X[labels == 1] += 5.0
    mixture = fit_mixture(X, labels, components=1)
    assert abs(abs(float(mixture.directions[0] @ direction)) - 1.0) < 1e-3
    assert abs(float(mixture.spreads[0]) - 3.0) < 0.25
    np.testing.assert_allclose(mixture.means[1] - mixture.means[0], np.full(20, 5.0), atol=0.5)
    np.testing.assert_allclose(mixture.residual, 0.1, atol=0.025)
    sample = mixture.sample(labels, np.random.default_rng(1))  # every dimension keeps its within-class spread

    def centred(A):
        return A - np.where(labels[:, None] == 1, A[labels == 1].mean(axis=0), A[labels == 0].mean(axis=0))

    within, sampled = centred(X), centred(sample)
    np.testing.assert_allclose(sampled.std(axis=0), within.std(axis=0), rtol=0.1)
