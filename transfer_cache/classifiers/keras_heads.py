"""The Keras heads: the seeds' dense head on transfer values, and the raw-pixel CNN baseline.

``pixels`` is the raw-pixel baseline, not a head on transfer values: the "simple CNN" of seed 000 (three
Conv2D(2x2, relu) + MaxPool blocks with 32, 32, 64 filters -> Flatten -> Dense(hidden, relu) -> Dropout(0.2) ->
softmax, RMSprop) trained from scratch on the images themselves, resized to ``size`` (default 32). Its ``X`` is a
uint8 batch of images (N, size, size, 3); ``fit`` re-reads them through the cache's source.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from .._errors import TransferCacheError
from ._params import CLASS_WEIGHT, COUNT, FRACTION, POSITIVE, Param, at_least
from .base import Classifier, class_weights
from .registry import register

# The hyper-parameters the dense head and the pixel CNN share, declared once: their dense layers, then training.
_DENSE_LAYERS = {
    "hidden": Param((256,), "ints", interval=COUNT),
    "dropout": Param(0.2, "float", interval=FRACTION),
}
_TRAINING = {
    "optimizer": Param("rmsprop", "str", ("rmsprop", "adam", "sgd")),
    "learning_rate": Param(1e-3, "float", interval=POSITIVE),
    "epochs": Param(10, "int", interval=COUNT),
    "batch_size": Param(64, "int", interval=COUNT),
    "early_stopping": Param(0, "int", interval=at_least(0)),  # patience in epochs; 0: off
    "class_weight": CLASS_WEIGHT,
}


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


def _view_sampler(X: np.ndarray, y: np.ndarray, views: np.ndarray, view_mask: np.ndarray, *, batch_size: int,
                  seed: int):
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


@contextlib.contextmanager
def _own_seed(seed: int):
    """Seed Keras for one fit, then give Python's and NumPy's global random state back as they were.

    Keras seeds its initialisers, dropout and shuffling from the global seed (``keras.utils.set_random_seed``
    sets Python's, NumPy's and TensorFlow's); the user's own random streams must not change because a head was
    fitted, so the first two are restored afterwards (TensorFlow offers no way to read its global seed back).
    """
    import random

    import keras

    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class _KerasClassifier(Classifier):
    """Shared training loop of the Keras heads: optimizer, class weights, early stopping, history."""

    is_keras = True
    uses_validation = True
    exports_as_keras = True

    def _build(self, input_shape: tuple[int, ...], n_outputs: int, sigmoid: bool):
        raise NotImplementedError

    def _sigmoid(self) -> bool:
        return False

    def _fit(self, X, y, X_val, y_val) -> None:
        p = self._params
        with _own_seed(int(self.seed)):
            self._train(X, y, X_val, y_val, p)

    def _train(self, X, y, X_val, y_val, p) -> None:
        import keras

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
        weights = class_weights(y, 2 if sigmoid else self.n_classes_) if p["class_weight"] == "balanced" else None
        train_views = getattr(self, "_train_views", None)
        if stream is not None:  # one HDF5 block in memory at a time, a fresh shuffled pass each epoch
            data = _stream_dataset(stream[0], input_shape, batch_size=p["batch_size"], sigmoid=sigmoid)
            history = self.model_.fit(
                data, validation_data=validation, epochs=p["epochs"], class_weight=weights, callbacks=callbacks,
                verbose=0
            )
        elif train_views is not None:  # one view (or the clean row) of each image per epoch
            data = _view_sampler(
                self._inputs(X), self._targets(y, sigmoid), *train_views, batch_size=p["batch_size"],
                seed=int(self.seed)
            )
            history = self.model_.fit(
                data, validation_data=validation, epochs=p["epochs"], class_weight=weights, callbacks=callbacks,
                verbose=0
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


@register
class Dense(_KerasClassifier):
    """The seeds' dense head: [BatchNorm] -> (Dense(h, relu) -> Dropout)* -> softmax (or one sigmoid unit).

    Defaults: hidden=256, rmsprop 1e-3, batch_size=64, 10 epochs (as accurate on cached vectors as seed 000's
    head, in a third of the time). Seed 000/003: hidden=1024, learning_rate=1e-4, batch_size=32. Seed 002:
    hidden=none, batch_norm=true, optimizer=adam, learning_rate=1e-2. Seed 001: binary=sigmoid (two classes only).
    With hidden=none the dropout sits right before the output layer.
    """

    name = "dense"
    spec = {
        **_DENSE_LAYERS,
        "batch_norm": Param(False, "bool"),
        **_TRAINING,
        "binary": Param("softmax", "str", ("softmax", "sigmoid")),
        "stream": Param(False, "bool"),  # fit streams the training rows from HDF5 (memory stays flat)
    }

    @property
    def streams(self) -> bool:
        return bool(self._params["stream"])

    def keras_head(self, feature_shape: tuple[int, ...] | None = None):
        """The trained network; with binary=sigmoid, wrapped to give [1 - p, p] as ``predict_proba`` does."""
        import keras
        from keras import layers

        model = self.model_
        if model.outputs[0].shape[-1] != 1:
            return model
        inputs = keras.Input(feature_shape, name="transfer_values")
        p = model(inputs)
        outputs = layers.Concatenate(name="probabilities")([layers.Rescaling(-1.0, offset=1.0)(p), p])
        return keras.Model(inputs, outputs, name="dense_head_two_columns")

    def fit_stream(self, chunks, *, n_classes: int, y=None, input_shape=None, X_val=None, y_val=None) -> "Dense":
        """Train on passes of (X, y) chunks (``fit``'s HDF5 blocks) instead of one in-memory array.

        ``y`` holds every training label (for class weights); ``input_shape`` is one row's shape. Validation rows,
        when given, are held in memory.
        """
        self.n_classes_ = int(n_classes)
        self.classes_ = np.arange(self.n_classes_)
        self._train_stream = (chunks, tuple(input_shape))
        self.check_params(self._given)
        try:
            self._fit(None, np.asarray(y, dtype=np.int64), X_val,
                      None if y_val is None else np.asarray(y_val, dtype=np.int64))
        finally:
            self._train_stream = None
        return self

    def _sigmoid(self) -> bool:
        if self._params["binary"] != "sigmoid":
            return False
        if self.n_classes_ != 2:
            raise TransferCacheError(
                f"binary=sigmoid needs exactly two classes; this data has {self.n_classes_}; "
                f"drop --param binary=sigmoid"
            )
        return True

    def _build(self, input_shape, n_outputs, sigmoid):
        import keras
        from keras import layers

        p = self._params
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


@register
class Pixels(_KerasClassifier):
    """Raw-pixel baseline: seed 000's simple CNN trained from scratch on images resized to ``size``.

    Defaults: 32-pixel images, hidden=256, rmsprop 1e-3, batch_size=64 (seed 000: size=64, hidden=1024,
    learning_rate=1e-4, batch_size=32 took six times as long for no better accuracy).
    """

    name = "pixels"
    summary = "raw-pixel CNN baseline"
    input_kind = "pixels"
    spec = {
        "size": Param(32, "int", interval=at_least(2)),  # and 2 ** (conv blocks + 1): checked when built
        "filters": Param((32, 32, 64), "ints", interval=COUNT),
        **_DENSE_LAYERS,
        **_TRAINING,
    }

    @property
    def input_size(self) -> int:
        """The side of the images it takes (its export takes images resized to this)."""
        return int(self._params["size"])

    def keras_head(self, feature_shape: tuple[int, ...] | None = None):
        """The whole trained CNN: it takes the images themselves, not transfer values."""
        return self.model_

    def _build(self, input_shape, n_outputs, sigmoid):
        import keras
        from keras import layers

        p = self._params
        size = p["size"]
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise TransferCacheError(f"classifier 'pixels' trains on (N, H, W, 3) images; "
                                     f"got rows of shape {input_shape}")
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
