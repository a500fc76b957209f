"""The scikit-learn heads: logistic regression, linear and RBF SVMs, k-NN, random forest, MLP, out-of-core SGD.

They are saved with joblib (a pickle: see ``_pickles``); the linear ones also as plain arrays in ``head.npz``, from
which they load without unpickling. ``linear_svm`` gives probabilities as a temperature-scaled softmax of
``LinearSVC.decision_function`` (one temperature fitted on 3-fold out-of-fold decision values), not
``CalibratedClassifierCV``: it keeps the head linear, so it exports exactly as a Dense layer with softmax.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .._errors import TransferCacheError
from ._params import CLASS_WEIGHT, COUNT, POSITIVE, Interval, Param, at_least
from ._pickles import dump_pickle, load_pickle
from .base import ABSENT_LOGIT, Classifier, flat, scatter, softmax, unit_rows
from .registry import register


class _SklearnClassifier(Classifier):
    """A scikit-learn estimator, optionally after unit length and a StandardScaler, saved with joblib (a pickle)."""

    def _estimator(self):
        raise NotImplementedError

    def _fit(self, X, y, X_val, y_val) -> None:
        from sklearn.preprocessing import StandardScaler

        X = self._unit(X)
        self.scaler_ = StandardScaler().fit(X) if self._params.get("standardize") else None
        self.estimator_ = self._estimator()
        self.estimator_.fit(self._standardized(X), y)

    def _unit(self, X) -> np.ndarray:
        return unit_rows(X) if self._params.get("unit_length") else flat(X)

    def _standardized(self, X_unit: np.ndarray) -> np.ndarray:
        return self.scaler_.transform(X_unit) if self.scaler_ is not None else X_unit

    def _scaled(self, X) -> np.ndarray:
        """The vectors as the estimator sees them: unit length (if asked), then standardised (if asked)."""
        return self._standardized(self._unit(X))

    def _proba(self, X) -> np.ndarray:
        proba = self.estimator_.predict_proba(self._scaled(X))
        return scatter(proba, self.estimator_.classes_, self.n_classes_)

    def _save(self, folder: Path) -> dict:
        payload = {"estimator": self.estimator_, "scaler": self.scaler_, "present": getattr(self, "present_", None)}
        dump_pickle(payload, folder / "head.joblib")
        return {"files": ["head.joblib"], "pickle": True}

    def _load(self, folder: Path, meta: dict) -> None:
        payload = load_pickle(folder / "head.joblib")
        self.estimator_ = payload["estimator"]
        self.scaler_ = payload["scaler"]
        self.present_ = payload.get("present")


class _LinearClassifier(_SklearnClassifier):
    """A linear head: probabilities are softmax(u @ W + b), with the scaler and temperature folded into W and b.

    u is the raw vector, or with ``unit_length`` the raw vector divided by its length. That one formula is what the
    exported model computes (a UnitNormalization layer, if needed, then one Dense layer), so export and fit agree.
    """

    is_linear = True
    exports_as_keras = True

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
        self.bias_ = np.full(self.n_classes_, ABSENT_LOGIT, dtype=np.float64)
        self.weights_[:, present] = W_raw / self.temperature_
        self.bias_[present] = b_raw / self.temperature_

    def logits(self, X) -> np.ndarray:
        return self._unit(X).astype(np.float64) @ self.weights_ + self.bias_

    def _proba(self, X) -> np.ndarray:
        return softmax(self.logits(X))

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
        """(W, b) such that softmax(u @ W + b) are the probabilities, u being the cached vector (of unit length if
        ``unit_length``)."""
        return self.weights_, self.bias_

    def keras_head(self, feature_shape: tuple[int, ...] | None = None):
        """[UnitNormalization] -> one Dense layer with softmax: the probabilities of ``predict_proba``."""
        import keras
        from keras import layers

        W, b = self.dense_weights()
        inputs = keras.Input(feature_shape, name="transfer_values")
        x = layers.Flatten()(inputs) if len(feature_shape) > 1 else inputs
        if self._params["unit_length"]:
            x = layers.UnitNormalization(name="unit_length")(x)
        dense = layers.Dense(W.shape[1], activation="softmax", name="probabilities")
        outputs = dense(x)
        dense.set_weights([W.astype(np.float32), b.astype(np.float32)])
        return keras.Model(inputs, outputs, name=f"{self.name}_head")


def _sk_class_weight(value: str):
    return None if value == "none" else value


@register
class LogReg(_LinearClassifier):
    """Multinomial logistic regression (scikit-learn LogisticRegression), on standardised features by default."""

    name = "logreg"
    spec = {
        "C": Param(1.0, "float", interval=POSITIVE),
        "max_iter": Param(1000, "int", interval=COUNT),
        "solver": Param("lbfgs", "str", ("lbfgs", "newton-cg", "newton-cholesky", "sag", "saga")),
        "class_weight": CLASS_WEIGHT,
        "unit_length": Param(False, "bool"),
        "standardize": Param(True, "bool"),
        # fit trains it on a stratified sample of at most this many training rows (0: all of them, refused when
        # they do not fit in memory): on a synthetic Lite0 cache of 1,000,000 rows (_synthetic_cache) the whole fit
        # then takes 5 min at a 1.6 GB peak, where lbfgs on all 800,000 training rows would hold 4 GB of float32
        # rows before its copies and its iterations would take each 16x as long
        "sample_rows": Param(50_000, "int", interval=at_least(0)),
    }

    def _estimator(self):
        from sklearn.linear_model import LogisticRegression

        p = self._params
        return LogisticRegression(
            C=p["C"], max_iter=p["max_iter"], solver=p["solver"], class_weight=_sk_class_weight(p["class_weight"]),
            random_state=self.seed,
        )


@register
class LinearSVM(_LinearClassifier):
    """LinearSVC on unit-length vectors by default; probabilities = softmax(decision_function / T), T fitted on the
    training rows (see module doc)."""

    name = "linear_svm"
    spec = {  # defaults: unit-length rows converge in a fraction of a second where standardised ones took minutes
        "C": Param(10.0, "float", interval=POSITIVE),
        "max_iter": Param(5000, "int", interval=COUNT),
        "class_weight": CLASS_WEIGHT,
        "unit_length": Param(True, "bool", legacy=False),
        "standardize": Param(False, "bool"),
    }

    def _estimator(self):
        from sklearn.svm import LinearSVC

        p = self._params
        return LinearSVC(C=p["C"], max_iter=p["max_iter"], class_weight=_sk_class_weight(p["class_weight"]),
                         random_state=self.seed)

    def _temperature(self, X_scaled, y) -> float:
        """One temperature minimising the log-loss of out-of-fold decision values (3 folds; training ones if too
        few rows).

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


@register
class SVM(_SklearnClassifier):
    """RBF support vector machine; probabilities by Platt scaling (CalibratedClassifierCV(SVC, ensemble=False),
    5 folds).

    That is what ``SVC(probability=True)`` did internally; scikit-learn 1.9 deprecates the flag in favour of this.
    """

    name = "svm"
    spec = {  # defaults: on unit-length vectors the RBF kernel compares directions, more accurate and faster
        "C": Param(10.0, "float", interval=POSITIVE),
        "gamma": Param("scale", "float_or_choice", ("scale", "auto"), interval=POSITIVE),
        "class_weight": CLASS_WEIGHT,
        "unit_length": Param(True, "bool", legacy=False),
        "standardize": Param(False, "bool"),
    }

    def _estimator(self):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        p = self._params
        svc = SVC(C=p["C"], kernel="rbf", gamma=p["gamma"], class_weight=_sk_class_weight(p["class_weight"]),
                  random_state=self.seed)
        return CalibratedClassifierCV(svc, method="sigmoid", cv=5, ensemble=False, n_jobs=self.n_jobs)

    def _fit(self, X, y, X_val, y_val) -> None:
        counts = np.bincount(np.asarray(y, dtype=np.int64))
        smallest = int(counts[counts > 0].min())
        if smallest < 5:
            raise TransferCacheError(
                f"classifier 'svm' calibrates its probabilities with 5-fold cross-validation and needs at least 5 "
                f"training rows per class; the smallest class has {smallest}; "
                f"label more images or use another classifier"
            )
        super()._fit(X, y, X_val, y_val)


@register
class KNN(_SklearnClassifier):
    """k-nearest neighbours on the cached vectors (cosine distance suits transfer values well)."""

    name = "knn"
    spec = {
        "n_neighbors": Param(5, "int", interval=COUNT),
        "weights": Param("uniform", "str", ("uniform", "distance")),
        "metric": Param("euclidean", "str", ("euclidean", "cosine", "manhattan", "minkowski")),
    }

    def _estimator(self):
        from sklearn.neighbors import KNeighborsClassifier

        p = self._params
        return KNeighborsClassifier(n_neighbors=p["n_neighbors"], weights=p["weights"], metric=p["metric"],
                                    n_jobs=self.n_jobs)

    def _fit(self, X, y, X_val, y_val) -> None:
        if self._params["n_neighbors"] > len(y):
            raise TransferCacheError(
                f"n_neighbors={self._params['n_neighbors']} is more than the {len(y)} training rows; pass a smaller "
                "--param n_neighbors=K"
            )
        super()._fit(X, y, X_val, y_val)


@register
class RandomForest(_SklearnClassifier):
    name = "random_forest"
    spec = {
        "n_estimators": Param(100, "int", interval=COUNT),  # 200 trees cost twice the time for no measured gain
        "max_depth": Param(None, "int_or_none", interval=COUNT),
        "min_samples_leaf": Param(1, "int", interval=COUNT),
        "max_features": Param("sqrt", "float_or_choice", ("sqrt", "log2"), interval=Interval(0, 1, closed="right")),
        "class_weight": CLASS_WEIGHT,
    }

    def _estimator(self):
        from sklearn.ensemble import RandomForestClassifier

        p = self._params
        return RandomForestClassifier(
            n_estimators=p["n_estimators"], max_depth=p["max_depth"], min_samples_leaf=p["min_samples_leaf"],
            max_features=p["max_features"], class_weight=_sk_class_weight(p["class_weight"]), n_jobs=self.n_jobs,
            random_state=self.seed,
        )


@register
class MLP(_SklearnClassifier):
    """scikit-learn's MLPClassifier (Adam), on standardised features by default.

    Defaults: a strong L2 penalty (alpha=1) on 1,000-2,000-d vectors generalises better, and tol=1e-2 stops once the
    loss stops moving (about 40 epochs) instead of polishing it for 200.
    """

    name = "mlp"
    spec = {
        "hidden": Param((128,), "ints", interval=COUNT),
        "alpha": Param(1.0, "float", interval=at_least(0)),
        "learning_rate": Param(1e-3, "float", interval=POSITIVE),
        "max_iter": Param(200, "int", interval=COUNT),
        "tol": Param(1e-2, "float", interval=POSITIVE, legacy=1e-4),
        "early_stopping": Param(False, "bool"),
        "unit_length": Param(False, "bool"),
        "standardize": Param(True, "bool"),
    }

    def _estimator(self):
        from sklearn.neural_network import MLPClassifier

        p = self._params
        return MLPClassifier(
            hidden_layer_sizes=tuple(p["hidden"]) or (100,), alpha=p["alpha"], learning_rate_init=p["learning_rate"],
            max_iter=p["max_iter"], tol=p["tol"], early_stopping=p["early_stopping"], random_state=self.seed,
        )


@register
class SGD(_SklearnClassifier):
    """SGDClassifier trained out of core: ``fit_stream`` makes passes over chunks, never holding all features.

    With ``standardize`` a first pass fits a StandardScaler incrementally. Probabilities: the estimator's own
    for loss log_loss / modified_huber, otherwise a softmax of the decision function.
    """

    name = "sgd"
    summary = "out of core"
    spec = {
        "loss": Param("log_loss", "str", ("log_loss", "hinge", "modified_huber")),
        "alpha": Param(1e-2, "float", interval=POSITIVE),  # the "optimal" learning rate divides by it; 1e-4 underfit
        "epochs": Param(5, "int", interval=COUNT),
        "chunk_rows": Param(4096, "int", interval=COUNT),
        "unit_length": Param(False, "bool"),
        "standardize": Param(True, "bool"),
    }

    @property
    def streams(self) -> bool:
        return True  # fit always trains it from HDF5 blocks

    @property
    def stream_block_rows(self) -> int:
        return int(self._params["chunk_rows"])

    def _estimator(self):
        from sklearn.linear_model import SGDClassifier

        p = self._params
        return SGDClassifier(loss=p["loss"], alpha=p["alpha"], random_state=self.seed)

    def _fit(self, X, y, X_val, y_val) -> None:
        X = flat(X)
        rows = self._params["chunk_rows"]
        rng = np.random.default_rng(self.seed)

        def chunks():
            order = rng.permutation(len(y))
            for start in range(0, len(y), rows):
                take = np.sort(order[start : start + rows])
                yield X[take], y[take]

        self._stream(chunks)

    def fit_stream(self, chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *, n_classes: int, y=None,
                   input_shape=None, X_val=None, y_val=None) -> "SGD":
        """Train from ``chunks()``, a callable returning a fresh iterator of (X_chunk, y_chunk) per pass.

        Each call of ``chunks`` should shuffle its order; only one chunk is in memory at a time. Validation rows are
        not used (SGD trains a fixed number of passes).
        """
        self.check_params(self._given)
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
                self.scaler_.partial_fit(self._unit(X_chunk))
        self.estimator_ = self._estimator()
        seen = np.zeros(self.n_classes_, dtype=bool)
        for _ in range(self._params["epochs"]):
            for X_chunk, y_chunk in chunks():
                y_chunk = np.asarray(y_chunk, dtype=np.int64)
                keep = y_chunk >= 0
                if not keep.any():
                    continue
                self.estimator_.partial_fit(self._scaled(np.asarray(X_chunk)[keep]), y_chunk[keep],
                                            classes=self.classes_)
                seen[y_chunk[keep]] = True
        if not seen.any():
            raise TransferCacheError("classifier 'sgd' got no labelled training rows from the stream; "
                                     "label some images first")
        self.present_ = np.flatnonzero(seen)

    def _proba(self, X) -> np.ndarray:
        """Probabilities over the classes seen in training: partial_fit must be told every class up front, and its
        one-vs-rest model of a class with no rows still gives it some probability (more, the stronger alpha is)."""
        Xs = self._scaled(X)
        absent = np.ones(self.n_classes_, dtype=bool)
        absent[self.present_ if getattr(self, "present_", None) is not None else self.estimator_.classes_] = False
        if self._params["loss"] in ("log_loss", "modified_huber"):
            proba = scatter(self.estimator_.predict_proba(Xs), self.estimator_.classes_, self.n_classes_)
            proba[:, absent] = 0.0
            total = proba.sum(axis=1, keepdims=True)
            return np.where(total > 0, proba / np.where(total > 0, total, 1.0), (~absent) / (~absent).sum())
        decision = self.estimator_.decision_function(Xs)
        if decision.ndim == 1:
            decision = np.stack([np.zeros_like(decision), decision], axis=1)
        logits = np.full((len(decision), self.n_classes_), ABSENT_LOGIT)
        logits[:, self.estimator_.classes_] = decision
        logits[:, absent] = ABSENT_LOGIT
        return softmax(logits)
