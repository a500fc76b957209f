"""What the cached vectors know about the dataset: duplicates and train/test leakage, likely label errors, outliers,
and the images nearest to any image.

Every finding is computed from the cache alone (one vector per image, its content digest, label and split). Below
``EXACT_ROWS`` rows the nearest rows are found exactly, all pairs in blocks; from there on (all pairs grow as the
square of the rows: 256 s at 100,000) they come from the cache's kept approximate index (``knn_index``), the
vectors stay on disk and are read a block at a time through the table's ``read(rows)``, pairs that may be near
duplicates are re-scored exactly, and a note on the findings says what is approximate.

* **Exact duplicates**: rows with the same content digest (the same bytes, whatever their names).
  **Near duplicates**: pairs whose transfer values have cosine similarity >= ``NEAR_DUPLICATE_COSINE``. A pair whose
  two images sit on different sides of the split (train vs val/test) is **leakage**; a pair with two different
  labels is a **conflict**.
* **Likely label errors** follow the confident-learning rule (Northcutt et al., 2021): out-of-fold probabilities
  from a cross-validated logistic regression on the cached vectors, standardised with a variance floor so that a
  dimension nearly constant over a small training fold cannot dominate a prediction; class j's threshold is the
  mean probability of j over the rows labelled j; a row is flagged when some other class reaches its threshold and
  is the most probable of the classes that do (an off-diagonal entry of the confident joint, which is what
  cleanlab's ``find_label_issues(filter_by="confident_learning")`` reports). The rule is a few lines on top of
  scikit-learn, so cleanlab and its dependencies do not earn a place here. Rows are ranked by self-confidence (the
  probability of their given label), lowest first.
* **Outliers**: images far from everything: one minus the mean cosine similarity to their ``k`` nearest neighbours,
  over all images and within their own class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import knn_index
from ._checks import integer, whole_number
from ._errors import TransferCacheError
from .cache_rows import CacheRows
from .knn_index import EXACT_ROWS  # from this many rows on, the nearest rows come from the kept index
from .label_errors import (  # noqa: F401  (importable from here, as before)
    VARIANCE_FLOOR,
    confident_learning_issues,
    floored_standardise,
    label_issues,
    out_of_fold_probabilities,
    sampling_note,
)

# Chosen from measurements with the embedded Lite0 (README, "What the vectors know"). Seven distinct photographs of
# scikit-image and scikit-learn and edited copies of each, cosine to the original: JPEG quality 90 0.993-0.998,
# quality 80 0.938-0.995 (the rocket photo's artefacts cost the most), quality 70 0.92-0.98, halved 0.955-0.98,
# mirrored 0.94-0.98, rotated 5 degrees 0.94-0.96, cropped to 90% 0.90-0.97; distinct photographs at most 0.35.
NEAR_DUPLICATE_COSINE = 0.90
# Homogeneous data is different: scikit-learn's 8x8 digits, blown up to 224 px, have a median nearest-neighbour
# cosine of 0.969 between *distinct* images (max 0.990), and a median 0.95 to their 10th nearest. When the median
# similarity to the k-th nearest neighbour (not the first: duplicates themselves must not make a dataset look
# homogeneous) is above HOMOGENEOUS_MEDIAN, the automatic threshold is HOMOGENEOUS_COSINE instead.
HOMOGENEOUS_MEDIAN = 0.90
HOMOGENEOUS_COSINE = 0.995
# Approximate path: each row's candidate list is this many times k long, for the within-class outlier distance.
CLASS_CANDIDATES = 4
# Approximate path: pairs whose 8-bit similarity is this close below the near-duplicate threshold are re-scored
# exactly (the 8-bit codes are about 1e-3 off), so the threshold decides on exact cosines.
RESCORE_MARGIN = 0.02


def automatic_threshold(kth_similarities: np.ndarray) -> float:
    """The near-duplicate threshold for a dataset, from each image's similarity to its k-th nearest neighbour."""
    if len(kth_similarities) and float(np.median(kth_similarities)) > HOMOGENEOUS_MEDIAN:
        return HOMOGENEOUS_COSINE
    return NEAR_DUPLICATE_COSINE


def nearest(X: np.ndarray, k: int, *, queries: np.ndarray | None = None, block_rows: int = 256):
    """The ``k`` rows of ``X`` most similar (cosine) to each query row, best first: (indices (Q, k), similarities).

    Without ``queries`` the rows of ``X`` query themselves and each row's own entry is left out. Exact, computed a
    block of queries at a time.
    """
    from .classifiers.base import unit_rows  # here: neighbors on a large cache never loads scikit-learn

    base = unit_rows(X)  # rows of unit length: dot products are cosine similarities
    self_query = queries is None
    Q = base if self_query else unit_rows(queries)
    k = min(k, len(base) - (1 if self_query else 0))
    indices = np.zeros((len(Q), max(k, 0)), dtype=np.int64)
    sims = np.zeros((len(Q), max(k, 0)), dtype=np.float32)
    if k <= 0:
        return indices, sims
    for start in range(0, len(Q), block_rows):
        stop = min(len(Q), start + block_rows)
        block = Q[start:stop] @ base.T
        if self_query:
            block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(top, order, axis=1)
        sims[start:stop] = np.take_along_axis(top_sims, order, axis=1)
    return indices, sims


def _side(split: str) -> str:
    """Which side of the split a row is on: "train", "held-out" (val or test), or "" (no split given)."""
    return "train" if split == "train" else ("held-out" if split in ("val", "test") else "")


def duplicate_pairs(
    X: np.ndarray, *, ids, labels, split, threshold: float | None = None, k: int = 10, block_rows: int = 256,
    neighbours: tuple | None = None,
) -> tuple[list[dict], float]:
    """Every pair of rows that are exact (same digest) or near (cosine >= threshold) duplicates, most similar first,
    and the threshold used (None: ``automatic_threshold``).

    Each pair says whether it is ``leakage`` (one image in train, the other in val/test) and a ``conflict`` (two
    different labels, both given). Near pairs are found among each row's ``k`` nearest neighbours (``neighbours``:
    ``nearest(X, k)`` when the caller has it already).
    """
    ids = list(ids)
    labels = np.asarray(labels)
    split = [str(s) for s in split]
    pairs: dict[tuple[int, int], float] = {}
    by_digest: dict[str, list[int]] = {}
    for row, digest in enumerate(ids):
        by_digest.setdefault(digest, []).append(row)
    for rows in by_digest.values():
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                pairs[(rows[a], rows[b])] = 1.0
    if len(ids) > 1:
        indices, sims = neighbours if neighbours is not None else nearest(X, k, block_rows=block_rows)
        if threshold is None:
            threshold = automatic_threshold(sims[:, -1])
        for row in range(len(ids)):
            for other, sim in zip(indices[row], sims[row]):
                if sim < threshold:
                    break
                pairs.setdefault((min(row, int(other)), max(row, int(other))), float(sim))
    out = []
    for (a, b), sim in pairs.items():
        exact = ids[a] == ids[b]
        sides = {_side(split[a]), _side(split[b])}
        out.append({
            "row_a": a, "row_b": b, "cosine": 1.0 if exact else round(sim, 6), "kind": "exact" if exact else "near",
            "split_a": split[a], "split_b": split[b], "label_a": int(labels[a]), "label_b": int(labels[b]),
            "leakage": sides == {"train", "held-out"},
            "conflict": bool(labels[a] >= 0 and labels[b] >= 0 and labels[a] != labels[b]),
        })
    out.sort(key=lambda p: (-p["cosine"], p["row_a"], p["row_b"]))
    return out, float(NEAR_DUPLICATE_COSINE if threshold is None else threshold)


def outliers(X: np.ndarray | None, labels, *, k: int = 10, block_rows: int = 256,
             neighbours: tuple | None = None, within: np.ndarray | None = None) -> list[dict]:
    """Every row with its k-NN distance (1 - mean cosine to its k nearest neighbours), overall and within its class,
    ranked by the overall distance, farthest first (``neighbours``: ``nearest(X, k)`` when the caller has it;
    ``within``: the distances to their class when the caller has them, e.g. ``class_distances``)."""
    labels = np.asarray(labels, dtype=np.int64)
    _, sims = neighbours if neighbours is not None else nearest(X, k, block_rows=block_rows)
    overall = 1.0 - sims.mean(axis=1) if sims.size else np.zeros(len(labels))
    if within is None:
        within = np.full(len(labels), np.nan)
        for label in np.unique(labels[labels >= 0]):
            members = np.flatnonzero(labels == label)
            if len(members) > 1:
                _, class_sims = nearest(np.asarray(X)[members], k, block_rows=block_rows)
                within[members] = 1.0 - class_sims.mean(axis=1)
    out = [{"row": row, "label": int(labels[row]), "knn_distance": round(float(overall[row]), 6),
            "class_knn_distance": None if np.isnan(within[row]) else round(float(within[row]), 6)}
           for row in range(len(labels))]
    out.sort(key=lambda item: (-item["knn_distance"], item["row"]))
    for rank, item in enumerate(out, 1):
        item["rank"] = rank
    return out


# --------------------------------------------------------------------------- on caches


@dataclass
class Findings:
    """The findings of one inspection, rows numbered in the combined table (the cache, then the test cache)."""

    paths: list[str]
    labels: np.ndarray
    split: list[str]
    class_names: list[str]
    origin: list[str]  # which cache file each row comes from
    threshold: float = NEAR_DUPLICATE_COSINE  # the near-duplicate cosine used
    neighbours: tuple | None = None  # (indices, similarities) of each row's k nearest rows
    duplicates: list[dict] = field(default_factory=list)
    label_issues: list[dict] = field(default_factory=list)
    outliers: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, cache): images never cached
    label_errors_searched: bool = False  # False when no two classes have enough labelled images for the folds

    @property
    def leakage(self) -> list[dict]:
        return [pair for pair in self.duplicates if pair["leakage"]]

    @property
    def conflicts(self) -> list[dict]:
        return [pair for pair in self.duplicates if pair["conflict"]]

    def label_name(self, label: int) -> str:
        """A label's class name; "unlabelled" for -1 (or a label outside the class names)."""
        return self.class_names[label] if 0 <= label < len(self.class_names) else "unlabelled"


def inspect_caches(
    cache,
    *,
    test_cache=None,
    layer: str | None = None,
    threshold: float | None = None,
    k: int = 10,
    folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    check_vectors: bool = True,
    exact_rows: int = EXACT_ROWS,
    progress: bool = False,
) -> Findings:
    """Duplicates (and leakage, conflicts), likely label errors and outliers of a cache (plus a test cache, whose
    rows count as "test"): what ``python -m transfer_cache.inspect`` writes. ``check_vectors=False`` skips the scan
    for NaN when the caller has just made it on the same file (the cache report). From ``exact_rows`` rows on, the
    nearest rows come from the cache's kept approximate index (``knn_index``) and the vectors stay on disk."""
    whole_number(k, "k")
    whole_number(folds, "folds", at_least=2)
    integer(seed, "seed")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 < float(threshold) <= 1.0):
        raise TransferCacheError(f"threshold must be a cosine similarity in (0, 1], e.g. 0.95; got {threshold!r}")
    with _read_caches([cache] + ([test_cache] if test_cache is not None else []), layer=layer,
                     check_vectors=check_vectors) as table:
        findings = Findings(paths=table.paths, labels=table.labels, split=table.split,
                            class_names=table.class_names, origin=table.origin, failed=table.failed)
        X, within = None, None
        if len(table) < max(exact_rows, 3):  # the approximate path wants a row and two others at least
            X = np.asarray(table)
            findings.neighbours = nearest(X, k) if len(X) > 1 else None  # one pass over all pairs serves every finding
        else:
            findings.neighbours, within = _approximate_neighbours(findings, table, k=k, threshold=threshold,
                                                                  progress=progress)
        findings.duplicates, findings.threshold = duplicate_pairs(
            X, ids=table.ids, labels=table.labels, split=table.split, threshold=threshold, k=k,
            neighbours=findings.neighbours)
        if threshold is None and findings.threshold != NEAR_DUPLICATE_COSINE:
            findings.notes.append(
                f"these images are all very alike (median cosine to their {k}th nearest neighbour above "
                f"{HOMOGENEOUS_MEDIAN}), so near duplicates start at cosine {findings.threshold} here instead of "
                f"{NEAR_DUPLICATE_COSINE}; --threshold sets it"
            )
        _search_label_errors(findings, table if X is None else X, folds=folds, seed=seed, n_jobs=n_jobs)
        findings.outliers = outliers(X, table.labels, k=k, neighbours=findings.neighbours, within=within)
    return findings


def _approximate_neighbours(findings: Findings, table, *, k: int, threshold: float | None, progress: bool):
    """Each row's ``k`` nearest rows from the kept index, with the pairs that may be near duplicates re-scored
    exactly (so their cosines, and which of them pass the threshold, are the exact search's), and the within-class
    outlier distances from a longer candidate list; a note on the findings says what is approximate."""
    candidates = min(len(table) - 1, max(k, CLASS_CANDIDATES * k))
    indices, sims = knn_index.self_graph(table, k=candidates, beside=table.first_path, key=table.index_key(),
                                         progress=progress)
    k = min(k, candidates)
    near_indices, near_sims = indices[:, :k].copy(), sims[:, :k].copy()
    cut = threshold if threshold is not None else automatic_threshold(near_sims[:, -1])
    rows, places = np.nonzero(near_sims >= cut - RESCORE_MARGIN)
    if len(rows):
        near_sims[rows, places] = knn_index.exact_cosines(table, rows, near_indices[rows, places])
        touched = np.unique(rows)
        order = np.argsort(-near_sims[touched], axis=1, kind="stable")
        near_sims[touched] = np.take_along_axis(near_sims[touched], order, axis=1)
        near_indices[touched] = np.take_along_axis(near_indices[touched], order, axis=1)
    within = class_distances(indices, sims, table.labels, k=k)
    findings.notes.append(
        f"{len(table)} rows: the nearest images come from an approximate index (HNSW over 8-bit codes, which can "
        "miss some of an image's nearest: recall@10 0.92 on a synthetic cache of 100,000 rows, 0.83 on one of a "
        "million); rows the index cannot reach are compared exactly with each other; near-duplicate cosines are "
        "exact; the within-class outlier distance counts each image's "
        f"nearest of its class among its {candidates} nearest overall, the missing ones at the last one's similarity "
        "(a lower bound of the distance)"
    )
    return (near_indices, near_sims), within


def class_distances(indices: np.ndarray, sims: np.ndarray, labels: np.ndarray, *, k: int) -> np.ndarray:
    """Each row's distance to its class (1 - mean cosine to its ``k`` nearest of the same class, at most the class
    size - 1) from its candidate list (``indices``, ``sims``, best first): a same-class row missing from the list is
    counted at the list's last similarity. NaN for unlabelled rows and classes of one row."""
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels[labels >= 0], minlength=1)
    wanted = np.where(labels >= 0, np.minimum(k, sizes[np.maximum(labels, 0)] - 1), 0)
    same = (labels[indices] == labels[:, None]) & (indices >= 0)
    taken = same & (np.cumsum(same, axis=1) <= wanted[:, None])
    found = taken.sum(axis=1)
    total = np.where(taken, sims, 0).sum(axis=1, dtype=np.float64) + (wanted - found) * sims[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wanted > 0, 1.0 - total / np.maximum(wanted, 1), np.nan)


def _read_caches(paths: list, *, layer: str | None, check_vectors: bool) -> CacheRows:
    """The rows of every cache, which must hold rows and share one fingerprint: vectors of two feature
    configurations are not comparable. The table keeps them open: close it (``with``)."""
    from .cache import open_cache

    table = CacheRows()
    fingerprint = None
    try:
        for index, path in enumerate(paths):
            opened = open_cache(path, check_vectors=check_vectors)
            table.keep_open(opened)
            opened.require_rows("inspect")
            if fingerprint is not None and opened.fingerprint != fingerprint:
                raise TransferCacheError(
                    f"{path} has fingerprint {opened.fingerprint}, not {fingerprint} like {paths[0]}: vectors of two "
                    "feature configurations cannot be compared; extract both with the same options"
                )
            fingerprint = opened.fingerprint
            table.add(opened, path=path, layer=layer, test=bool(index))
    except BaseException:
        table.close()
        raise
    return table


def _search_label_errors(findings: Findings, X, *, folds: int, seed: int, n_jobs: int) -> None:
    """Label errors among the classes with at least ``folds`` labelled images: a class too small for the folds leaves
    the search to the classes that have enough, not the whole inspection, and a note names what was left out."""
    all_labels, class_names = findings.labels, findings.class_names
    counts = np.bincount(all_labels[all_labels >= 0], minlength=len(class_names))
    foldable = np.flatnonzero(counts >= folds)
    too_few = ", ".join(f"{class_names[c]} ({counts[c]})" for c in np.flatnonzero((counts > 0) & (counts < folds)))
    if len(foldable) >= 2:
        searched = np.where(np.isin(all_labels, foldable), all_labels, -1)
        findings.label_issues = label_issues(X, searched, folds=folds, seed=seed, n_jobs=n_jobs)
        findings.label_errors_searched = True
        method = sampling_note(int(np.count_nonzero(searched >= 0)))
        if method:
            findings.notes.append(method)
        if too_few:
            findings.notes.append(
                f"label errors searched among the {len(foldable)} classes with at least {folds} labelled images; left "
                f"out, with too few images for {folds} folds: {too_few}"
            )
    else:
        findings.notes.append(
            f"label errors not searched: it needs two or more classes with at least {folds} labelled images each "
            f"(--folds {folds})" + (f"; too few: {too_few}" if too_few else "")
        )
