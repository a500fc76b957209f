"""The heads trained on cached transfer values, behind one small interface.

Every classifier is created by name (``make_classifier("knn", {"n_neighbors": 3})``), fitted with
``fit(X, y, X_val=None, y_val=None, n_classes=None)``, and answers ``predict_proba(X)`` with one column per
class index ``0 .. n_classes-1`` (classes absent from the training rows get probability 0), ``predict(X)``,
``save(folder)`` and ``Classifier.load(folder)`` (or ``load_classifier(folder)``). ``params`` holds the
effective hyper-parameters. They are scikit-learn estimators too (``get_params``/``set_params``), so
``GridSearchCV`` can search them.

Hyper-parameters arrive as ``key=value`` strings from the command line: ``parse_params`` converts them to the
types each classifier declares and rejects names it does not accept.

Storage: Keras heads are saved as ``head.keras``. scikit-learn heads are saved with joblib as ``head.joblib``,
which is a **pickle**: loading one can run arbitrary code, so only load files you trust. This module keeps a
list of the sha256 digests of every joblib head written on this machine and prints a one-line warning when
loading one that is not on it. The linear heads (``logreg``, ``linear_svm``) also write ``head.npz``
(``coef_``, ``intercept_``, ``classes_``, the scaler and the folded weights) and are loaded from it alone, so
they never need unpickling.

``linear_svm`` gives probabilities as a temperature-scaled softmax of ``LinearSVC.decision_function`` (one
scalar temperature fitted by minimising the log-loss of 3-fold out-of-fold decision values on the training rows),
not ``CalibratedClassifierCV``: it keeps the head linear, so it exports exactly as a Dense layer with softmax.

``pixels`` is the raw-pixel baseline, not a head on transfer values: the "simple CNN" of seed 000 (three
Conv2D(2x2, relu) + MaxPool blocks with 32, 32, 64 filters -> Flatten -> Dense(1024, relu) -> Dropout(0.2) ->
softmax, RMSprop 1e-4) trained from scratch on the images themselves, resized to ``size`` (default 64). Its ``X``
is a uint8 batch of images (N, size, size, 3); ``transfer_cache.fit`` re-reads them through the cache's source.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ._hashing import file_sha256
from ._errors import TransferCacheError

__all__ = [
    "CLASSIFIERS",
    "Classifier",
    "available",
    "load_classifier",
    "make_classifier",
    "parse_grid",
    "parse_params",
]

_ABSENT_LOGIT = -1e9  # logit of a class that had no training rows: softmax gives it 0


# --------------------------------------------------------------------------- parameter specs


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default, its kind, and for string enums the accepted values.

    kinds: int, float, bool, str (with choices), ints (a list of ints; "1024,256", "none" = empty),
    int_or_none, float_or_choice (a float or one of choices).
    """

    default: Any
    kind: str
    choices: tuple = ()


_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "ints": "a comma-separated list of integers (or none)",
    "int_or_none": "an integer or none",
}


def _bad_value(classifier: str, name: str, spec: Param, value) -> TransferCacheError:
    if spec.kind == "str":
        expected = "one of " + ", ".join(f"'{c}'" for c in spec.choices)
    elif spec.kind == "float_or_choice":
        expected = "a number or one of " + ", ".join(f"'{c}'" for c in spec.choices)
    else:
        expected = _KIND_WORDS[spec.kind]
    return TransferCacheError(f"parameter '{name}' of classifier '{classifier}' must be {expected}; got {value!r}")


def _coerce(classifier: str, name: str, spec: Param, value):
    """Convert a command-line string (or check a Python value); a valid value is returned as the same object."""
    kind = spec.kind
    bad = _bad_value(classifier, name, spec, value)
    if kind == "int":
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if kind == "float":
        if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise bad from None
            if not math.isfinite(result):
                raise bad
            return result
        raise bad
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        raise bad
    if kind == "str":
        if isinstance(value, str) and value.strip().lower() in spec.choices:
            return value if value in spec.choices else value.strip().lower()
        raise bad
    if kind == "int_or_none":
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() in ("none", ""):
            return None
        return _coerce(classifier, name, Param(spec.default, "int"), value)
    if kind == "float_or_choice":
        if isinstance(value, str) and value.strip().lower() in spec.choices:
            return value if value in spec.choices else value.strip().lower()
        try:
            return _coerce(classifier, name, Param(spec.default, "float"), value)
        except TransferCacheError:
            raise bad from None
    if kind == "ints":
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return (int(value),) if value > 0 else ()
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("none", "", "0"):
                return ()
            try:
                items = tuple(int(part) for part in text.split(","))
            except ValueError:
                raise bad from None
            if any(item <= 0 for item in items):
                raise bad
            return items
        raise bad
    raise AssertionError(f"unknown parameter kind {kind}")


# --------------------------------------------------------------------------- pickle trust list


def _trust_file() -> Path:
    """Where the digests of joblib heads written on this machine are listed."""
    explicit = os.environ.get("TRANSFER_CACHE_TRUST_FILE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transfer_cache" / "trusted_pickles.txt"




def register_trusted_pickle(path: str | os.PathLike) -> None:
    """Record that this machine wrote ``path`` (a joblib pickle), so loading it later gives no warning."""
    trust = _trust_file()
    try:
        trust.parent.mkdir(parents=True, exist_ok=True)
        with open(trust, "a", encoding="utf-8") as handle:
            handle.write(file_sha256(Path(path)) + "\n")
    except OSError:  # an unwritable home only costs a warning on the next load
        pass


def is_trusted_pickle(path: str | os.PathLike) -> bool:
    try:
        known = set(_trust_file().read_text(encoding="utf-8").split())
    except OSError:
        return False
    return file_sha256(Path(path)) in known


def load_pickle(path: str | os.PathLike):
    """joblib.load with a warning when the file was not written on this machine (it is a pickle: it can run code)."""
    import joblib

    path = Path(path)
    if not path.exists():
        raise TransferCacheError(f"model file {path} does not exist; fit (or export) the model again")
    if not is_trusted_pickle(path):
        print(
            f"warning: {path} is a joblib pickle not written by a run on this machine; unpickling runs any code it "
            "contains, so only load files from people you trust",
            file=sys.stderr,
        )
    return joblib.load(path)


def dump_pickle(obj, path: str | os.PathLike) -> None:
    import joblib

    joblib.dump(obj, path)
    register_trusted_pickle(path)


# --------------------------------------------------------------------------- helpers


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _flat(X) -> np.ndarray:
    X = np.asarray(X)
    return X.reshape(X.shape[0], -1).astype(np.float32, copy=False)


def _scatter(proba: np.ndarray, present: np.ndarray, n_classes: int) -> np.ndarray:
    """Put the columns of an estimator trained on the ``present`` labels into ``n_classes`` columns."""
    full = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    full[:, np.asarray(present, dtype=np.int64)] = proba
    return full


def _class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """'balanced' weights n / (k * count) for the present classes; 1.0 for absent ones (Keras wants every index)."""
    present, counts = np.unique(y, return_counts=True)
    weights = {int(c): 1.0 for c in range(n_classes)}
    for label, count in zip(present, counts):
        weights[int(label)] = float(len(y) / (len(present) * count))
    return weights


# --------------------------------------------------------------------------- the interface


def _with_views(X: np.ndarray, y: np.ndarray, views: np.ndarray, view_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every augmented view as one more training row, labelled as its image."""
    chosen = views[view_mask]
    extra = chosen.reshape((-1,) + X.shape[1:])
    return np.concatenate([X, extra]), np.concatenate([y, np.repeat(y[view_mask], chosen.shape[1])])


class Classifier(BaseEstimator, ClassifierMixin):
    """Base class: a named head with declared hyper-parameters. Subclasses implement _fit, _proba, _save, _load."""

    name: ClassVar[str] = ""
    spec: ClassVar[dict[str, Param]] = {}
    input_kind: ClassVar[str] = "features"  # "pixels": X is a uint8 image batch
    is_keras: ClassVar[bool] = False
    is_linear: ClassVar[bool] = False
    uses_validation: ClassVar[bool] = False  # trains with X_val/y_val (Keras heads)

    def __init__(self, *, seed: int = 0, n_jobs: int = 1, **params):
        self.seed = seed
        self.n_jobs = n_jobs
        self._params = {}
        self._set(params, fill_defaults=True)
        self.history: dict[str, list[float]] | None = None

    # ---- scikit-learn estimator protocol (so GridSearchCV and clone work)
    def get_params(self, deep: bool = True) -> dict:
        return {"seed": self.seed, "n_jobs": self.n_jobs, **self._params}

    def set_params(self, **params) -> "Classifier":
        for reserved in ("seed", "n_jobs"):
            if reserved in params:
                setattr(self, reserved, params.pop(reserved))
        self._set(params, fill_defaults=False)
        return self

    def _set(self, params: dict, *, fill_defaults: bool) -> None:
        accepted = ", ".join(self.spec)
        for key in params:
            if key not in self.spec:
                raise TransferCacheError(f"unknown parameter '{key}' for classifier '{self.name}'; it accepts {accepted}")
        if fill_defaults:
            self._params = {key: spec.default for key, spec in self.spec.items()}
        for key, value in params.items():
            self._params[key] = _coerce(self.name, key, self.spec[key], value)

    @property
    def params(self) -> dict:
        """The effective hyper-parameters, JSON-friendly (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self._params.items()}

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
        if self.seed is not None:
            np.random.seed(int(self.seed) % (2**32))
        y_val = None if y_val is None else np.asarray(y_val, dtype=np.int64)
        if views is not None:
            views = np.asarray(views, dtype=np.float32)
            view_mask = np.ones(len(X), bool) if view_mask is None else np.asarray(view_mask, dtype=bool)
            if views.shape[0] != len(X) or view_mask.shape != (len(X),):
                raise TransferCacheError(f"views must be aligned with X ({len(X)} rows); got {views.shape[0]} rows of views")
            if self.is_keras:
                self._train_views = (views, view_mask)
            else:
                X, y = _with_views(np.asarray(X, dtype=np.float32), y, views, view_mask)
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
        """Read a head written by ``save``; joblib heads are pickles (see the module docstring)."""
        folder = Path(folder)
        meta_path = folder / "classifier.json"
        if not meta_path.exists():
            raise TransferCacheError(f"{folder} holds no saved classifier (no classifier.json); give a run's model/ folder")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        klass = CLASSIFIERS.get(meta.get("classifier"))
        if klass is None:
            raise TransferCacheError(f"{meta_path} names unknown classifier {meta.get('classifier')!r}")
        if cls is not Classifier and klass is not cls:
            raise TransferCacheError(f"{folder} holds a '{klass.name}' head, not '{cls.name}'; use load_classifier")
        params = {key: tuple(value) if isinstance(value, list) else value for key, value in meta["params"].items()}
        head = klass(seed=meta.get("seed", 0), **params)
        head.n_classes_ = int(meta["n_classes"])
        head.classes_ = np.arange(head.n_classes_)
        head._load(folder, meta)
        return head

    # ---- for subclasses
    def _fit(self, X, y, X_val, y_val) -> None:
        raise NotImplementedError

    def _proba(self, X) -> np.ndarray:
        raise NotImplementedError

    def _save(self, folder: Path) -> dict:
        raise NotImplementedError

    def _load(self, folder: Path, meta: dict) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- scikit-learn heads


class _SklearnClassifier(Classifier):
    """A scikit-learn estimator, optionally after a StandardScaler, saved with joblib (a pickle)."""

    def _estimator(self):
        raise NotImplementedError

    def _fit(self, X, y, X_val, y_val) -> None:
        from sklearn.preprocessing import StandardScaler

        X = _flat(X)
        self.scaler_ = StandardScaler().fit(X) if self._params.get("standardize") else None
        self.estimator_ = self._estimator()
        self.estimator_.fit(self._scaled(X), y)

    def _scaled(self, X) -> np.ndarray:
        X = _flat(X)
        return self.scaler_.transform(X) if self.scaler_ is not None else X

    def _proba(self, X) -> np.ndarray:
        proba = self.estimator_.predict_proba(self._scaled(X))
        return _scatter(proba, self.estimator_.classes_, self.n_classes_)

    def _save(self, folder: Path) -> dict:
        dump_pickle({"estimator": self.estimator_, "scaler": self.scaler_}, folder / "head.joblib")
        return {"files": ["head.joblib"], "pickle": True}

    def _load(self, folder: Path, meta: dict) -> None:
        payload = load_pickle(folder / "head.joblib")
        self.estimator_ = payload["estimator"]
        self.scaler_ = payload["scaler"]


class _LinearClassifier(_SklearnClassifier):
    """A linear head: probabilities are softmax(X @ W + b), with the scaler and temperature folded into W and b.

    That one formula is what the exported Dense layer computes, so export and fit agree exactly.
    """

    is_linear = True

    def _raw_logits_params(self) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (D, K') and intercepts (K') on the scaled inputs, for the estimator's present classes."""
        coef = np.asarray(self.estimator_.coef_, dtype=np.float64)
        intercept = np.asarray(self.estimator_.intercept_, dtype=np.float64).reshape(-1)
        if coef.shape[0] == 1 and len(self.estimator_.classes_) == 2:  # binary: logits [0, z]
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        return coef.T, intercept

    def _temperature(self, X_scaled, y) -> float:
        return 1.0

    def _fit(self, X, y, X_val, y_val) -> None:
        super()._fit(X, y, X_val, y_val)
        W, b = self._raw_logits_params()
        self.temperature_ = float(self._temperature(self._scaled(X), y))
        self._fold(W, b)

    def _fold(self, W: np.ndarray, b: np.ndarray) -> None:
        """Weights on raw features, all classes: ((x - mean) / scale) W / T + b / T."""
        if self.scaler_ is not None:
            scale = np.asarray(self.scaler_.scale_, dtype=np.float64)
            mean = np.asarray(self.scaler_.mean_, dtype=np.float64)
            W_raw = W / scale[:, None]
            b_raw = b - mean @ W_raw
        else:
            W_raw, b_raw = W, b
        present = np.asarray(self.estimator_.classes_, dtype=np.int64)
        self.weights_ = np.zeros((W.shape[0], self.n_classes_), dtype=np.float64)
        self.bias_ = np.full(self.n_classes_, _ABSENT_LOGIT, dtype=np.float64)
        self.weights_[:, present] = W_raw / self.temperature_
        self.bias_[present] = b_raw / self.temperature_

    def logits(self, X) -> np.ndarray:
        return _flat(X).astype(np.float64) @ self.weights_ + self.bias_

    def _proba(self, X) -> np.ndarray:
        return _softmax(self.logits(X))

    def _save(self, folder: Path) -> dict:
        meta = super()._save(folder)
        arrays = {
            "coef_": np.asarray(self.estimator_.coef_),
            "intercept_": np.asarray(self.estimator_.intercept_),
            "classes_": np.asarray(self.estimator_.classes_),
            "weights": self.weights_,
            "bias": self.bias_,
            "temperature": np.asarray(self.temperature_),
        }
        if self.scaler_ is not None:
            arrays["scaler_mean"] = np.asarray(self.scaler_.mean_)
            arrays["scaler_scale"] = np.asarray(self.scaler_.scale_)
        np.savez(folder / "head.npz", **arrays)
        meta["files"] = ["head.npz", "head.joblib"]
        meta["safe_format"] = "head.npz"
        return meta

    def _load(self, folder: Path, meta: dict) -> None:
        """Linear heads load from head.npz only (allow_pickle=False): no unpickling needed."""
        path = folder / "head.npz"
        if not path.exists():
            raise TransferCacheError(f"{path} is missing; the linear head is stored there (fit the model again)")
        with np.load(path, allow_pickle=False) as data:
            self.weights_ = data["weights"]
            self.bias_ = data["bias"]
            self.temperature_ = float(data["temperature"])
            self.coef_ = data["coef_"]
            self.intercept_ = data["intercept_"]
            self.present_classes_ = data["classes_"]

    def dense_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) such that softmax(x @ W + b) are the probabilities, x being the raw cached vector."""
        return self.weights_, self.bias_


_CLASS_WEIGHT = Param("none", "str", ("none", "balanced"))


def _sk_class_weight(value: str):
    return None if value == "none" else value


class LogReg(_LinearClassifier):
    """Multinomial logistic regression (scikit-learn LogisticRegression), on standardised features by default."""

    name = "logreg"
    spec = {
        "C": Param(1.0, "float"),
        "max_iter": Param(1000, "int"),
        "solver": Param("lbfgs", "str", ("lbfgs", "newton-cg", "newton-cholesky", "sag", "saga")),
        "class_weight": _CLASS_WEIGHT,
        "standardize": Param(True, "bool"),
    }

    def _estimator(self):
        from sklearn.linear_model import LogisticRegression

        p = self._params
        return LogisticRegression(
            C=p["C"], max_iter=p["max_iter"], solver=p["solver"], class_weight=_sk_class_weight(p["class_weight"]),
            random_state=self.seed,
        )


class LinearSVM(_LinearClassifier):
    """LinearSVC; probabilities = softmax(decision_function / T), T fitted on the training rows (see module doc)."""

    name = "linear_svm"
    spec = {
        "C": Param(1.0, "float"),
        "max_iter": Param(5000, "int"),
        "class_weight": _CLASS_WEIGHT,
        "standardize": Param(True, "bool"),
    }

    def _estimator(self):
        from sklearn.svm import LinearSVC

        p = self._params
        return LinearSVC(C=p["C"], max_iter=p["max_iter"], class_weight=_sk_class_weight(p["class_weight"]), random_state=self.seed)

    def _temperature(self, X_scaled, y) -> float:
        """One temperature minimising the log-loss of out-of-fold decision values (3 folds; training ones if too few rows).

        Out-of-fold values keep separable training data from driving the temperature to zero (all-or-nothing
        probabilities).
        """
        from scipy.optimize import minimize_scalar
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        present = np.asarray(self.estimator_.classes_)
        column = np.searchsorted(present, y)
        counts = np.bincount(column)
        if len(present) > 1 and counts.min() >= 3:
            folds = StratifiedKFold(3, shuffle=True, random_state=self.seed)
            logits = cross_val_predict(self._estimator(), X_scaled, y, cv=folds, method="decision_function")
        else:
            logits = self.estimator_.decision_function(X_scaled)
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim == 1:
            logits = np.stack([np.zeros_like(logits), logits], axis=1)

        def log_loss(log_t: float) -> float:
            z = logits / math.exp(log_t)
            z = z - z.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return float(-log_p[np.arange(len(y)), column].mean())

        best = minimize_scalar(log_loss, bounds=(-6.0, 6.0), method="bounded")
        return math.exp(best.x)


class SVM(_SklearnClassifier):
    """RBF support vector machine; probabilities by Platt scaling (CalibratedClassifierCV(SVC, ensemble=False), 5 folds).

    That is what ``SVC(probability=True)`` did internally; scikit-learn 1.9 deprecates the flag in favour of this.
    """

    name = "svm"
    spec = {
        "C": Param(1.0, "float"),
        "gamma": Param("scale", "float_or_choice", ("scale", "auto")),
        "class_weight": _CLASS_WEIGHT,
        "standardize": Param(True, "bool"),
    }

    def _estimator(self):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        p = self._params
        svc = SVC(C=p["C"], kernel="rbf", gamma=p["gamma"], class_weight=_sk_class_weight(p["class_weight"]), random_state=self.seed)
        return CalibratedClassifierCV(svc, method="sigmoid", cv=5, ensemble=False, n_jobs=self.n_jobs)

    def _fit(self, X, y, X_val, y_val) -> None:
        counts = np.bincount(np.asarray(y, dtype=np.int64))
        smallest = int(counts[counts > 0].min())
        if smallest < 5:
            raise TransferCacheError(
                f"classifier 'svm' calibrates its probabilities with 5-fold cross-validation and needs at least 5 "
                f"training rows per class; the smallest class has {smallest}; label more images or use another classifier"
            )
        super()._fit(X, y, X_val, y_val)


class KNN(_SklearnClassifier):
    """k-nearest neighbours on the cached vectors (cosine distance suits transfer values well)."""

    name = "knn"
    spec = {
        "n_neighbors": Param(5, "int"),
        "weights": Param("uniform", "str", ("uniform", "distance")),
        "metric": Param("euclidean", "str", ("euclidean", "cosine", "manhattan", "minkowski")),
    }

    def _estimator(self):
        from sklearn.neighbors import KNeighborsClassifier

        p = self._params
        return KNeighborsClassifier(n_neighbors=p["n_neighbors"], weights=p["weights"], metric=p["metric"], n_jobs=self.n_jobs)

    def _fit(self, X, y, X_val, y_val) -> None:
        if self._params["n_neighbors"] > len(y):
            raise TransferCacheError(
                f"n_neighbors={self._params['n_neighbors']} is more than the {len(y)} training rows; pass a smaller "
                "--param n_neighbors=K"
            )
        super()._fit(X, y, X_val, y_val)


class RandomForest(_SklearnClassifier):
    name = "random_forest"
    spec = {
        "n_estimators": Param(200, "int"),
        "max_depth": Param(None, "int_or_none"),
        "min_samples_leaf": Param(1, "int"),
        "max_features": Param("sqrt", "float_or_choice", ("sqrt", "log2")),
        "class_weight": _CLASS_WEIGHT,
    }

    def _estimator(self):
        from sklearn.ensemble import RandomForestClassifier

        p = self._params
        return RandomForestClassifier(
            n_estimators=p["n_estimators"], max_depth=p["max_depth"], min_samples_leaf=p["min_samples_leaf"],
            max_features=p["max_features"], class_weight=_sk_class_weight(p["class_weight"]), n_jobs=self.n_jobs,
            random_state=self.seed,
        )


class MLP(_SklearnClassifier):
    """scikit-learn's MLPClassifier (Adam), on standardised features by default."""

    name = "mlp"
    spec = {
        "hidden": Param((256,), "ints"),
        "alpha": Param(1e-4, "float"),
        "learning_rate": Param(1e-3, "float"),
        "max_iter": Param(200, "int"),
        "early_stopping": Param(False, "bool"),
        "standardize": Param(True, "bool"),
    }

    def _estimator(self):
        from sklearn.neural_network import MLPClassifier

        p = self._params
        return MLPClassifier(
            hidden_layer_sizes=tuple(p["hidden"]) or (100,), alpha=p["alpha"], learning_rate_init=p["learning_rate"],
            max_iter=p["max_iter"], early_stopping=p["early_stopping"], random_state=self.seed,
        )


class SGD(_SklearnClassifier):
    """SGDClassifier trained out of core: ``fit_stream`` makes passes over chunks, never holding all features.

    With ``standardize`` a first pass fits a StandardScaler incrementally. Probabilities: the estimator's own
    for loss log_loss / modified_huber, otherwise a softmax of the decision function.
    """

    name = "sgd"
    spec = {
        "loss": Param("log_loss", "str", ("log_loss", "hinge", "modified_huber")),
        "alpha": Param(1e-4, "float"),
        "epochs": Param(5, "int"),
        "chunk_rows": Param(4096, "int"),
        "standardize": Param(True, "bool"),
    }

    def _estimator(self):
        from sklearn.linear_model import SGDClassifier

        p = self._params
        return SGDClassifier(loss=p["loss"], alpha=p["alpha"], random_state=self.seed)

    def _fit(self, X, y, X_val, y_val) -> None:
        X = _flat(X)
        rows = self._params["chunk_rows"]
        rng = np.random.default_rng(self.seed)

        def chunks():
            order = rng.permutation(len(y))
            for start in range(0, len(y), rows):
                take = np.sort(order[start : start + rows])
                yield X[take], y[take]

        self._stream(chunks)

    def fit_stream(self, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *, n_classes: int) -> "SGD":
        """Train from ``chunks()``, a callable returning a fresh iterator of (X_chunk, y_chunk) per pass.

        Each call of ``chunks`` should shuffle its order; only one chunk is in memory at a time.
        """
        self.n_classes_ = int(n_classes)
        self.classes_ = np.arange(self.n_classes_)
        self._stream(chunks)
        return self

    def _stream(self, chunks) -> None:
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = None
        if self._params["standardize"]:
            self.scaler_ = StandardScaler()
            for X_chunk, _ in chunks():
                self.scaler_.partial_fit(_flat(X_chunk))
        self.estimator_ = self._estimator()
        seen = 0
        for _ in range(self._params["epochs"]):
            for X_chunk, y_chunk in chunks():
                y_chunk = np.asarray(y_chunk, dtype=np.int64)
                keep = y_chunk >= 0
                if not keep.any():
                    continue
                self.estimator_.partial_fit(self._scaled(np.asarray(X_chunk)[keep]), y_chunk[keep], classes=self.classes_)
                seen += int(keep.sum())
        if seen == 0:
            raise TransferCacheError("classifier 'sgd' got no labelled training rows from the stream; label some images first")

    def _proba(self, X) -> np.ndarray:
        Xs = self._scaled(X)
        if self._params["loss"] in ("log_loss", "modified_huber"):
            return _scatter(self.estimator_.predict_proba(Xs), self.estimator_.classes_, self.n_classes_)
        decision = self.estimator_.decision_function(Xs)
        if decision.ndim == 1:
            decision = np.stack([np.zeros_like(decision), decision], axis=1)
        return _scatter(_softmax(decision), self.estimator_.classes_, self.n_classes_)


# --------------------------------------------------------------------------- Keras heads

_OPTIMIZER = Param("rmsprop", "str", ("rmsprop", "adam", "sgd"))


def _stream_dataset(chunks, input_shape: tuple[int, ...], *, batch_size: int, sigmoid: bool):
    """A tf.data pipeline of mini-batches cut from ``chunks()`` passes; tf.data calls it afresh every epoch."""
    import tensorflow as tf

    label_type = np.float32 if sigmoid else np.int64

    def batches():
        for X, y in chunks():
            for start in range(0, len(X), batch_size):
                yield (
                    np.asarray(X[start : start + batch_size], dtype=np.float32),
                    np.asarray(y[start : start + batch_size], dtype=label_type),
                )

    signature = (
        tf.TensorSpec((None,) + tuple(input_shape), tf.float32),
        tf.TensorSpec((None,), tf.float32 if sigmoid else tf.int64),
    )
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)


def _view_sampler(X: np.ndarray, y: np.ndarray, views: np.ndarray, view_mask: np.ndarray, *, batch_size: int, seed: int):
    """A Keras PyDataset that, each epoch, replaces every row that has views by one of (clean, view 1..K), seeded."""
    import keras

    class ViewSampler(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.rows = np.flatnonzero(view_mask)
            self.on_epoch_end()

        def __len__(self) -> int:
            return int(np.ceil(len(X) / batch_size))

        def __getitem__(self, index: int):
            chosen = self.order[index * batch_size : (index + 1) * batch_size]
            return self.epoch_X[chosen], y[chosen]

        def on_epoch_end(self) -> None:
            pick = self.rng.integers(0, views.shape[1] + 1, size=len(self.rows))  # 0 = the clean row
            self.epoch_X = X.copy()
            replaced = pick > 0
            self.epoch_X[self.rows[replaced]] = views[self.rows[replaced], pick[replaced] - 1]
            self.order = self.rng.permutation(len(X))

    return ViewSampler()


class _KerasClassifier(Classifier):
    """Shared training loop of the Keras heads: optimizer, class weights, early stopping, history."""

    is_keras = True
    uses_validation = True

    def _build(self, input_shape: tuple[int, ...], n_outputs: int, sigmoid: bool):
        raise NotImplementedError

    def _sigmoid(self) -> bool:
        return False

    def _fit(self, X, y, X_val, y_val) -> None:
        import keras

        p = self._params
        keras.utils.set_random_seed(int(self.seed))
        stream = getattr(self, "_train_stream", None)
        input_shape = stream[1] if stream is not None else tuple(np.asarray(X).shape[1:])
        sigmoid = self._sigmoid()
        self.model_ = self._build(input_shape, 1 if sigmoid else self.n_classes_, sigmoid)
        optimizers = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
        self.model_.compile(
            optimizer=optimizers[p["optimizer"]](learning_rate=p["learning_rate"]),
            loss="binary_crossentropy" if sigmoid else "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        callbacks = []
        validation = None
        if X_val is not None and y_val is not None and len(y_val):
            validation = (self._inputs(X_val), self._targets(y_val, sigmoid))
        if p["early_stopping"] > 0:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss" if validation is not None else "loss", patience=p["early_stopping"],
                    restore_best_weights=True,
                )
            )
        weights = _class_weights(y, 2 if sigmoid else self.n_classes_) if p["class_weight"] == "balanced" else None
        train_views = getattr(self, "_train_views", None)
        if stream is not None:  # one HDF5 block in memory at a time, a fresh shuffled pass each epoch
            data = _stream_dataset(stream[0], input_shape, batch_size=p["batch_size"], sigmoid=sigmoid)
            history = self.model_.fit(
                data, validation_data=validation, epochs=p["epochs"], class_weight=weights, callbacks=callbacks, verbose=0
            )
        elif train_views is not None:  # one view (or the clean row) of each image per epoch
            data = _view_sampler(
                self._inputs(X), self._targets(y, sigmoid), *train_views, batch_size=p["batch_size"], seed=int(self.seed)
            )
            history = self.model_.fit(
                data, validation_data=validation, epochs=p["epochs"], class_weight=weights, callbacks=callbacks, verbose=0
            )
        else:
            history = self.model_.fit(
                self._inputs(X), self._targets(y, sigmoid), validation_data=validation, epochs=p["epochs"],
                batch_size=p["batch_size"], class_weight=weights, callbacks=callbacks, shuffle=True, verbose=0,
            )
        self.history = {key: [float(v) for v in values] for key, values in history.history.items()}

    def _inputs(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)

    @staticmethod
    def _targets(y, sigmoid: bool) -> np.ndarray:
        return np.asarray(y, dtype=np.float32 if sigmoid else np.int64)

    def _proba(self, X) -> np.ndarray:
        out = np.asarray(self.model_.predict(self._inputs(X), batch_size=256, verbose=0), dtype=np.float64)
        if out.shape[1] == 1:
            return np.hstack([1.0 - out, out])
        return out

    def _save(self, folder: Path) -> dict:
        self.model_.save(folder / "head.keras")
        return {"files": ["head.keras"], "pickle": False}

    def _load(self, folder: Path, meta: dict) -> None:
        import keras

        path = folder / "head.keras"
        if not path.exists():
            raise TransferCacheError(f"{path} is missing; fit the model again")
        self.model_ = keras.saving.load_model(path, compile=False)

    def __getstate__(self):  # GridSearchCV pickles unfitted clones; a fitted Keras model is saved with save()
        state = super().__getstate__()
        state.pop("model_", None)
        return state


class Dense(_KerasClassifier):
    """The seeds' dense head: [BatchNorm] -> (Dense(h, relu) -> Dropout)* -> softmax (or one sigmoid unit).

    Seed 000/003: hidden=1024, dropout=0.2, rmsprop 1e-4. Seed 002: hidden=none, batch_norm=true, dropout=0.2,
    optimizer=adam, learning_rate=1e-2. Seed 001: binary=sigmoid (two classes only). With hidden=none the
    dropout sits right before the output layer.
    """

    name = "dense"
    spec = {
        "hidden": Param((1024,), "ints"),
        "dropout": Param(0.2, "float"),
        "batch_norm": Param(False, "bool"),
        "optimizer": _OPTIMIZER,
        "learning_rate": Param(1e-4, "float"),
        "epochs": Param(10, "int"),
        "batch_size": Param(32, "int"),
        "early_stopping": Param(0, "int"),
        "class_weight": _CLASS_WEIGHT,
        "binary": Param("softmax", "str", ("softmax", "sigmoid")),
        "stream": Param(False, "bool"),  # fit streams the training rows from HDF5 (memory stays flat)
    }

    def fit_stream(self, chunks, *, y, input_shape, n_classes: int, X_val=None, y_val=None) -> "Dense":
        """Train on passes of (X, y) chunks (``fit``'s HDF5 blocks) instead of one in-memory array.

        ``y`` holds every training label (for class weights); ``input_shape`` is one row's shape. Validation rows,
        when given, are held in memory.
        """
        self.n_classes_ = int(n_classes)
        self.classes_ = np.arange(self.n_classes_)
        self._train_stream = (chunks, tuple(input_shape))
        try:
            self._fit(None, np.asarray(y, dtype=np.int64), X_val, None if y_val is None else np.asarray(y_val, dtype=np.int64))
        finally:
            self._train_stream = None
        return self

    def _sigmoid(self) -> bool:
        if self._params["binary"] != "sigmoid":
            return False
        if self.n_classes_ != 2:
            raise TransferCacheError(
                f"binary=sigmoid needs exactly two classes; this data has {self.n_classes_}; drop --param binary=sigmoid"
            )
        return True

    def _build(self, input_shape, n_outputs, sigmoid):
        import keras
        from keras import layers

        p = self._params
        if not 0.0 <= p["dropout"] < 1.0:
            raise TransferCacheError(f"parameter 'dropout' of classifier 'dense' must be in [0, 1); got {p['dropout']}")
        inputs = keras.Input(shape=input_shape, name="transfer_values")
        x = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
        if p["batch_norm"]:
            x = layers.BatchNormalization()(x)
        for units in p["hidden"]:
            x = layers.Dense(int(units), activation="relu")(x)
            if p["dropout"]:
                x = layers.Dropout(p["dropout"])(x)
        if not p["hidden"] and p["dropout"]:
            x = layers.Dropout(p["dropout"])(x)
        outputs = layers.Dense(n_outputs, activation="sigmoid" if sigmoid else "softmax", name="probabilities")(x)
        return keras.Model(inputs, outputs, name="dense_head")


class Pixels(_KerasClassifier):
    """Raw-pixel baseline: seed 000's simple CNN trained from scratch on images resized to ``size``."""

    name = "pixels"
    input_kind = "pixels"
    spec = {
        "size": Param(64, "int"),
        "filters": Param((32, 32, 64), "ints"),
        "hidden": Param((1024,), "ints"),
        "dropout": Param(0.2, "float"),
        "optimizer": _OPTIMIZER,
        "learning_rate": Param(1e-4, "float"),
        "epochs": Param(10, "int"),
        "batch_size": Param(32, "int"),
        "early_stopping": Param(0, "int"),
        "class_weight": _CLASS_WEIGHT,
    }

    def _build(self, input_shape, n_outputs, sigmoid):
        import keras
        from keras import layers

        p = self._params
        size = p["size"]
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise TransferCacheError(f"classifier 'pixels' trains on (N, H, W, 3) images; got rows of shape {input_shape}")
        if size < 2 ** (len(p["filters"]) + 1):
            raise TransferCacheError(
                f"parameter 'size' of classifier 'pixels' is too small ({size}) for {len(p['filters'])} conv blocks; "
                f"use at least {2 ** (len(p['filters']) + 1)}"
            )
        inputs = keras.Input(shape=input_shape, name="pixels")
        x = layers.Rescaling(1.0 / 255.0)(inputs)
        for filters in p["filters"]:
            x = layers.Conv2D(int(filters), (2, 2), activation="relu")(x)
            x = layers.MaxPooling2D(pool_size=(2, 2))(x)
        x = layers.Flatten()(x)
        for units in p["hidden"]:
            x = layers.Dense(int(units), activation="relu")(x)
            if p["dropout"]:
                x = layers.Dropout(p["dropout"])(x)
        outputs = layers.Dense(n_outputs, activation="softmax", name="probabilities")(x)
        return keras.Model(inputs, outputs, name="pixels_cnn")


# --------------------------------------------------------------------------- registry

CLASSIFIERS: dict[str, type[Classifier]] = {
    klass.name: klass for klass in (Dense, LogReg, LinearSVM, SVM, KNN, RandomForest, MLP, SGD, Pixels)
}


def available() -> list[str]:
    return list(CLASSIFIERS)


def _klass(name: str) -> type[Classifier]:
    klass = CLASSIFIERS.get(name)
    if klass is None:
        raise TransferCacheError(f"unknown classifier '{name}'; choose from {', '.join(CLASSIFIERS)}")
    return klass


def make_classifier(name: str, params: dict | None = None, *, seed: int = 0, n_jobs: int = 1) -> Classifier:
    """A fresh, unfitted classifier: ``make_classifier("dense", {"hidden": "1024,256", "epochs": 5})``."""
    return _klass(name)(seed=seed, n_jobs=n_jobs, **dict(params or {}))


def load_classifier(folder: str | os.PathLike) -> Classifier:
    """Load any head written by ``Classifier.save`` (a run's ``model/`` folder)."""
    return Classifier.load(folder)


def _split_item(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise TransferCacheError(f"{option} must look like key=value; got {item!r}")
    return key.strip(), value.strip()


def parse_params(names: str | Sequence[str], items: Sequence[str] | dict | None) -> dict[str, dict]:
    """``--param key=value`` strings -> {classifier: {key: typed value}}.

    ``name.key=value`` targets one classifier. A plain ``key=value`` goes to every listed classifier that accepts
    it, and must be accepted by at least one (with one classifier the message lists what it accepts).
    """
    names = [names] if isinstance(names, str) else list(names)
    klasses = {name: _klass(name) for name in names}
    result: dict[str, dict] = {name: {} for name in names}
    pairs = list(items.items()) if isinstance(items, dict) else [_split_item(item, "--param") for item in (items or [])]
    for key, value in pairs:
        target, dot, bare = key.partition(".")
        if dot and target in CLASSIFIERS:
            if target not in klasses:
                raise TransferCacheError(f"--param {key}=... names classifier '{target}', which is not being fitted ({', '.join(names)})")
            targets, key = [target], bare
        else:
            targets = [name for name, klass in klasses.items() if key in klass.spec]
            if not targets:
                if len(names) == 1:
                    accepted = ", ".join(klasses[names[0]].spec)
                    raise TransferCacheError(f"unknown parameter '{key}' for classifier '{names[0]}'; it accepts {accepted}")
                raise TransferCacheError(
                    f"unknown parameter '{key}': none of {', '.join(names)} accepts it; use name.key=value for one classifier"
                )
        for name in targets:
            klass = klasses[name]
            if key not in klass.spec:
                raise TransferCacheError(f"unknown parameter '{key}' for classifier '{name}'; it accepts {', '.join(klass.spec)}")
            result[name][key] = _coerce(name, key, klass.spec[key], value)
    return result


def parse_grid(name: str, items: Sequence[str] | dict | None) -> dict[str, list]:
    """``--grid key=v1,v2`` strings -> a GridSearchCV param_grid for one classifier.

    List-valued parameters (``hidden``) separate candidates with ';': ``hidden=1024;512,256``.
    """
    klass = _klass(name)
    grid: dict[str, list] = {}
    pairs = list(items.items()) if isinstance(items, dict) else [_split_item(item, "--grid") for item in (items or [])]
    for key, value in pairs:
        if key not in klass.spec:
            raise TransferCacheError(f"unknown parameter '{key}' for classifier '{name}'; it accepts {', '.join(klass.spec)}")
        spec = klass.spec[key]
        if isinstance(value, (list, tuple)) and spec.kind != "ints":
            candidates = list(value)
        elif isinstance(value, str):
            separator = ";" if spec.kind == "ints" else ","
            candidates = [part for part in value.split(separator)]
        else:
            candidates = [value]
        if not candidates or any(str(c).strip() == "" and spec.kind != "ints" for c in candidates):
            raise TransferCacheError(f"--grid {key}= needs at least one value, e.g. --grid {key}=v1,v2")
        grid[key] = [_coerce(name, key, spec, candidate) for candidate in candidates]
    return grid
