"""Training one head on the chosen split of a fit command, and its predictions on the rows it is scored on.

A split of method ``cv`` fits one head per fold (out-of-fold predictions for every row) and then one on all rows;
any other split fits once on its training rows. Keras heads with no validation rows get the test rows as
``validation_data`` purely to record the curves; that never changes the weights, except with ``early_stopping`` > 0,
which instead holds out 10% of the training rows (stratified, seeded) to monitor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ._errors import TransferCacheError
from .classifiers import Classifier, make_classifier
from .fit_memory import MemoryPlan, plan_memory
from .fit_options import FitOptions
from .runs import jsonable
from .splits import Split, stratified_rows
from .training_data import BLOCK_ROWS, TrainingData, reread_images

_NONE = np.empty(0, np.int64)


@dataclass
class Outcome:
    """One trained head: what it predicted on which rows, and how long training and predicting took."""

    model: Classifier
    rows: np.ndarray  # positions predicted (test rows, or every row out of fold)
    proba: np.ndarray
    n_train: int
    fit_seconds: float
    predict_seconds: float
    extra: dict = field(default_factory=dict)


class Inputs:
    """Gives each classifier its inputs: features from the caches, or re-read images for pixels.

    Each labelled row is read once per kind (features, or images of one size) and shared by every classifier and
    every subset (folds, early-stopping hold-outs) of the command.
    """

    def __init__(self, data: TrainingData, progress: bool):
        self.data = data
        self.progress = progress
        self._stores: dict[object, tuple[np.ndarray, np.ndarray]] = {}  # kind -> (slot per row or -1, array)

    def get(self, model: Classifier, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        kind = ("pixels", int(model.params["size"])) if model.input_kind == "pixels" else "features"  # effective, typed
        slots, array = self._stores.get(kind, (np.full(len(self.data.labels), -1, dtype=np.int64), None))
        missing = np.unique(rows[slots[rows] < 0])
        if len(missing):
            fresh = (
                reread_images(self.data, missing, kind[1], self.progress) if kind != "features"
                else self.data.features(missing)
            )
            offset = 0 if array is None else len(array)
            array = fresh if array is None else np.concatenate([array, fresh])
            slots[missing] = offset + np.arange(len(missing))
            self._stores[kind] = (slots, array)
        return array[slots[rows]]


def train_one(
    name: str, params: dict, grid: dict | None, *, data: TrainingData, split: Split, inputs: Inputs,
    options: FitOptions,
) -> Outcome:
    """Fit classifier ``name`` on ``split`` (its folds, with a ``cv`` split) and predict the rows it is scored on."""

    def fresh() -> Classifier:
        return make_classifier(name, params, seed=options.seed, n_jobs=options.n_jobs)

    if split.method == "cv":
        return _cross_validate(fresh, data=data, split=split, inputs=inputs, seed=options.seed)
    train, val = split.train, split.val
    model = fresh()
    if not model.uses_validation and len(val):
        train, val = np.sort(np.concatenate([train, val])), _NONE
    extra: dict = {}
    blocks = model.streams
    if not model.streams:  # read the inputs first: fit_seconds is training time only (streaming heads read as they go)
        plan = _memory_plan(model, data, train, held=len(val) + len(split.test), seed=options.seed)
        train, blocks = plan.train, plan.blocks
        if plan.note:
            extra["notes"] = [plan.note]
        start = time.perf_counter()
        for rows in (train, val, _NONE if blocks else split.test):
            if len(rows):
                inputs.get(model, rows)
        extra["data_seconds"] = round(time.perf_counter() - start, 4)
    start = time.perf_counter()
    if grid:
        model, extra = grid_search(model, grid, data, inputs, train, cv=options.cv or 3, n_jobs=options.n_jobs)
    else:
        monitor = val
        if model.uses_validation and not len(val):
            if int(model.params.get("early_stopping", 0)) > 0:  # declared default included; 0 for heads without it
                train, monitor = stratified_rows(data.labels, train, 0.1, options.seed)
                extra["validation"] = "10% of the training rows (early stopping)"
            else:
                monitor = split.test
                extra["validation"] = "the test rows, for the curves only (no early stopping, weights unaffected)"
        elif len(val):
            extra["validation"] = "the source's val rows"
        fit_model(model, data, inputs, train, monitor, seed=options.seed)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    proba = predict(model, data, inputs, split.test, blocks=blocks)
    predict_seconds = time.perf_counter() - start
    return Outcome(model, split.test, proba, len(train), fit_seconds, predict_seconds, extra)


def _memory_plan(model: Classifier, data: TrainingData, train: np.ndarray, *, held: int, seed: int,
                 may_sample: bool = True) -> MemoryPlan:
    """The rows a head holding its vectors in memory trains on (refused when they cannot fit: ``fit_memory``)."""
    if model.input_kind != "features":
        return MemoryPlan(train=train)
    dim = int(np.prod(data.caches[0].features_for(data.layer).shape[1:]))
    return plan_memory(model, labels=data.labels, train=train, held=held, dim=dim, seed=seed, may_sample=may_sample)


def _cross_validate(
    fresh: Callable[[], Classifier], *, data: TrainingData, split: Split, inputs: Inputs, seed: int,
) -> Outcome:
    """One head per fold, scored on its held-out rows (every row predicted once), then one on all the rows."""
    labels = data.labels
    model = fresh()
    if not model.streams:
        _memory_plan(model, data, split.train, held=0, seed=seed, may_sample=False)
    oof = np.zeros((len(labels), len(data.class_names)))
    scores, fold_seconds, predict_seconds = [], [], 0.0
    for train, test in split.folds:
        model = fresh()
        start = time.perf_counter()
        fit_model(model, data, inputs, train, _NONE, seed=seed)
        fold_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        oof[test] = predict(model, data, inputs, test)
        predict_seconds += time.perf_counter() - start
        scores.append(float(np.mean(np.argmax(oof[test], axis=1) == labels[test])))
    model = fresh()
    start = time.perf_counter()
    fit_model(model, data, inputs, split.train, _NONE, seed=seed)
    fit_seconds = time.perf_counter() - start
    extra = {
        "cv_scores": scores,
        "cv_accuracy_mean": float(np.mean(scores)),
        "cv_accuracy_std": float(np.std(scores)),
        "cv_fold_fit_seconds": fold_seconds,
    }
    return Outcome(model, np.arange(len(labels)), oof, len(labels), fit_seconds, predict_seconds, extra)


def fit_model(
    model: Classifier, data: TrainingData, inputs: Inputs, train: np.ndarray, val: np.ndarray, *, seed: int,
) -> None:
    """Train ``model`` on the ``train`` rows (in memory, or streamed from HDF5 by a streaming head)."""
    K = len(data.class_names)
    X_val = inputs.get(model, val) if len(val) else None
    y_val = data.labels[val] if len(val) else None
    if model.streams:  # out of core: the training rows come from HDF5, one block in memory at a time
        model.fit_stream(
            data.chunks(train, seed=seed, block_rows=model.stream_block_rows or BLOCK_ROWS), y=data.labels[train],
            n_classes=K, X_val=X_val, y_val=y_val, input_shape=data.caches[0].features_for(data.layer).shape[1:],
        )
        return
    views, view_mask = data.views(train) if takes_views(model, data) else (None, None)
    model.fit(inputs.get(model, train), data.labels[train], X_val, y_val, n_classes=K, views=views, view_mask=view_mask)


def takes_views(model: Classifier, data: TrainingData) -> bool:
    """Augmented views feed every head that trains on cached vectors in memory (not pixels, not streaming heads)."""
    return data.use_views and model.input_kind == "features" and not model.streams


def predict(model: Classifier, data: TrainingData, inputs: Inputs, rows: np.ndarray, *,
            blocks: bool | None = None) -> np.ndarray:
    """Class probabilities of ``rows`` (a streaming head, or with ``blocks``, reads them one block at a time)."""
    streamed = model.streams if blocks is None else blocks
    if streamed:
        parts = [model.predict_proba(data.features(rows[i : i + BLOCK_ROWS])) for i in range(0, len(rows), BLOCK_ROWS)]
        return np.concatenate(parts) if parts else np.zeros((0, len(data.class_names)))
    return model.predict_proba(inputs.get(model, rows))


def grid_search(
    model: Classifier, grid: dict, data: TrainingData, inputs: Inputs, train: np.ndarray, *, cv: int, n_jobs: int,
):
    """GridSearchCV over ``grid`` on the training rows (stratified, seeded folds); the best head refitted on them."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    labels = data.labels[train]
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if smallest < cv:
        raise TransferCacheError(
            f"--grid searches with {cv}-fold cross-validation, but the smallest class has {smallest} training rows; "
            f"pass --cv {max(2, smallest)}" if smallest >= 2 else "--grid needs at least 2 training rows per class"
        )
    search = GridSearchCV(
        model, grid, cv=StratifiedKFold(cv, shuffle=True, random_state=model.seed), scoring="accuracy",
        n_jobs=1 if model.is_keras else n_jobs, refit=True, error_score="raise",
    )
    views, view_mask = data.views(train) if takes_views(model, data) else (None, None)
    fit_params = {"n_classes": len(data.class_names)}
    if views is not None:  # aligned with the rows, so each fold keeps an image's views on its own side
        fit_params.update(views=views, view_mask=view_mask)
    search.fit(inputs.get(model, train), labels, **fit_params)
    cv_results = search.cv_results_
    results = [
        {"params": jsonable(p), "mean_accuracy": float(m), "std_accuracy": float(s)}
        for p, m, s in zip(cv_results["params"], cv_results["mean_test_score"], cv_results["std_test_score"])
    ]
    return search.best_estimator_, {"grid": jsonable(grid), "grid_best_params": jsonable(search.best_params_),
                                    "grid_cv": cv, "grid_results": results}
