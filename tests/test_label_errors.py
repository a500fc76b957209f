"""Label errors at scale: above the limit each fold trains on a stratified sample and every row is predicted out of
fold through a row reader, a block at a time; below it the search is the in-memory one; the note says which."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transfer_cache import label_errors
from transfer_cache._synthetic_cache import planted_path, write_synthetic
from transfer_cache.cache import open_cache
from transfer_cache.findings import inspect_caches
from transfer_cache.label_errors import (
    ArrayRows,
    is_row_reader,
    label_issues,
    sampled_out_of_fold_probabilities,
    sampling_note,
    stratified_sample,
)

from conftest import write_synthetic_cache


class CacheRows:
    """A row reader over a cache file that records every request."""

    def __init__(self, cache):
        self.cache = cache
        self.requests: list[np.ndarray] = []

    def __len__(self):
        return len(self.cache)

    def read(self, rows):
        rows = np.asarray(rows)
        self.requests.append(rows)
        return self.cache.read_rows(rows)


@pytest.fixture(scope="module")
def flipped_cache(tmp_path_factory):
    """3,000 synthetic rows of four classes, 3% of them with a flipped label, and the record of which."""
    folder = tmp_path_factory.mktemp("label_errors")
    rng = np.random.default_rng(11)
    centres = rng.uniform(0.0, 3.0, size=(4, 32))
    labels = np.repeat(np.arange(4), 25)
    X = np.maximum(centres[labels] + 0.6 * rng.standard_normal((100, 32)), 0).astype(np.float32)
    real = write_synthetic_cache(folder / "real.h5", features=X, labels=labels, class_names=("a", "b", "c", "d"))
    path = folder / "big.h5"
    write_synthetic(path, like=real, rows=3000, seed=4, flip_share=0.03, duplicate_share=0.0, block_rows=1000)
    return path, json.loads(planted_path(path).read_text())


def test_above_the_limit_flags_the_planted_flips_reading_a_block_at_a_time(flipped_cache, monkeypatch):
    path, record = flipped_cache
    monkeypatch.setattr(label_errors, "PREDICT_BLOCK_ROWS", 700)
    with open_cache(path) as cache:
        reader = CacheRows(cache)
        issues = label_issues(reader, cache.labels, limit=1000, sample_rows=800)
    assert sorted(item["row"] for item in issues) == list(range(3000))  # every row predicted once
    flagged = {item["row"] for item in issues if item["flagged"]}
    flipped = set(record["flipped"])
    assert len(flipped) == 90
    assert len(flagged & flipped) >= 0.75 * len(flipped)  # the in-memory search on all rows finds 76 of the 90
    assert len(flagged - flipped) <= 0.1 * len(flagged)
    truth = dict(zip(record["flipped"], record["true_labels_of_flipped"]))
    suggested = [item["suggested"] == truth[item["row"]] for item in issues if item["row"] in flagged & flipped]
    assert np.mean(suggested) > 0.9
    sizes = [len(rows) for rows in reader.requests]
    assert sizes == [800] * 5 + [700] * 4 + [200]  # five samples, then each row once, a block at a time
    assert all(np.all(np.diff(rows) > 0) for rows in reader.requests)


def test_below_the_limit_a_reader_gives_the_in_memory_search(flipped_cache):
    path, _ = flipped_cache
    with open_cache(path) as cache:
        rows = np.arange(0, 3000, 5)
        X, labels = cache.read_rows(rows), cache.labels[rows]
        sub = CacheSubset(cache, rows)
        assert label_issues(sub, labels) == label_issues(X, labels)
        assert len(sub.requests) == 1


class CacheSubset(CacheRows):
    """Some rows of a cache as their own table."""

    def __init__(self, cache, rows):
        super().__init__(cache)
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def read(self, rows):
        return super().read(self.rows[np.asarray(rows)])


def test_each_row_is_predicted_by_a_model_that_never_saw_it():
    """Labels that are pure noise: a model that saw a row would often give its own label a high probability (one
    unique vector per row, more dimensions than sampled rows); held out, the given label gets no more than chance."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((1500, 300)).astype(np.float32)
    labels = rng.integers(0, 3, 1500)
    proba = sampled_out_of_fold_probabilities(ArrayRows(X), np.arange(1500), labels, sample_rows=250, block_rows=128)
    own = proba[np.arange(1500), labels]
    assert proba.shape == (1500, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert own.mean() < 0.4
    from sklearn.linear_model import LogisticRegression

    seen = LogisticRegression(max_iter=2000).fit(X[:250], labels[:250]).predict_proba(X[:250])
    assert seen[np.arange(250), labels[:250]].mean() > 0.9  # what seeing a row would have given


def test_stratified_sample_keeps_each_class_share():
    labels = np.repeat([0, 1, 2], [6000, 3000, 1000])
    among = np.arange(0, 10000, 2)
    sample = stratified_sample(labels, among, 1000, seed=0)
    assert len(sample) == 1000 and np.all(np.diff(sample) > 0) and set(sample) <= set(among)
    assert np.bincount(labels[sample]).tolist() == [600, 300, 100]
    assert np.array_equal(sample, stratified_sample(labels, among, 1000, seed=0))
    assert np.array_equal(stratified_sample(labels, among[:10], 50, seed=0), among[:10])


def test_readers_and_arrays_are_told_apart():
    assert is_row_reader(ArrayRows(np.zeros((2, 3)))) and not is_row_reader(np.zeros((2, 3)))
    assert ArrayRows(np.arange(12).reshape(2, 2, 3)).read(np.array([1])).shape == (1, 6)


def test_the_note_says_how_the_search_was_made(flipped_cache, monkeypatch):
    assert sampling_note(label_errors.LIMIT_ROWS) is None
    assert sampling_note(1_000_000) == (
        "label errors: out-of-fold probabilities from a logistic regression on a stratified 10,000-row sample of each "
        "fold's training rows (the search covers 1,000,000 labelled rows, each predicted by the fold that held it out)"
    )
    path, record = flipped_cache
    monkeypatch.setattr(label_errors, "LIMIT_ROWS", 2000)
    monkeypatch.setattr(label_errors, "SAMPLE_ROWS", 1500)
    findings = inspect_caches(path)
    assert ("label errors: out-of-fold probabilities from a logistic regression on a stratified 1,500-row sample of "
            "each fold's training rows (the search covers 3,000 labelled rows, each predicted by the fold that held "
            "it out)") in findings.notes
    flagged = {item["row"] for item in findings.label_issues if item["flagged"]}
    assert len(flagged & set(record["flipped"])) >= 0.75 * len(record["flipped"])
