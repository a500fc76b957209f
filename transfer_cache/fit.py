"""``python -m transfer_cache.fit`` and ``fit()``: train classifiers on cached transfer values, one run folder each.

The split is chosen once for all classifiers of a command, so their scores are comparable (``splits`` holds the
strategies). With ``--grid``, ``--cv K`` (default 3) sets the folds of the GridSearchCV on the training rows instead,
and the test split is kept. Keras heads with no validation rows get the test rows as ``validation_data`` purely to
record the curves (as the seeds do); that never changes the weights, except with ``early_stopping`` > 0, which
instead holds out 10% of the training rows (stratified, seeded) to monitor.

The rows come from ``training_data`` (caches of equal fingerprint only; unlabelled rows are left out).
Each run folder is written through ``runs`` (atomically, then listed in ``runs/index.csv``).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _cli
from ._errors import TransferCacheError
from ._versions import library_versions
from .classifiers import CLASSIFIERS, Classifier, classifier_help, make_classifier, parse_grid, parse_params
from .runs import INDEX_COLUMNS, append_index, jsonable, new_run_id, write_run  # noqa: F401  (INDEX_COLUMNS, append_index: public)
from .splits import Split, choose_split, keras_file_order, keras_validation_split, split_names, stratified_rows  # noqa: F401
from .training_data import BLOCK_ROWS, TrainingData, load_training_data, reread_images

__all__ = [
    "RunResult", "fit", "format_confusion", "format_leaderboard", "keras_file_order", "keras_validation_split", "main",
    "INDEX_COLUMNS",
]

SPLITS = split_names()
VIEWS = ("auto", "none")


@dataclass
class RunResult:
    """One finished run: where its folder is and what it scored."""

    run_id: str
    run_dir: Path
    classifier: str
    params: dict
    metrics: dict
    fit_seconds: float
    report: Path | None = None

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])


# --------------------------------------------------------------------------- metrics and run folders


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, the per-class report and the confusion matrix (rows = true)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = list(range(len(class_names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0
        )
        metrics = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }
    metrics["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist()
    metrics["class_names"] = list(class_names)
    return metrics


def _prediction_rows(data: TrainingData, rows: np.ndarray, proba: np.ndarray):
    """predictions.csv: (header, rows) for every predicted row, in the columns ``runs`` declares."""
    from .runs import prediction_header

    names = data.class_names
    pred = np.argmax(proba, axis=1)
    header = prediction_header(names)
    table = []
    for j, position in enumerate(rows):
        true = int(data.labels[position])
        table.append(
            [int(data.row_of[position]), int(data.cache_of[position]), data.paths[position], true, names[true],
             int(pred[j]), names[int(pred[j])], f"{proba[j, pred[j]]:.8g}"]
            + [f"{p:.8g}" for p in proba[j]]
        )
    return header, table


# --------------------------------------------------------------------------- training one classifier


@dataclass
class _Outcome:
    model: Classifier
    rows: np.ndarray  # positions predicted (test rows, or every row out of fold)
    proba: np.ndarray
    n_train: int
    fit_seconds: float
    predict_seconds: float
    extra: dict = field(default_factory=dict)


class _Inputs:
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
                reread_images(self.data, missing, kind[1], self.progress) if kind != "features" else self.data.features(missing)
            )
            offset = 0 if array is None else len(array)
            array = fresh if array is None else np.concatenate([array, fresh])
            slots[missing] = offset + np.arange(len(missing))
            self._stores[kind] = (slots, array)
        return array[slots[rows]]


def _train_one(
    name: str, params: dict, grid: dict | None, *, data: TrainingData, split: Split, inputs: _Inputs, seed: int, cv: int,
    n_jobs: int,
) -> _Outcome:
    K = len(data.class_names)
    labels = data.labels

    def fresh() -> Classifier:
        return make_classifier(name, params, seed=seed, n_jobs=n_jobs)

    if split.method == "cv":
        oof = np.zeros((len(labels), K))
        scores, fold_seconds, predict_seconds = [], [], 0.0
        for train, test in split.folds:
            model = fresh()
            start = time.perf_counter()
            _fit_model(model, data, inputs, train, np.empty(0, np.int64), seed=seed)
            fold_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            oof[test] = _predict(model, data, inputs, test)
            predict_seconds += time.perf_counter() - start
            scores.append(float(np.mean(np.argmax(oof[test], axis=1) == labels[test])))
        model = fresh()
        start = time.perf_counter()
        _fit_model(model, data, inputs, split.train, np.empty(0, np.int64), seed=seed)
        fit_seconds = time.perf_counter() - start
        extra = {
            "cv_scores": scores,
            "cv_accuracy_mean": float(np.mean(scores)),
            "cv_accuracy_std": float(np.std(scores)),
            "cv_fold_fit_seconds": fold_seconds,
        }
        return _Outcome(model, np.arange(len(labels)), oof, len(labels), fit_seconds, predict_seconds, extra)

    train, val = split.train, split.val
    model = fresh()
    if not model.uses_validation and len(val):
        train, val = np.sort(np.concatenate([train, val])), np.empty(0, np.int64)
    extra: dict = {}
    if not model.streams:  # read the inputs first, so fit_seconds is training time only (streaming heads read as they go)
        start = time.perf_counter()
        for rows in (train, val, split.test):
            if len(rows):
                inputs.get(model, rows)
        extra["data_seconds"] = round(time.perf_counter() - start, 4)
    start = time.perf_counter()
    if grid:
        model, extra = _grid_search(model, grid, data, inputs, train, cv=cv or 3, n_jobs=n_jobs)
    else:
        monitor = val
        if model.uses_validation and not len(val):
            if int(model.params.get("early_stopping", 0)) > 0:  # declared default included; 0 for heads without it
                train, monitor = stratified_rows(labels, train, 0.1, seed)
                extra["validation"] = "10% of the training rows (early stopping)"
            else:
                monitor = split.test
                extra["validation"] = "the test rows, for the curves only (no early stopping, weights unaffected)"
        elif len(val):
            extra["validation"] = "the source's val rows"
        _fit_model(model, data, inputs, train, monitor, seed=seed)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    proba = _predict(model, data, inputs, split.test)
    predict_seconds = time.perf_counter() - start
    return _Outcome(model, split.test, proba, len(train), fit_seconds, predict_seconds, extra)


def _fit_model(model: Classifier, data: TrainingData, inputs: _Inputs, train: np.ndarray, val: np.ndarray, *, seed: int) -> None:
    K = len(data.class_names)
    X_val = inputs.get(model, val) if len(val) else None
    y_val = data.labels[val] if len(val) else None
    if model.streams:  # out of core: the training rows come from HDF5, one block in memory at a time
        model.fit_stream(
            data.chunks(train, seed=seed, block_rows=model.stream_block_rows or BLOCK_ROWS), y=data.labels[train],
            n_classes=K, X_val=X_val, y_val=y_val, input_shape=data.caches[0].features_for(data.layer).shape[1:],
        )
        return
    views, view_mask = data.views(train) if _takes_views(model, data) else (None, None)
    model.fit(inputs.get(model, train), data.labels[train], X_val, y_val, n_classes=K, views=views, view_mask=view_mask)


def _takes_views(model: Classifier, data: TrainingData) -> bool:
    """Augmented views feed every head that trains on cached vectors in memory (not pixels, not streaming heads)."""
    return data.use_views and model.input_kind == "features" and not model.streams


def _predict(model: Classifier, data: TrainingData, inputs: _Inputs, rows: np.ndarray) -> np.ndarray:
    if model.streams:
        parts = [model.predict_proba(data.features(rows[i : i + BLOCK_ROWS])) for i in range(0, len(rows), BLOCK_ROWS)]
        return np.concatenate(parts) if parts else np.zeros((0, len(data.class_names)))
    return model.predict_proba(inputs.get(model, rows))


def _grid_search(model: Classifier, grid: dict, data: TrainingData, inputs: _Inputs, train: np.ndarray, *, cv: int, n_jobs: int):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    labels = data.labels[train]
    smallest = int(np.bincount(labels)[np.bincount(labels) > 0].min())
    if smallest < cv:
        raise TransferCacheError(
            f"--grid searches with {cv}-fold cross-validation, but the smallest class has {smallest} training rows; "
            f"pass --cv {max(2, smallest)}" if smallest >= 2 else "--grid needs at least 2 training rows per class"
        )
    search = GridSearchCV(
        model, grid, cv=StratifiedKFold(cv, shuffle=True, random_state=model.seed), scoring="accuracy",
        n_jobs=1 if model.is_keras else n_jobs, refit=True, error_score="raise",
    )
    views, view_mask = data.views(train) if _takes_views(model, data) else (None, None)
    fit_params = {"n_classes": len(data.class_names)}
    if views is not None:  # aligned with the rows, so each fold keeps an image's views on its own side
        fit_params.update(views=views, view_mask=view_mask)
    search.fit(inputs.get(model, train), labels, **fit_params)
    results = [
        {"params": jsonable(p), "mean_accuracy": float(m), "std_accuracy": float(s)}
        for p, m, s in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"], search.cv_results_["std_test_score"])
    ]
    return search.best_estimator_, {"grid": jsonable(grid), "grid_best_params": jsonable(search.best_params_),
                                    "grid_cv": cv, "grid_results": results}


def _record_run(
    *, runs_dir: Path, name: str, outcome: _Outcome, data: TrainingData, split: Split, test_size: float, seed: int, cv: int,
) -> RunResult:
    now = _dt.datetime.now(_dt.timezone.utc)
    run_id = new_run_id(name, now)
    labels = data.labels[outcome.rows]
    metrics = compute_metrics(labels, np.argmax(outcome.proba, axis=1), data.class_names)
    metrics.update(
        n_train=int(outcome.n_train), n_test=int(len(outcome.rows)), fit_seconds=round(outcome.fit_seconds, 4),
        predict_seconds=round(outcome.predict_seconds, 4),
    )
    for key in ("cv_scores", "cv_accuracy_mean", "cv_accuracy_std"):
        if key in outcome.extra:
            metrics[key] = outcome.extra[key]
    config = {
        "run_id": run_id,
        "classifier": name,
        "params": outcome.model.params,
        "caches": [
            {"path": str(cache.path.resolve()), "fingerprint": cache.fingerprint, "rows": len(cache), "role": role}
            for cache, role in zip(data.caches, data.roles)
        ],
        "layer": data.layer,
        "split": {"method": split.method, "test_size": test_size if split.method in ("stratified", "unstratified", "keras") else None, "seed": seed,
                  "cv": cv},
        "seed": seed,
        "created": now.isoformat(timespec="seconds"),
        "versions": library_versions(),
        "backbone": data.feature_config.backbone,
        "class_names": data.class_names,
        "fingerprint": data.caches[0].fingerprint,
        "source": data.info.source,
        "feature_config": {key: value for key, value in data.config.items()},
        "notes": list(data.notes) + list(outcome.extra.get("notes", [])),
    }
    config.update({key: value for key, value in outcome.extra.items() if key not in metrics and key != "notes"})
    final = write_run(
        runs_dir, run_id, config=config, metrics=metrics,
        predictions=_prediction_rows(data, outcome.rows, outcome.proba), history=outcome.model.history,
        save_model=outcome.model.save,
    )
    return RunResult(run_id, final, name, outcome.model.params, metrics, outcome.fit_seconds)


# --------------------------------------------------------------------------- the API


def _names(classifier) -> list[str]:
    items = classifier.split(",") if isinstance(classifier, str) else list(classifier)
    names = [item.strip() for item in items if item and item.strip()]
    if not names:
        raise TransferCacheError(f"no classifier given; choose from {', '.join(CLASSIFIERS)}")
    for name in names:
        if name not in CLASSIFIERS:
            raise TransferCacheError(f"unknown classifier '{name}'; choose from {', '.join(CLASSIFIERS)}")
    if len(set(names)) != len(names):
        raise TransferCacheError(f"classifier listed twice in {','.join(names)}; name each once")
    return names


def fit(
    caches,
    *,
    classifier: str | Sequence[str] = "logreg",
    params: dict | Sequence[str] | None = None,
    layer: str | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    cv: int = 0,
    split: str = "auto",
    test_cache: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike = "runs",
    grid: dict | Sequence[str] | None = None,
    n_jobs: int = 1,
    report: bool = False,
    views: str = "auto",
    progress: bool = True,
) -> list[RunResult]:
    """Train each classifier on the cached vectors and write one run folder per classifier under ``runs_dir``.

    ``params``: ``["C=0.5", "knn.n_neighbors=3"]`` strings or a dict ({key: value}, or {classifier: {key: value}}).
    ``grid``: ``["C=0.1,1,10"]`` (one classifier only). ``views``: "auto" trains on the augmented views of a cache
    made with ``extract --augment`` (training rows only; test rows are always the clean images), "none" ignores them.
    Returns the runs in the order fitted.
    """
    names = _names(classifier)
    if isinstance(params, dict) and params and all(key in names and isinstance(value, dict) for key, value in params.items()):
        parsed = {name: parse_params(name, params.get(name, {}))[name] for name in names}
    else:
        parsed = parse_params(names, params)
    grids: dict[str, dict] = {}
    if grid:
        if len(names) != 1:
            raise TransferCacheError(f"--grid searches one classifier; got {len(names)} ({', '.join(names)})")
        grids[names[0]] = parse_grid(names[0], grid)
    for name in names:  # reject bad values before any work (construction validates every parameter)
        make_classifier(name, parsed[name], seed=seed, n_jobs=n_jobs)
    if views not in VIEWS:
        raise TransferCacheError(f"views must be one of {', '.join(repr(v) for v in VIEWS)}; got {views!r}")
    if split not in SPLITS:
        raise TransferCacheError(f"split must be one of {', '.join(repr(s) for s in SPLITS)}; got {split!r}")  # before any work
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0.0 < float(test_size) < 1.0:
        raise TransferCacheError(f"test size must be a fraction between 0 and 1, e.g. 0.2; got {test_size!r}")
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 0 or cv == 1:
        raise TransferCacheError(f"cv must be 0 (no cross-validation) or a number of folds >= 2; got {cv!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TransferCacheError(f"seed must be an integer; got {seed!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise TransferCacheError(f"n_jobs must be a positive number of workers or -1 (all cores); got {n_jobs!r}")

    cache_paths = [str(Path(c).resolve()) for c in ([caches] if isinstance(caches, (str, os.PathLike)) else caches)]
    runs_dir = Path(runs_dir)
    kept_before = set(runs_dir.glob("index.csv.old-*"))
    data = load_training_data(cache_paths, test_cache, layer)
    try:
        chosen = choose_split(data, split=split, test_size=float(test_size), seed=seed, cv=cv, grid=bool(grids))
        counts = {cache.n_views for cache in data.caches}
        if views == "auto" and len(counts) == 1 and counts != {0}:
            data.use_views = True
            data.notes.append(
                f"training on {counts.pop()} augmented views per training image (test rows are the clean images; "
                "--views none ignores them)"
            )
        for note in data.notes:
            _note(note, progress)
        if any(CLASSIFIERS[name].input_kind == "pixels" for name in names):
            _note("classifier 'pixels' is the raw-pixel baseline: it re-reads the images through the cache's source", progress)
        inputs = _Inputs(data, progress)
        results: list[RunResult] = []
        from sklearn.exceptions import ConvergenceWarning
        from tqdm import tqdm

        bar = tqdm(names, desc="fitting", unit="run", disable=not progress)
        for name in bar:
            bar.set_postfix_str(name)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                outcome = _train_one(
                    name, parsed[name], grids.get(name), data=data, split=chosen, inputs=inputs, seed=seed, cv=cv,
                    n_jobs=n_jobs,
                )
            if _takes_views(make_classifier(name, parsed[name], seed=seed), data):
                outcome.extra["augmented_views"] = data.caches[0].n_views
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                message = f"{name} did not converge within its iteration limit; consider raising max_iter (or epochs)"
                outcome.extra.setdefault("notes", []).append(message)
                _note(message, progress)
            results.append(
                _record_run(
                    runs_dir=runs_dir, name=name, outcome=outcome, data=data, split=chosen, test_size=float(test_size),
                    seed=seed, cv=cv,
                )
            )
        bar.close()
    finally:
        data.close()
    _say_index_repaired(runs_dir, kept_before)
    if report:
        _reports(results, progress)
    return results


def _say_index_repaired(runs_dir: Path, kept_before: set) -> None:
    """Listing a run repairs a damaged runs index (kept aside as index.csv.old-<time>, written anew from the run
    folders): one line says so, even with --quiet, rather than a file appearing unexplained."""
    kept = sorted(set(runs_dir.glob("index.csv.old-*")) - kept_before)
    if kept:
        print(f"warning: the runs index {runs_dir / 'index.csv'} was damaged; it is kept as {kept[-1].name} and was "
              "written anew from the run folders", file=sys.stderr)


def _note(message: str, progress: bool) -> None:
    if progress:
        print(f"note: {message}", file=sys.stderr)


def _reports(results: list[RunResult], progress: bool) -> None:
    """Run the report command on each new run, as its own process: fit never imports the report stage."""
    import subprocess

    for result in results:
        done = subprocess.run(
            [sys.executable, "-m", "transfer_cache.report", str(result.run_dir), "--quiet"],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise TransferCacheError(
                f"run {result.run_dir} is written, but its report failed: {reason}; run python -m transfer_cache.report "
                f"{result.run_dir} to see why"
            )
        result.report = result.run_dir / "report.html"


def format_leaderboard(results: Sequence[RunResult]) -> str:
    """A plain-text table of runs sorted by accuracy (best first)."""
    ordered = sorted(results, key=lambda r: r.accuracy, reverse=True)
    header = f"{'rank':>4}  {'classifier':<14} {'accuracy':>8} {'bal.acc':>8} {'macroF1':>8} {'fit s':>8}  run"
    lines = [header, "-" * len(header)]
    for rank, r in enumerate(ordered, 1):
        m = r.metrics
        score = f"{m['accuracy']:.4f}"
        lines.append(
            f"{rank:>4}  {r.classifier:<14} {score:>8} {m['balanced_accuracy']:>8.4f} {m['macro_f1']:>8.4f} "
            f"{r.fit_seconds:>8.2f}  {r.run_dir}"
        )
        if "cv_scores" in m:
            lines[-1] += f"  (cv {m['cv_accuracy_mean']:.4f} ± {m['cv_accuracy_std']:.4f} over {len(m['cv_scores'])} folds)"
    return "\n".join(lines)


def format_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """The confusion matrix as seed 003 prints it: one bracketed row per true class, then its index and name."""
    matrix = np.asarray(matrix, dtype=np.int64)
    width = max(3, len(str(int(matrix.max()))) if matrix.size else 1)
    lines = ["Confusion Matrix:"]
    for k, (row, name) in enumerate(zip(matrix, class_names)):
        lines.append("[" + " ".join(f"{int(v):>{width}}" for v in row) + f"] ({k}) {name}")
    lines.append(" " + " ".join(f"({k})".rjust(width) for k in range(len(class_names))))
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.fit caches/digits-*.h5 --classifier logreg,knn,dense
  python -m transfer_cache.fit CACHE --classifier dense --param hidden=1024 --param epochs=10 --param learning_rate=1e-4
  python -m transfer_cache.fit CACHE --classifier knn --grid n_neighbors=1,3,5,9 --cv 5 --n-jobs 2
  python -m transfer_cache.fit CACHE --classifier logreg --cv 5
  python -m transfer_cache.fit TRAIN_CACHE --test-cache TEST_CACHE --classifier svm --report
  python -m transfer_cache.fit CACHE --classifier dense --split keras --validation-split 0.2 --seed 123
  python -m transfer_cache.fit CACHE --classifier logreg --split unstratified --test-size 0.1 --seed 42 --print-confusion

{classifiers}
--param key=value goes to every listed classifier that accepts it; name.key=value targets one (knn.n_neighbors=3).
Each run is written to RUNS_DIR/<run_id>/ and listed in RUNS_DIR/index.csv.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.fit",
        "Train classifiers on cached transfer values and write one run folder per classifier, with a leaderboard.",
        EPILOG.format(classifiers=classifier_help()),
    )
    parser.add_argument("caches", nargs="+", metavar="CACHE", help="cache files (same fingerprint) made by transfer_cache.extract")
    parser.add_argument("--classifier", default="logreg", help="NAME[,NAME...] (default logreg)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a hyper-parameter (repeatable)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="grid-search candidates (repeatable)")
    parser.add_argument("--runs-dir", default="runs", help="where run folders go (default ./runs)")
    parser.add_argument(
        "--test-size", "--validation-split", dest="test_size", type=float, default=0.2,
        help="held-out fraction: the test rows of --split stratified/unstratified, the validation files of --split keras (default 0.2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of every classifier (default 0)")
    parser.add_argument("--cv", type=int, default=0, help="k-fold cross-validation (or the folds of --grid)")
    parser.add_argument(
        "--split", default="auto",
        help=f"{', '.join(split_names())} (keras: image_dataset_from_directory's files; default auto)",
    )
    parser.add_argument("--test-cache", default=None, help="a cache of test images (same fingerprint)")
    parser.add_argument("--layer", default=None, help="which cached layer to use when the cache holds several")
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel workers for the grid search, knn and forests")
    parser.add_argument("--report", action="store_true", help="write an HTML report for each run")
    parser.add_argument("--views", default="auto", choices=VIEWS, help="auto: train on a cache's augmented views (extract --augment); none: ignore them")
    parser.add_argument("--print-confusion", action="store_true", help="print each run's confusion matrix with class names")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    return parser


def _main(args) -> int:
    begin = time.perf_counter()
    _cli.check_folder(args.runs_dir, "runs folder", "--runs-dir")
    results = fit(
        args.caches, classifier=args.classifier, params=args.param, layer=args.layer, test_size=args.test_size,
        seed=args.seed, cv=args.cv, split=args.split, test_cache=args.test_cache, runs_dir=args.runs_dir,
        grid=args.grid or None, n_jobs=args.n_jobs, report=args.report, views=args.views, progress=not args.quiet,
    )
    print(format_leaderboard(results))
    if args.print_confusion:
        for result in results:
            print(f"{result.classifier} ({result.run_id}):")
            print(format_confusion(result.metrics["confusion_matrix"], result.metrics["class_names"]))
    for result in results:
        if result.report is not None:
            print(f"report: {result.report}")
    best = max(results, key=lambda r: r.accuracy)
    m = best.metrics
    print(
        f"{len(results)} run{'s' if len(results) != 1 else ''} in {time.perf_counter() - begin:.1f} s "
        f"({m['n_train']} train / {m['n_test']} test rows); best {best.classifier} accuracy {m['accuracy']:.4f} "
        f"-> {best.run_dir}"
    )
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
