"""``python -m transfer_cache.fit`` and ``fit()``: train classifiers on cached transfer values, one run folder each.

The split is chosen once for all classifiers of a command, so their scores are comparable (``splits`` holds the
strategies). With ``--grid``, ``--cv K`` (default 3) sets the folds of the GridSearchCV on the training rows instead,
and the test split is kept. The options are declared once in ``fit_options``; each head is trained by ``training``.

The rows come from ``training_data`` (caches of equal fingerprint only; unlabelled rows are left out).
Each run folder is written through ``runs`` (atomically, then listed in ``runs/index.csv``).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _cli, _options
from ._checks import check_folder
from ._errors import TransferCacheError
from ._versions import library_versions
from .classifiers import CLASSIFIERS, classifier_help
from .fit_options import TITLES, FitCommand, FitOptions, Heads, check
from .runs import INDEX_COLUMNS, append_index, index_path, kept_indexes, new_run_id, prediction_header, write_run  # noqa: F401
from .splits import Split, choose_split, keras_file_order, keras_validation_split
from .training import Inputs, Outcome, takes_views, train_one
from .training_data import TrainingData, load_training_data

__all__ = [
    "RunResult", "fit", "format_confusion", "format_leaderboard", "keras_file_order", "keras_validation_split", "main",
    "INDEX_COLUMNS",
]


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


def _record_run(name: str, outcome: Outcome, *, data: TrainingData, split: Split, options: FitOptions) -> RunResult:
    """Write the run folder of one trained head (config, metrics, predictions, history, model) and list it."""
    test_size, seed, cv = float(options.test_size), options.seed, options.cv
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
        "split": {"method": split.method,
                  "test_size": test_size if split.method in ("stratified", "unstratified", "keras") else None,
                  "seed": seed, "cv": cv},
        "seed": seed,
        "created": now.isoformat(timespec="seconds"),
        "versions": library_versions(),
        "backbone": data.feature_config.backbone,
        "class_names": data.class_names,
        "fingerprint": data.caches[0].fingerprint,
        "source": data.info.source,
        "feature_config": dict(data.config),
        "notes": list(data.notes) + list(outcome.extra.get("notes", [])),
    }
    config.update({key: value for key, value in outcome.extra.items() if key not in metrics and key != "notes"})
    final = write_run(
        Path(options.runs_dir), run_id, config=config, metrics=metrics,
        predictions=_prediction_rows(data, outcome.rows, outcome.proba), history=outcome.model.history,
        save_model=outcome.model.save,
    )
    return RunResult(run_id, final, name, outcome.model.params, metrics, outcome.fit_seconds)


# --------------------------------------------------------------------------- the API


@_options.takes(FitOptions)
def fit(caches, **options) -> list[RunResult]:
    """Train each classifier on the cached vectors and write one run folder per classifier under ``runs_dir``.

    ``params``: ``["C=0.5", "knn.n_neighbors=3"]`` strings or a dict ({key: value}, or {classifier: {key: value}}).
    ``grid``: ``["C=0.1,1,10"]`` (one classifier only). ``views``: "auto" trains on the augmented views of a cache
    made with ``extract --augment`` (training rows only; test rows are always the clean images), "none" ignores them.
    The keywords are ``FitOptions``' fields. Returns the runs in the order fitted.
    """
    return fit_with(caches, _options.build(FitOptions, options, function="fit"))


def fit_with(caches, options: FitOptions) -> list[RunResult]:
    """``fit()`` with its options typed (the command comes in here too)."""
    heads = check(options)  # before any work
    progress = options.progress
    cache_paths = [str(Path(c).resolve()) for c in ([caches] if isinstance(caches, (str, os.PathLike)) else caches)]
    runs_dir = Path(options.runs_dir)
    kept_before = kept_indexes(runs_dir)
    data = load_training_data(cache_paths, options.test_cache, options.layer)
    try:
        chosen = choose_split(data, split=options.split, test_size=float(options.test_size), seed=options.seed,
                              cv=options.cv, grid=bool(heads.grids))
        counts = {cache.n_views for cache in data.caches}
        if options.views == "auto" and len(counts) == 1 and counts != {0}:
            data.use_views = True
            data.notes.append(
                f"training on {counts.pop()} augmented views per training image (test rows are the clean images; "
                "--views none ignores them)"
            )
        for note in data.notes:
            _note(note, progress)
        if any(CLASSIFIERS[name].input_kind == "pixels" for name in heads.names):
            _note("classifier 'pixels' is the raw-pixel baseline: it re-reads the images through the cache's source",
                  progress)
        results = _fit_each(heads, data=data, split=chosen, options=options)
    finally:
        data.close()
    _say_index_repaired(runs_dir, kept_before)
    if options.report:
        _reports(results, progress)
    return results


def _fit_each(heads: Heads, *, data: TrainingData, split: Split, options: FitOptions) -> list[RunResult]:
    """Train and record each head in turn, with a progress bar; a head that did not converge gets a note."""
    from sklearn.exceptions import ConvergenceWarning
    from tqdm import tqdm

    inputs = Inputs(data, options.progress)
    results: list[RunResult] = []
    bar = tqdm(heads.names, desc="fitting", unit="run", disable=not options.progress)
    for name in bar:
        bar.set_postfix_str(name)
        params = heads.params[name]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            outcome = train_one(name, params, heads.grids.get(name), data=data, split=split, inputs=inputs,
                                options=options)
        for message in outcome.extra.get("notes", []):  # e.g. trained on a sample
            _note(message, options.progress)
        if takes_views(outcome.model, data):
            outcome.extra["augmented_views"] = data.caches[0].n_views
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            message = f"{name} did not converge within its iteration limit; consider raising max_iter (or epochs)"
            outcome.extra.setdefault("notes", []).append(message)
            _note(message, options.progress)
        results.append(_record_run(name, outcome, data=data, split=split, options=options))
    bar.close()
    return results


def _say_index_repaired(runs_dir: Path, kept_before: set) -> None:
    """Listing a run repairs a damaged runs index (kept aside, written anew from the run folders): one line says so,
    even with --quiet, rather than a file appearing unexplained."""
    kept = sorted(kept_indexes(runs_dir) - kept_before)
    if kept:
        print(f"warning: the runs index {index_path(runs_dir)} was damaged; it is kept as {kept[-1].name} and was "
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
                f"run {result.run_dir} is written, but its report failed: {reason}; run python -m "
                f"transfer_cache.report {result.run_dir} to see why"
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
            spread = f"{m['cv_accuracy_mean']:.4f} ± {m['cv_accuracy_std']:.4f}"
            lines[-1] += f"  (cv {spread} over {len(m['cv_scores'])} folds)"
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

EPILOG = ("""examples:
  python -m transfer_cache.fit caches/digits-*.h5 --classifier logreg,knn,dense
  python -m transfer_cache.fit CACHE --classifier dense --param hidden=1024 --param epochs=10 --param learning_rate=1e-4
  python -m transfer_cache.fit CACHE --classifier knn --grid n_neighbors=1,3,5,9 --cv 5 --n-jobs 2
  python -m transfer_cache.fit CACHE --classifier logreg --cv 5
  python -m transfer_cache.fit TRAIN_CACHE --test-cache TEST_CACHE --classifier svm --report
  python -m transfer_cache.fit CACHE --classifier dense --split keras --validation-split 0.2 --seed 123
  python -m transfer_cache.fit CACHE --classifier logreg --split unstratified --test-size 0.1 --seed 42 """
          """--print-confusion

{classifiers}
--param key=value goes to every listed classifier that accepts it; name.key=value targets one (knn.n_neighbors=3).
Each run is written to RUNS_DIR/<run_id>/ and listed in RUNS_DIR/index.csv.
""")


def build_parser(options_class=FitCommand):
    """The command's parser: the caches, then one flag per declared option (``FitCommand``), under group headings."""
    parser = _cli.make_parser(
        "python -m transfer_cache.fit",
        "Train classifiers on cached transfer values and write one run folder per classifier, with a leaderboard.",
        EPILOG.format(classifiers=classifier_help()),
    )
    parser.add_argument("caches", nargs="+", metavar="CACHE",
                        help="cache files (same fingerprint) made by transfer_cache.extract")
    _options.add_arguments(parser, options_class, TITLES)
    return parser


def _main(args) -> int:
    begin = time.perf_counter()
    check_folder(args.runs_dir, "runs folder", "--runs-dir")
    command = _options.from_args(FitCommand, args)
    results = fit_with(args.caches, command)
    print(format_leaderboard(results))
    if command.print_confusion:
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
