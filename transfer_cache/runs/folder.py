"""The run folder's layout, and reading it: the one place that spells its file names and its predictions columns.

``runs/<run_id>/`` holds ``config.json``, ``metrics.json``, ``predictions.csv``, ``history.json`` (Keras heads) and
``model/``. ``read_run`` gives a ``Run``: the files as plain Python, and typed attributes for what the config records.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .._checks import whole_number
from .._errors import TransferCacheError
from ..cache import Cache, open_cache

# the way out a run folder or index that cannot be written offers
WHERE = "give --runs-dir a folder on another disk"

# the files of a run folder and of a runs folder: no other module spells these names
CONFIG, METRICS, PREDICTIONS, HISTORY, MODEL = "config.json", "metrics.json", "predictions.csv", "history.json", "model"
INDEX = "index.csv"
KEPT_INDEX = INDEX + ".old-"  # the prefix of an index copied aside before it was written anew

# predictions.csv: these columns, then one probability column per class
PREDICTION_COLUMNS = ("row", "cache", "path", "true_label", "true_name", "pred_label", "pred_name", "confidence")
PROBABILITY = "prob_"


def prediction_header(class_names: Sequence[str]) -> list[str]:
    """The header of predictions.csv for these classes (fit writes its rows in this order)."""
    return list(PREDICTION_COLUMNS) + [PROBABILITY + str(name) for name in class_names]


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a finished run folder (it has config.json and metrics.json)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / METRICS).is_file()


def has_model(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a run's config.json and model/ (a run folder given where an export is expected)."""
    path = Path(path)
    return (path / CONFIG).is_file() and (path / MODEL).is_dir()


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as exc:
        raise TransferCacheError(f"{path} is not valid JSON ({exc}); the run folder is damaged, fit again") from exc


_INT_COLUMNS = ("row", "cache", "true_label", "pred_label")


def read_predictions(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """predictions.csv as columns: int64 for row/cache/labels, float64 for confidence and prob_*, str objects
    otherwise."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    missing = [name for name in PREDICTION_COLUMNS if name not in fields]
    if missing:
        raise TransferCacheError(
            f"{path} lacks the columns {missing}; expected {', '.join(PREDICTION_COLUMNS)}, {PROBABILITY}<class> "
            "(written by transfer_cache.fit)"
        )
    columns: dict[str, np.ndarray] = {}
    for name in fields:
        values = [row[name] for row in rows]
        if name in _INT_COLUMNS:
            columns[name] = np.asarray([int(v) if v != "" else -1 for v in values], dtype=np.int64)
        elif name == "confidence" or name.startswith(PROBABILITY):
            columns[name] = np.asarray([float(v) if v != "" else math.nan for v in values], dtype=np.float64)
        else:
            columns[name] = np.asarray(values, dtype=object)
    return columns


@dataclass(frozen=True)
class RunConfig:
    """What a run's config.json records, typed; a field an older run lacks (or records as null) reads as its
    default."""

    run_id: str | None = None
    classifier: str | None = None
    backbone: str | None = None
    fingerprint: str | None = None
    params: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    layer: str | None = None
    caches: list = field(default_factory=list)  # one entry per cache read: path, rows, fingerprint, role
    created: str | None = None
    versions: dict = field(default_factory=dict)
    class_names: list = field(default_factory=list)
    source: str | None = None
    feature_config: dict = field(default_factory=dict)  # the cache's attributes, as fit recorded them

    @classmethod
    def of(cls, config: dict) -> "RunConfig":
        return cls(**{f.name: config[f.name] for f in fields(cls) if config.get(f.name) is not None})


@dataclass(frozen=True, eq=False)
class Run:
    """A run folder, read: its files as plain Python, and what its config records as typed attributes
    (``recorded``, a ``RunConfig``; its fields are also attributes of the run)."""

    run_dir: Path
    config: dict
    metrics: dict
    predictions: dict[str, np.ndarray] | None = None  # predictions.csv's columns
    history: dict | None = None  # Keras heads only

    @functools.cached_property
    def recorded(self) -> RunConfig:
        return RunConfig.of(self.config)

    def __getattr__(self, name: str):
        if name in _RECORDED:
            return getattr(self.recorded, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def run_id(self) -> str:
        return self.recorded.run_id or Path(self.run_dir).name

    @property
    def model_dir(self) -> Path:
        return Path(self.run_dir) / MODEL

    @property
    def n_predicted(self) -> int:
        return 0 if self.predictions is None else len(self.predictions["row"])

    def mistakes(self) -> np.ndarray:
        """Positions in ``predictions`` of the labelled rows predicted wrong (none without predictions.csv)."""
        if self.predictions is None:
            return np.zeros(0, dtype=np.int64)
        true, predicted = self.predictions["true_label"], self.predictions["pred_label"]
        return np.flatnonzero((true >= 0) & (true != predicted))

    def as_dict(self) -> dict:
        """What ``load_run`` returns: {"run_dir", "config", "metrics", "predictions", "history"}."""
        return {"run_dir": self.run_dir, "config": self.config, "metrics": self.metrics,
                "predictions": self.predictions, "history": self.history}


_RECORDED = {f.name for f in fields(RunConfig)}
_NOT_A_RUN = "pass a folder under runs/ written by python -m transfer_cache.fit"


def read_run(run_dir: str | os.PathLike, *, with_predictions: bool = True) -> Run:
    """Read a run folder; a missing folder or file is one line saying so. ``with_predictions=False`` leaves out
    predictions.csv and history.json (a page listing many runs needs only what their config records)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TransferCacheError(f"run folder {run_dir} does not exist; {_NOT_A_RUN}")
    for name in (CONFIG, METRICS):
        if not (run_dir / name).is_file():
            raise TransferCacheError(f"{run_dir} is not a run folder: {name} is missing; {_NOT_A_RUN}")
    config, metrics = read_json(run_dir / CONFIG), read_json(run_dir / METRICS)
    if not with_predictions:
        return Run(run_dir, config, metrics)
    predictions = read_predictions(run_dir / PREDICTIONS) if (run_dir / PREDICTIONS).is_file() else None
    history = read_json(run_dir / HISTORY) if (run_dir / HISTORY).is_file() else None
    return Run(run_dir, config, metrics, predictions, history)


def load_run(run_dir: str | os.PathLike) -> dict:
    """A run folder as plain Python: {"run_dir", "config", "metrics", "predictions" (columns or None), "history" (or
    None)}."""
    return read_run(run_dir).as_dict()


def _is_loaded(value) -> bool:
    return isinstance(value, dict) and "config" in value and "metrics" in value


def run_of(run) -> Run:
    """A Run from a Run, a loaded run (``load_run``'s dict) or a run folder's path."""
    if isinstance(run, Run):
        return run
    if _is_loaded(run):
        run_dir = None if run.get("run_dir") is None else Path(run["run_dir"])
        return Run(run_dir, run["config"], run["metrics"], run.get("predictions"), run.get("history"))
    return read_run(run)


def as_run(run) -> dict:
    """A loaded run as given, or ``load_run``'s dict of a Run or a run folder."""
    return run if _is_loaded(run) else run_of(run).as_dict()


def metrics_of(value) -> dict:
    """metrics.json's content, from a Run, a loaded run, the dict itself, a run folder or the file."""
    if isinstance(value, Run) or _is_loaded(value):
        return run_of(value).metrics
    if isinstance(value, dict):
        return value
    path = Path(value)
    data = read_json(path / METRICS if path.is_dir() else path) if path.exists() else None
    if data is None:
        raise TransferCacheError(f"{path} does not exist; pass metrics.json, its run folder, or the loaded dict")
    return data


def history_of(value):
    """history.json's content (Keras History.history), from a Run, a loaded run, the dict, a run folder or the file."""
    if isinstance(value, Run) or (isinstance(value, dict) and "history" in value and "config" in value):
        return value.history if isinstance(value, Run) else value["history"]
    if isinstance(value, dict):
        return value
    path = Path(value)
    path = path / HISTORY if path.is_dir() else path
    if not path.is_file():
        raise TransferCacheError(f"{path} does not exist: only the dense head writes history.json; pass a dense run")
    return read_json(path)


def misclassified(run, *, limit: int = 24) -> list[dict]:
    """The test predictions that were wrong, most confident first: dicts with row, cache, path, true_name,
    pred_name, confidence."""
    run = run_of(run)
    limit = whole_number(limit, "limit")
    predictions = run.predictions
    if predictions is None:
        raise TransferCacheError(f"run {run.run_dir} has no {PREDICTIONS}; fit again to get the misclassified images")
    wrong = run.mistakes()
    order = wrong[np.argsort(-predictions["confidence"][wrong], kind="stable")][:limit]
    keys = ("row", "cache", "path", "true_name", "pred_name", "confidence")
    return [{key: _plain(predictions[key][i]) for key in keys} for i in order]


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def run_cache_path(run, index: int = 0) -> Path:
    """The cache file a run was fitted on (``config["caches"][index]``), found as written, or relative to the run
    folder."""
    run = run_of(run)
    caches = run.caches
    if not 0 <= index < len(caches):
        raise TransferCacheError(f"run {run.run_dir} has {len(caches)} cache(s); got cache index {index}")
    written = Path(caches[index]["path"])
    folder = Path(run.run_dir)
    candidates = [written] if written.is_absolute() else [written, folder / written, folder.parent.parent / written]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise TransferCacheError(
        f"the cache of run {run.run_dir} is gone: {written} does not exist; extract it again with the same "
        "configuration (python -m transfer_cache.extract) or run the report from the folder the fit ran in"
    )


def open_run_cache(run, index: int = 0) -> Cache:
    """Open a run's cache, refusing a file whose fingerprint differs from the one the run was fitted on."""
    run = run_of(run)
    path = run_cache_path(run, index)
    cache = open_cache(path)
    expected = run.caches[index].get("fingerprint")
    if expected and cache.fingerprint != expected:
        cache.close()
        raise TransferCacheError(
            f"cache {path} has fingerprint {cache.fingerprint} but run {run.run_dir} was fitted on {expected}; "
            "the file was replaced by another feature configuration: extract the run's configuration again"
        )
    return cache


