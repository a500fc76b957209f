"""Image sources: one interface over folders, CSV manifests, arrays, CIFAR batches, Keras and sklearn datasets.

The extraction asks a source only for its records (path, label, split), its class names, a
content digest per image, and the decoded image (uint8 (H, W, 3) RGB via ``_imaging``). Listing
happens once, up front, so that every layout mistake is a :class:`TransferCacheError` before any
work starts; single unreadable entries found while listing go to ``Source.failed`` and images that
cannot be decoded raise :class:`ImageError` from ``Source.load``, which the extraction records and
skips. ``load``, ``read_bytes`` and ``digest`` open their own file handles (or read immutable
arrays), so the decode threads of ``pipeline`` can call them side by side.

``open_source(spec)`` asks the registry of source kinds (``registry``), one module per kind: ``folder``,
``manifest`` (CSV), ``arrays`` (.npz/.npy), ``cifar`` (batch folders) and ``named`` (``keras:``, ``sklearn:``).
``source_help()`` lists them.
"""

from .base import IMAGE_EXTENSIONS, SPLIT_ALIASES, SPLITS, Record, Source  # noqa: F401
from .registry import KINDS, SourceKind, kind_of, open_source, register, reopen, source_help  # noqa: F401

# each kind registers itself; folders no other kind claims fall back to the plain image folder
from .named import KERAS_DATASETS, SKLEARN_DATASETS, KerasSource, SklearnSource  # noqa: E402,F401
from .cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, CifarSource  # noqa: E402,F401
from .folder import FolderSource  # noqa: E402,F401
from .manifest import CsvSource  # noqa: E402,F401
from .arrays import ArraySource  # noqa: E402,F401

from .._plugins import import_submodules  # noqa: E402

import_submodules(__name__, __path__)  # any other kind module registers itself by being in this folder
SOURCE_HELP = source_help()

__all__ = [
    "IMAGE_EXTENSIONS",
    "KERAS_DATASETS",
    "SKLEARN_DATASETS",
    "Record",
    "Source",
    "FolderSource",
    "CsvSource",
    "ArraySource",
    "CifarSource",
    "KerasSource",
    "SklearnSource",
    "open_source",
    "reopen",
    "source_help",
]
