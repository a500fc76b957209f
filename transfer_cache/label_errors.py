"""Likely label errors by the confident-learning rule, from out-of-fold probabilities of a logistic regression on the
cached vectors (see ``findings`` for the rule), on an array or, at scale, through a row reader.

A *row reader* is any object with ``__len__()`` and ``read(rows) -> float32 (len(rows), D)`` in the order asked:
a million rows of 1280-d float32 are 5 GB, so a large search reads only a training sample per fold and the held-out
rows a block at a time. Up to ``LIMIT_ROWS`` labelled rows the search is the exact in-memory one.
"""

from __future__ import annotations

import numpy as np

from ._errors import TransferCacheError

# Label errors: the variance floor of the standardisation before the logistic regression, as a share of the mean
# variance (``floored_standardise``). Measured with the embedded Lite0 against plain standardisation: folders of 30
# correctly labelled photos (3 classes) flag nothing over 7 folders x 30 fold seeds (plain: a coffee photo flagged as
# a rocket at p = 0.9998); 5% flipped labels among the top-ranked 10% on digits 0.978 (plain 0.966), flagged on 540
# photos of 9 subjects 0.89-1.0 with no correct label flagged (plain 0.96-1.0). Unit-length vectors without a scaler
# needed C = 100 and 6x the time to rank digits as well, and then flagged fewer photos (0.85-1.0).
VARIANCE_FLOOR = 0.1

# Above this many labelled rows, each fold's logistic regression trains on a stratified sample of SAMPLE_ROWS of its
# training rows instead of all of them (at the limit the exact search trains each of 5 folds on 10,000 rows too).
# Measured on a synthetic Lite0 cache of 100,000 rows with 2% flipped labels (_synthetic_cache; 2 shared cores):
# samples of 10,000 rows flag 92% of the flips at 95% precision in 93 s (413 MB); samples of 40,000 flag 89% at 77%
# precision in 1,122 s (863 MB): a larger sample costs time and finds no more (lbfgs fits the flipped labels too).
LIMIT_ROWS = 12_500
SAMPLE_ROWS = 10_000
PREDICT_BLOCK_ROWS = 8192  # held-out rows read and predicted at a time above the limit


def floored_standardise(train: np.ndarray, test: np.ndarray, *, floor: float = VARIANCE_FLOOR):
    """``train`` and ``test`` centred on the training mean, each dimension divided by the square root of
    ``(variance + floor x mean variance) / (1 + floor)`` over the training rows.

    Plain standardisation divides by the variance alone: a ReLU dimension that is zero on all but one of 24 training
    rows (std 3e-5) turns a test row's 0.07 into a z-score of 2,300, and that one coordinate then decides the
    prediction, confidently and wrongly. The floor caps how much any dimension can be magnified relative to a typical
    one (about 3.3x at 0.1); dimensions with ordinary variance are standardised as before.
    """
    train = np.asarray(train, dtype=np.float32)
    mean, scale = floored_scale(train, floor=floor)
    return (train - mean) / scale, (np.asarray(test, dtype=np.float32) - mean) / scale


def floored_scale(train: np.ndarray, *, floor: float = VARIANCE_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """The float32 (mean, scale) of ``floored_standardise`` over the training rows, to apply to later blocks."""
    mean = train.mean(axis=0, dtype=np.float64)
    variance = train.var(axis=0, dtype=np.float64)
    scale = np.sqrt((variance + floor * variance.mean()) / (1.0 + floor))
    scale[scale == 0] = 1.0  # every dimension constant: nothing to scale
    return mean.astype(np.float32), scale.astype(np.float32)


def _fold_probabilities(X, labels, train, test, n_classes):
    """One fold: standardise on its training rows, fit, and predict its held-out rows."""
    from sklearn.linear_model import LogisticRegression

    fit_on, predict_on = floored_standardise(X[train], X[test])
    model = LogisticRegression(max_iter=2000).fit(fit_on, labels[train])
    out = np.zeros((len(test), n_classes))
    out[:, model.classes_] = model.predict_proba(predict_on)
    return test, out


def out_of_fold_probabilities(X: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0,
                              n_jobs: int = 1) -> np.ndarray:
    """Each labelled row's class probabilities (columns: labels 0..max) from a logistic regression that never saw it
    (stratified k-fold), on vectors standardised with a variance floor (``floored_standardise``)."""
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    counts = _fold_counts(labels, folds)
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = np.zeros((len(X), len(counts)))
    for test, out in Parallel(n_jobs=n_jobs)(delayed(_fold_probabilities)(X, labels, train, test, len(counts))
                                             for train, test in splitter.split(X, labels)):
        probabilities[test] = out
    return probabilities


def confident_learning_issues(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flagged mask, suggested label) by the confident-learning rule (see the module docstring)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = probabilities.shape[1]
    thresholds = np.array([
        probabilities[labels == j, j].mean() if np.any(labels == j) else np.inf for j in range(n_classes)
    ])
    confident = probabilities >= thresholds[None, :]
    masked = np.where(confident, probabilities, -np.inf)
    suggested = np.argmax(masked, axis=1)
    has_any = confident.any(axis=1)
    flagged = has_any & (suggested != labels)
    return flagged, np.where(has_any, suggested, labels)


def label_issues(X, labels, *, folds: int = 5, seed: int = 0, n_jobs: int = 1, limit: int | None = None,
                 sample_rows: int | None = None) -> list[dict]:
    """Every labelled row with its out-of-fold self-confidence, ranked (lowest first); ``flagged`` marks likely
    label errors by the confident-learning rule, with the label the vectors suggest.

    ``X`` is an array or a row reader (``is_row_reader``). Above ``limit`` labelled rows (``LIMIT_ROWS``) each fold
    trains on a stratified sample of ``sample_rows`` (``SAMPLE_ROWS``) of its training rows (``sampling_note`` says
    so) and every row is still predicted out of fold, a block at a time."""
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.flatnonzero(labels >= 0)
    # the probability columns are the classes present, in order: a class id absent from the rows must not shift them
    classes, given = np.unique(labels[rows], return_inverse=True)
    reader = X if is_row_reader(X) else ArrayRows(X)
    if len(rows) > (LIMIT_ROWS if limit is None else limit):
        probabilities = sampled_out_of_fold_probabilities(reader, rows, given, folds=folds, seed=seed,
                                                          sample_rows=sample_rows or SAMPLE_ROWS)
    else:
        probabilities = out_of_fold_probabilities(reader.read(rows), given, folds=folds, seed=seed, n_jobs=n_jobs)
    flagged, suggested = confident_learning_issues(probabilities, given)
    self_confidence = probabilities[np.arange(len(rows)), given]
    out = [
        {"row": int(row), "label": int(labels[row]), "suggested": int(classes[suggested[i]]),
         "self_confidence": round(float(self_confidence[i]), 6),
         "suggested_probability": round(float(probabilities[i, suggested[i]]), 6), "flagged": bool(flagged[i])}
        for i, row in enumerate(rows)
    ]
    out.sort(key=lambda item: (not item["flagged"], item["self_confidence"], item["row"]))
    for rank, item in enumerate(out, 1):
        item["rank"] = rank
    return out


def _fold_counts(labels: np.ndarray, folds: int) -> np.ndarray:
    """The rows of each class, refusing a class smaller than the folds."""
    counts = np.bincount(labels) if len(labels) else np.zeros(0, int)
    smallest = int(counts[counts > 0].min()) if len(labels) else 0
    if smallest < folds:
        raise TransferCacheError(
            f"finding label errors needs at least {folds} labelled images in every class (cross-validation over "
            f"{folds} folds); the smallest class has {smallest}: pass a smaller --folds, or label more images"
        )
    return counts


# --------------------------------------------------------------------------- at scale, through a row reader


class ArrayRows:
    """An array in memory as a row reader."""

    def __init__(self, X):
        self.X = X

    def __len__(self) -> int:
        return len(self.X)

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.X[np.asarray(rows)], dtype=np.float32).reshape(len(rows), -1)


def is_row_reader(X) -> bool:
    """Whether ``X`` reads its rows on demand (``read(rows)``) rather than being an array."""
    return not isinstance(X, np.ndarray) and callable(getattr(X, "read", None))


def stratified_sample(labels: np.ndarray, among: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` of the positions ``among`` (all of them when fewer), each class in its share, sorted."""
    if size >= len(among):
        return np.sort(among)
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(among, train_size=size, stratify=labels[among], random_state=seed)
    return np.sort(sample)


def _sampled_fold_model(reader, rows, labels, train, *, sample_rows: int, seed: int):
    """One fold's logistic regression on a stratified sample of its training rows, and the sample's scaling."""
    from sklearn.linear_model import LogisticRegression

    sample = stratified_sample(labels, train, sample_rows, seed)
    fit_on = reader.read(rows[sample])
    mean, scale = floored_scale(fit_on)
    fit_on -= mean
    fit_on /= scale
    return LogisticRegression(max_iter=2000).fit(fit_on, labels[sample]), mean, scale


def sampled_out_of_fold_probabilities(reader, rows: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0,
                                      sample_rows: int = SAMPLE_ROWS,
                                      block_rows: int | None = None) -> np.ndarray:
    """``out_of_fold_probabilities`` of the reader's ``rows`` (sorted), each fold trained on a stratified sample of
    ``sample_rows`` of its training rows; then one pass over the rows, a block at a time, each row predicted by the
    model of the fold that held it out."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    counts = _fold_counts(labels, folds)
    fold_of = np.empty(len(rows), dtype=np.int64)
    models = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[test] = fold
        models.append(_sampled_fold_model(reader, rows, labels, train, sample_rows=sample_rows, seed=seed + fold))
    probabilities = np.zeros((len(rows), len(counts)))
    block_rows = block_rows or PREDICT_BLOCK_ROWS
    for start in range(0, len(rows), block_rows):
        stop = min(len(rows), start + block_rows)
        block = reader.read(rows[start:stop])
        for fold, (model, mean, scale) in enumerate(models):
            mine = np.flatnonzero(fold_of[start:stop] == fold)
            if len(mine):
                out = np.zeros((len(mine), len(counts)))
                out[:, model.classes_] = model.predict_proba((block[mine] - mean) / scale)
                probabilities[start + mine] = out
    return probabilities


def sampling_note(labelled: int) -> str | None:
    """What ``label_issues`` did differently for ``labelled`` rows at its defaults, in one line (None: the exact
    search)."""
    if labelled <= LIMIT_ROWS:
        return None
    sample_rows = SAMPLE_ROWS
    return (f"label errors: out-of-fold probabilities from a logistic regression on a stratified {sample_rows:,}-row "
            f"sample of each fold's training rows (the search covers {labelled:,} labelled rows, each predicted by "
            "the fold that held it out)")
