"""Datasets named rather than found on disk: ``keras:<name>`` (downloaded by Keras) and ``sklearn:digits`` (bundled)."""

from __future__ import annotations

import numpy as np

from .._checks import one_of
from .._errors import TransferCacheError
from .base import ArraySourceBase, Record, labels_array
from .cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from .registry import SourceKind, register

KERAS_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist")
SKLEARN_DATASETS = ("digits",)
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
]
_KERAS_CLASSES = {
    "cifar10": CIFAR10_CLASSES,
    "cifar100": CIFAR100_CLASSES,
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": FASHION_MNIST_CLASSES,
}



class KerasSource(ArraySourceBase):
    """``keras.datasets.<name>.load_data()``: downloads on first use, then reads Keras' local copy.

    Record paths are "train/<index>" and "test/<index>"; class names are the datasets' published
    label names. Offline without a local copy this raises a TransferCacheError that says so.
    """

    kind = "keras"

    def __init__(self, dataset: str):
        one_of(dataset, KERAS_DATASETS, "keras dataset")
        self.description = f"keras:{dataset}"
        self.name = dataset
        self.failed = []
        try:
            import keras

            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, dataset).load_data()
        except Exception as exc:  # noqa: BLE001 - keras raises a bare Exception on URL failures
            raise TransferCacheError(
                f"could not download the keras dataset {dataset!r} (no network?): download it on a "
                "connected machine, or point SOURCE at a local copy (a CIFAR batch folder or an "
                f"image folder) [{type(exc).__name__}: {exc}]"
            ) from None
        what = f"keras dataset {dataset!r}"
        arrays, where, records = [], [], []
        for a, (split, x, y) in enumerate((("train", x_train, y_train), ("test", x_test, y_test))):
            labels = labels_array(y, len(x), what)
            arrays.append(np.asarray(x))
            for j in range(len(x)):
                where.append((a, j))
                records.append(Record(path=f"{split}/{j}", label=int(labels[j]), split=split))
        self._set_arrays(arrays, where, what)
        self.class_names = list(_KERAS_CLASSES[dataset])
        self.records = records


class SklearnSource(ArraySourceBase):
    """scikit-learn's bundled ``digits``: 1797 8x8 grayscale digits, offline.

    Values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``) and stored as uint8; labels 0..9,
    class names "0".."9", no split.
    """

    kind = "sklearn"

    def __init__(self, dataset: str):
        one_of(dataset, SKLEARN_DATASETS, "scikit-learn dataset")
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
        self.description = f"sklearn:{dataset}"
        self.name = dataset
        self.failed = []
        self._set_arrays([images], [(0, j) for j in range(len(images))], self.description)
        self.class_names = [str(int(k)) for k in digits.target_names]
        self.records = [Record(path=str(j), label=int(t), split="") for j, t in enumerate(digits.target)]


register(SourceKind(
    name="keras", help=", ".join(f"keras:{name}" for name in KERAS_DATASETS),
    open=lambda name, allow_outside_root: KerasSource(name),
    takes="name",
))
register(SourceKind(
    name="sklearn", help=", ".join(f"sklearn:{name}" for name in SKLEARN_DATASETS),
    open=lambda name, allow_outside_root: SklearnSource(name), takes="name",
))
