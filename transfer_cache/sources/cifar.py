"""CIFAR-10/100 "python version" batch folders, read with a restricted unpickler (numpy arrays only)."""

from __future__ import annotations

import os
import pathlib
import pickle
import re

import numpy as np

from .._errors import TransferCacheError
from .base import ArraySourceBase, Record, labels_array
from .registry import SourceKind, register

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.numeric import _frombuffer as _np_frombuffer

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
# The fine label names of CIFAR-100 in label order (alphabetical), as in its ``meta`` file.
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


class _ForbiddenPickle(pickle.UnpicklingError):
    """The pickle asks for something a CIFAR batch never needs."""


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches and nothing else: the only globals allowed are numpy's array and
    dtype constructors (``_reconstruct``/``ndarray``/``dtype`` as written by the original Python 2
    batches, plus ``_frombuffer`` as written by pickle protocol 5), under numpy 1 and 2 module
    names. Every other global (os.system, builtins.eval, ...) is refused, so a hostile file cannot
    run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _ForbiddenPickle(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid):
        raise _ForbiddenPickle("persistent ids are not allowed")


def _read_cifar_pickle(path: pathlib.Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _CifarUnpickler(fh, encoding="bytes").load()
    except _ForbiddenPickle as exc:
        raise TransferCacheError(
            f"refusing to read CIFAR batch '{path}': {exc}; a CIFAR python batch holds only "
            "dicts, lists, bytes and numpy arrays, so this file is not one (or was tampered with)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated or damaged pickle
        raise TransferCacheError(
            f"cannot read CIFAR batch '{path}': {type(exc).__name__}: {exc}: download the "
            "'python version' of CIFAR again"
        ) from None
    if not isinstance(obj, dict):
        raise TransferCacheError(f"CIFAR batch '{path}' does not hold a dict; got {type(obj).__name__}")
    # Keys are bytes in the original (Python 2) files; accept str keys from re-saved copies.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _is_cifar_folder(path: pathlib.Path) -> bool:
    cifar10 = (path / "data_batch_1").is_file() or (path / "test_batch").is_file()
    return (cifar10 and (path / "batches.meta").is_file()) or (
        (path / "meta").is_file() and ((path / "train").is_file() or (path / "test").is_file())
    )


class CifarSource(ArraySourceBase):
    """A CIFAR-10 or CIFAR-100 "python version" folder (as extracted from cifar-*-python.tar.gz).

    CIFAR-10: ``data_batch_1`` .. ``data_batch_5`` (split "train"), ``test_batch`` ("test") and
    ``batches.meta`` (``label_names``). CIFAR-100: ``train``, ``test`` and ``meta``
    (``fine_label_names``; labels are the fine labels). Batches present are used, missing ones are
    skipped. The files are pickles and are read with a restricted unpickler that allows numpy's
    array constructors only. Record paths are "<batch>/<index>", e.g. "data_batch_1/17".
    """

    kind = "cifar"

    def __init__(self, root: str | os.PathLike):
        self.root = pathlib.Path(root).resolve()
        self.description = f"cifar:{self.root}"
        self.failed = []
        cifar100 = (self.root / "meta").is_file() and not (self.root / "batches.meta").is_file()
        meta_file, names_key, labels_key, batches = _edition_files(self.root, cifar100=cifar100)
        self.name = "cifar100" if cifar100 else "cifar10"
        self.class_names = _class_names(self.root / meta_file, names_key=names_key)

        arrays, where, records = [], [], []
        for batch, split in batches:
            path = self.root / batch
            if not path.is_file():
                continue
            images, labels = _read_batch(path, labels_key=labels_key, class_names=self.class_names,
                                         meta_file=meta_file)
            a = len(arrays)
            arrays.append(images)
            for j in range(len(images)):
                where.append((a, j))
                records.append(Record(path=f"{batch}/{j}", label=int(labels[j]), split=split))
        if not records:
            expected = "train, test" if cifar100 else "data_batch_1 .. data_batch_5, test_batch"
            raise TransferCacheError(
                f"CIFAR folder '{self.root}' has no batch files: expected {expected} next to {meta_file}"
            )
        self._set_arrays(arrays, where, f"CIFAR folder '{self.root}'")
        self.records = records


def _edition_files(root: pathlib.Path, *, cifar100: bool) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(meta file, class names key, labels key, [(batch file, split)]) of CIFAR-100 or CIFAR-10, whose numbered
    training batches are taken in numeric order however many there are (data_batch_10 after data_batch_9)."""
    if cifar100:
        return "meta", "fine_label_names", "fine_labels", [("train", "train"), ("test", "test")]
    numbered = [
        p.name for p in root.glob("data_batch_*") if re.fullmatch(r"data_batch_\d+", p.name)
    ]
    numbered.sort(key=lambda s: int(s.rsplit("_", 1)[1]))
    return "batches.meta", "label_names", "labels", [(b, "train") for b in numbered] + [("test_batch", "test")]


def _class_names(meta_path: pathlib.Path, *, names_key: str) -> list[str]:
    """The class names in label order, from the edition's meta file."""
    meta = _read_cifar_pickle(meta_path)
    if names_key not in meta:
        raise TransferCacheError(
            f"CIFAR meta file '{meta_path}' has no {names_key!r}; got keys: "
            f"{', '.join(map(str, meta))}"
        )
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[names_key]]


def _read_batch(path: pathlib.Path, *, labels_key: str, class_names: list[str], meta_file: str):
    """(images (N, 32, 32, 3) uint8, labels) of one batch file, checked before any row is used: the stored rows are
    channels first, 3072 bytes each."""
    content = _read_cifar_pickle(path)
    what = f"CIFAR batch '{path}'"
    if "data" not in content or labels_key not in content:
        raise TransferCacheError(
            f"{what} must hold 'data' and {labels_key!r}; got keys: {', '.join(map(str, content))}"
        )
    data = np.asarray(content["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise TransferCacheError(
            f"{what}: 'data' must be uint8 of shape (N, 3072) (32x32 RGB, channels first); "
            f"got {data.dtype} {data.shape}"
        )
    labels = labels_array(content[labels_key], len(data), what)
    if len(labels) and int(labels.max()) >= len(class_names):
        raise TransferCacheError(
            f"{what}: label {int(labels.max())} has no name in '{meta_file}' "
            f"({len(class_names)} names)"
        )
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


register(SourceKind(
    name="cifar", help="a CIFAR-10/100 python batch folder", open=lambda path, allow_outside_root: CifarSource(path),
    takes="folder", claims=_is_cifar_folder,
))
