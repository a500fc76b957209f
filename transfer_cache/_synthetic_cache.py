"""Synthetic large caches: N rows of vectors that look like a real cache's, with planted problems on record.

The rows are sampled from a Gaussian mixture fitted to a real (small) cache: one mean per class, the top principal
directions of the pooled within-class scatter with their spreads, and an independent residual per dimension, clipped
at 0 like the ReLU outputs they imitate. The cache carries the real cache's feature configuration (so the same
fingerprint) and is written a block at a time, so building a cache of millions of rows takes a few blocks of memory
besides its per-row columns. Planted, seeded and recorded in ``<cache>.planted.json``: near duplicates (a copy of a
row with 0.1% multiplicative noise), some across the train/test split (leakage), some with another label
(conflicts), and a share of flipped labels. Scale measurements (``bench --parts rows``) and tests build on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomic import write_json
from .cache import Rows, open_cache, write_cache
from .feature_config import FINGERPRINT_FIELDS

COMPONENTS = 64  # principal directions of the within-class scatter kept
BLOCK_ROWS = 8192  # rows sampled and written at a time; duplicates are planted within a block
DUPLICATE_NOISE = 0.001  # multiplicative noise of a near-duplicate copy
PLANTED_SUFFIX = ".planted.json"


@dataclass
class Mixture:
    """What is sampled: per-class means (K, D), the scatter's principal directions (C, D) and spreads (C,), the
    residual spread per dimension (D,), and the class shares of the real cache."""

    means: np.ndarray
    directions: np.ndarray
    spreads: np.ndarray
    residual: np.ndarray
    shares: np.ndarray

    def sample(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One float32 row per label, clipped at 0."""
        n = len(labels)
        z = rng.standard_normal((n, len(self.spreads)), dtype=np.float32) * self.spreads
        noise = rng.standard_normal((n, self.means.shape[1]), dtype=np.float32)
        noise *= self.residual
        noise += self.means[labels]
        noise += z @ self.directions
        return np.maximum(noise, 0.0, out=noise)


def fit_mixture(X: np.ndarray, labels: np.ndarray, *, components: int = COMPONENTS) -> Mixture:
    """The mixture of a real cache's labelled rows (``labels`` 0..K-1, every class present)."""
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    means = np.stack([X[labels == k].mean(axis=0) for k in range(len(counts))])
    centred = X - means[labels]
    scatter = centred.T @ centred / max(1, len(X) - len(counts))
    values, vectors = np.linalg.eigh(scatter)
    top = np.argsort(values)[::-1][:min(components, len(values))]
    values, vectors = np.maximum(values[top], 0.0), vectors[:, top]
    explained = (vectors**2 * values).sum(axis=1)
    residual = np.sqrt(np.maximum(np.diag(scatter) - explained, 0.0))
    return Mixture(means=means.astype(np.float32), directions=vectors.T.astype(np.float32),
                   spreads=np.sqrt(values).astype(np.float32), residual=residual.astype(np.float32),
                   shares=counts / counts.sum())


@dataclass
class Plan:
    """Every row's true and given label and split, and the planted problems (row numbers of the cache)."""

    true: np.ndarray
    given: np.ndarray
    split: np.ndarray
    copies: np.ndarray  # row of each near-duplicate copy
    sources: np.ndarray  # the row it copies (earlier, in the same block)
    flipped: np.ndarray  # rows whose given label is not their true one (copies with a conflict excepted)

    def record(self, *, seed: int, mixture_from: str) -> dict:
        leak = self.split[self.copies] != self.split[self.sources]
        conflict = self.given[self.copies] != self.given[self.sources]
        pairs = np.stack([self.sources, self.copies], axis=1).tolist()
        return {
            "rows": len(self.true), "seed": seed, "mixture_from": mixture_from,
            "duplicate_noise": DUPLICATE_NOISE, "duplicates": pairs,
            "leakage": [p for p, flag in zip(pairs, leak) if flag],
            "conflicts": [p for p, flag in zip(pairs, conflict) if flag],
            "flipped": self.flipped.tolist(), "true_labels_of_flipped": self.true[self.flipped].tolist(),
        }


def plan_rows(n: int, shares: np.ndarray, *, seed: int, test_share: float, duplicate_share: float,
              leak_share: float, conflict_share: float, flip_share: float, block_rows: int = BLOCK_ROWS) -> Plan:
    """Labels, split and planted rows, drawn in one seeded pass (a few arrays of N integers)."""
    rng = np.random.default_rng([seed, 0])
    k = len(shares)
    true = rng.choice(k, size=n, p=shares).astype(np.int64)
    split = np.where(rng.random(n) < test_share, "test", "train").astype(object)
    offset = np.arange(n) % block_rows
    candidates = np.flatnonzero(offset > 0)
    copies = np.sort(rng.choice(candidates, size=min(len(candidates), round(duplicate_share * n)), replace=False))
    sources = copies - 1 - (rng.random(len(copies)) * offset[copies]).astype(np.int64)
    for copy, source in zip(copies, sources):  # in row order, so a copy of a copy sees its source's final values
        true[copy], split[copy] = true[source], split[source]
    given = true.copy()
    leak = rng.random(len(copies)) < leak_share
    split[copies[leak]] = np.where(split[sources[leak]] == "train", "test", "train")
    conflict = rng.random(len(copies)) < conflict_share
    given[copies[conflict]] = (given[sources[conflict]] + rng.integers(1, k, conflict.sum())) % k
    untouched = np.setdiff1d(np.arange(n), np.concatenate([copies, sources]))
    flipped = np.sort(rng.choice(untouched, size=min(len(untouched), round(flip_share * n)), replace=False))
    given[flipped] = (true[flipped] + rng.integers(1, k, len(flipped))) % k
    return Plan(true=true, given=given, split=split, copies=copies, sources=sources, flipped=flipped)


def _row_id(seed: int, row: int) -> str:
    return hashlib.sha256(f"synthetic:{seed}:{row}".encode()).hexdigest()


def write_synthetic(path, *, like, rows: int, seed: int = 0, test_share: float = 0.2,
                    duplicate_share: float = 0.002, leak_share: float = 0.3, conflict_share: float = 0.3,
                    flip_share: float = 0.02, block_rows: int = BLOCK_ROWS, progress: bool = False) -> dict:
    """Write a cache of ``rows`` synthetic rows at ``path`` shaped like the real cache ``like`` (its feature
    configuration, class names and vectors), and its record of planted problems beside it; returns the record."""
    from tqdm import tqdm

    with open_cache(like) as real:
        keep = real.labels >= 0
        mixture = fit_mixture(real.read_rows(np.flatnonzero(keep)), real.labels[keep])
        config, class_names, source = real.config, list(real.class_names), real.info.source
    plan = plan_rows(rows, mixture.shares, seed=seed, test_share=test_share, duplicate_share=duplicate_share,
                     leak_share=leak_share, conflict_share=conflict_share, flip_share=flip_share,
                     block_rows=block_rows)
    bar = tqdm(total=rows, desc="synthetic rows", unit="row", disable=not progress, leave=False)

    def feature_rows(start, stop):
        X = mixture.sample(plan.true[start:stop], np.random.default_rng([seed, 1, start]))
        inside = (plan.copies >= start) & (plan.copies < stop)
        noise = np.random.default_rng([seed, 2, start]).standard_normal((inside.sum(), X.shape[1]), dtype=np.float32)
        for j, (copy, source) in enumerate(zip(plan.copies[inside] - start, plan.sources[inside] - start)):
            X[copy] = X[source] * (1.0 + DUPLICATE_NOISE * noise[j])
        bar.update(stop - start)
        return [X]

    attrs = {name: config[name] for name in FINGERPRINT_FIELDS if name in config}
    attrs.update(class_names=class_names, source=f"synthetic:{rows}-rows-like-{source}", source_kind="synthetic",
                 source_root="")
    columns = Rows(ids=[_row_id(seed, i) for i in range(rows)], paths=[f"synthetic/{i:08d}" for i in range(rows)],
                   labels=plan.given, split=plan.split.tolist())
    try:
        write_cache(path, attrs=attrs, rows=columns, feature_rows=feature_rows,
                    feature_shapes=[(mixture.means.shape[1],)], block_rows=block_rows)
    finally:
        bar.close()
    record = plan.record(seed=seed, mixture_from=str(like))
    write_json(planted_path(path), record, indent=None)
    return record


def planted_path(path) -> Path:
    """Where a synthetic cache's record of planted problems is kept."""
    path = Path(path)
    return path.with_name(path.name + PLANTED_SUFFIX)
