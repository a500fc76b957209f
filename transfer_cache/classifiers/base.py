"""The interface every head implements, and the helpers the heads share."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from .._errors import TransferCacheError
from ._params import Param, coerce

ABSENT_LOGIT = -1e9  # logit of a class that had no training rows: softmax gives it 0


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def flat(X) -> np.ndarray:
    X = np.asarray(X)
    return X.reshape(X.shape[0], -1).astype(np.float32, copy=False)


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Each row divided by its length (zero rows stay zero): transfer vectors differ in scale more than in direction."""
    X = flat(X)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, np.finfo(np.float32).tiny)


def scatter(proba: np.ndarray, present: np.ndarray, n_classes: int) -> np.ndarray:
    """Put the columns of an estimator trained on the ``present`` labels into ``n_classes`` columns."""
    full = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    full[:, np.asarray(present, dtype=np.int64)] = proba
    return full


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """'balanced' weights n / (k * count) for the present classes; 1.0 for absent ones (Keras wants every index)."""
    present, counts = np.unique(y, return_counts=True)
    weights = {int(c): 1.0 for c in range(n_classes)}
    for label, count in zip(present, counts):
        weights[int(label)] = float(len(y) / (len(present) * count))
    return weights


def read_meta(folder: Path) -> dict:
    """A saved head's classifier.json (which head, its parameters, its class count)."""
    meta_path = Path(folder) / "classifier.json"
    if not meta_path.exists():
        raise TransferCacheError(f"{folder} holds no saved classifier (no classifier.json); give a run's model/ folder")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def with_views(X: np.ndarray, y: np.ndarray, views: np.ndarray, view_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every augmented view as one more training row, labelled as its image."""
    chosen = views[view_mask]
    extra = chosen.reshape((-1,) + X.shape[1:])
    return np.concatenate([X, extra]), np.concatenate([y, np.repeat(y[view_mask], chosen.shape[1])])


class Classifier(BaseEstimator, ClassifierMixin):
    """Base class: a named head with declared hyper-parameters. Subclasses implement _fit, _proba, _save, _load."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # a few words for the CLI's list of heads, when the name alone does not say it
    spec: ClassVar[dict[str, Param]] = {}
    # capabilities: what fit and export ask instead of the head's name
    input_kind: ClassVar[str] = "features"  # "pixels": X is a uint8 image batch (the head takes images, not vectors)
    is_keras: ClassVar[bool] = False  # a Keras model: trained one process at a time, curves in history
    is_linear: ClassVar[bool] = False  # probabilities are softmax(x @ W + b): exports as one Dense layer
    uses_validation: ClassVar[bool] = False  # trains with X_val/y_val (Keras heads)
    exports_as_keras: ClassVar[bool] = False  # keras_head() gives the head as a Keras model: one .keras export

    def __init__(self, *, seed: int = 0, n_jobs: int = 1, **params):
        # scikit-learn's convention: the constructor only stores its arguments; fit validates them
        self.seed = seed
        self.n_jobs = n_jobs
        self._given = dict(params)
        self.history: dict[str, list[float]] | None = None

    # ---- scikit-learn estimator protocol (so GridSearchCV and clone work)
    def get_params(self, deep: bool = True) -> dict:
        """Every parameter: the declared defaults, overridden by the values given (as given; ``params`` types them)."""
        defaults = {key: spec.default for key, spec in self.spec.items()}
        return {"seed": self.seed, "n_jobs": self.n_jobs, **defaults, **self._given}

    def set_params(self, **params) -> "Classifier":
        for reserved in ("seed", "n_jobs"):
            if reserved in params:
                setattr(self, reserved, params.pop(reserved))
        self._given.update(params)
        return self

    @classmethod
    def check_params(cls, params: dict) -> dict:
        """Every declared hyper-parameter, typed (defaults for those not given); unknown names are refused."""
        for key in params:
            if key not in cls.spec:
                raise TransferCacheError(f"unknown parameter '{key}' for classifier '{cls.name}'; "
                                         f"it accepts {', '.join(cls.spec)}")
        checked = {key: spec.default for key, spec in cls.spec.items()}
        checked.update({key: coerce(cls.name, key, cls.spec[key], value) for key, value in params.items()})
        return checked

    @property
    def _params(self) -> dict:
        return self.check_params(self._given)

    @property
    def sample_rows(self) -> int | None:
        """The most training rows the head holds: above, fit trains it on a stratified sample (its ``sample_rows``
        parameter, for a head that declares one; None or 0: all, or refused when they do not fit; see fit_memory)."""
        return self._params.get("sample_rows") or None

    @property
    def params(self) -> dict:
        """The effective hyper-parameters, JSON-friendly (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self._params.items()}

    @classmethod
    def vector_steps(cls) -> str:
        """What the head does to the vectors before its model, in words, from its defaults (``fit --help``)."""
        if cls.input_kind != "features":
            return ""
        defaults = {key: spec.default for key, spec in cls.spec.items()}
        steps = [words for key, words in (("unit_length", "unit length"), ("standardize", "standardised"))
                 if defaults.get(key)]
        return ", then ".join(steps) if steps else "raw vectors"

    @property
    def streams(self) -> bool:
        """Whether fit trains this head from HDF5 blocks (``fit_stream``) rather than from one in-memory array."""
        return False

    @property
    def stream_block_rows(self) -> int | None:
        """Rows per block when streaming (None: fit's default)."""
        return None

    def fit_stream(self, chunks, *, n_classes: int, y=None, input_shape=None, X_val=None, y_val=None) -> "Classifier":
        """Train on passes of ``chunks()`` (a fresh iterator of (X, y) blocks per call) instead of one array."""
        raise TransferCacheError(f"classifier '{self.name}' does not train from a stream of blocks")

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{type(self).__name__}({inner})"

    # ---- the small interface
    def fit(
        self, X, y, X_val=None, y_val=None, *, n_classes: int | None = None, views=None, view_mask=None
    ) -> "Classifier":
        """Train on (X, y); ``n_classes`` fixes the number of probability columns (default: max label + 1).

        ``views`` (N, K, D), aligned with X, holds augmented views of the rows where ``view_mask`` is true (see
        ``extract --augment``): Keras heads see one randomly chosen view (or the clean row) of each image per
        epoch; the others train on every view as an extra row with its image's label. Both are aligned with X, so
        a cross-validation split keeps every view on the side of its image.
        """
        y = np.asarray(y, dtype=np.int64)
        if y.ndim != 1 or len(y) != len(X):
            raise TransferCacheError(f"X has {len(X)} rows but y has {len(y)} labels; give one label per row")
        if len(y) == 0:
            raise TransferCacheError(f"classifier '{self.name}' got no labelled training rows; label some images first")
        if y.min() < 0:
            raise TransferCacheError("training labels must be >= 0 (-1 marks unlabelled rows: leave them out)")
        self.n_classes_ = int(n_classes if n_classes is not None else y.max() + 1)
        if y.max() >= self.n_classes_:
            raise TransferCacheError(f"label {int(y.max())} is out of range for {self.n_classes_} classes")
        self.classes_ = np.arange(self.n_classes_)
        self.check_params(self._given)  # the hyper-parameters are validated here, before any work
        y_val = None if y_val is None else np.asarray(y_val, dtype=np.int64)
        if views is not None:
            views = np.asarray(views, dtype=np.float32)
            view_mask = np.ones(len(X), bool) if view_mask is None else np.asarray(view_mask, dtype=bool)
            if views.shape[0] != len(X) or view_mask.shape != (len(X),):
                raise TransferCacheError(f"views must be aligned with X ({len(X)} rows); "
                                         f"got {views.shape[0]} rows of views")
            if self.is_keras:
                self._train_views = (views, view_mask)
            else:
                X, y = with_views(np.asarray(X, dtype=np.float32), y, views, view_mask)
        try:
            self._fit(X, y, X_val, y_val)
        finally:
            self._train_views = None
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, n_classes) probabilities; column k is class index k."""
        if not hasattr(self, "n_classes_"):
            raise TransferCacheError(f"classifier '{self.name}' is not fitted yet; call fit first")
        return np.asarray(self._proba(X), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the fitted head into ``folder`` (classifier.json plus the model files)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"classifier": self.name, "params": self.params, "seed": self.seed, "n_classes": self.n_classes_}
        meta.update(self._save(folder))
        (folder / "classifier.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Classifier":
        """Read a head of this class written by ``save`` (``load_classifier`` reads any head); joblib heads are
        pickles."""
        folder = Path(folder)
        meta = read_meta(folder)
        if meta.get("classifier") != cls.name:
            raise TransferCacheError(f"{folder} holds a '{meta.get('classifier')}' head, not '{cls.name}'; "
                                     f"use load_classifier")
        params = {key: tuple(value) if isinstance(value, list) else value for key, value in meta["params"].items()}
        for key, spec in cls.spec.items():  # a head saved before a parameter existed keeps its behaviour of then
            if key not in params and spec.legacy is not None:
                params[key] = spec.legacy
        head = cls(seed=meta.get("seed", 0), **params)
        head.n_classes_ = int(meta["n_classes"])
        head.classes_ = np.arange(head.n_classes_)
        head._load(folder, meta)
        return head

    def keras_head(self, feature_shape: tuple[int, ...] | None = None):
        """The fitted head as a Keras model ending in class probabilities (heads with ``exports_as_keras``)."""
        raise TransferCacheError(f"classifier '{self.name}' does not export as a Keras model")

    # ---- for subclasses
    def _fit(self, X, y, X_val, y_val) -> None:
        raise NotImplementedError

    def _proba(self, X) -> np.ndarray:
        raise NotImplementedError

    def _save(self, folder: Path) -> dict:
        raise NotImplementedError

    def _load(self, folder: Path, meta: dict) -> None:
        raise NotImplementedError
