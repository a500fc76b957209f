"""Arrays of images in ``.npz`` / ``.npy`` files, always loaded with ``allow_pickle=False``."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from .._errors import TransferCacheError
from .base import ArraySourceBase, Record, labels_array, normalise_split
from .registry import SourceKind, register


class ArraySource(ArraySourceBase):
    """A ``.npz`` (keys ``images`` or ``x``; optional ``labels``/``y``, ``class_names``, ``split``)
    or a ``.npy`` of images only (unlabelled).

    Files are always loaded with ``allow_pickle=False``: an array file never runs code, and
    ``class_names``/``split`` must be saved as string arrays (``np.array(names, dtype=str)``), not
    Python objects. A ``.npy`` is memory-mapped, so large arrays do not have to fit in memory.
    Record paths are the image index ("0", "1", ...). Without ``class_names`` the classes are
    "0" .. str(max label).
    """

    kind = "arrays"

    def __init__(self, path: str | os.PathLike):
        path = pathlib.Path(path).resolve()
        self.path = path
        self.description = f"arrays:{path}"
        self.name = path.stem
        self.failed = []
        what = f"array file '{path}'"
        try:
            if path.suffix.lower() == ".npy":
                images = np.load(path, mmap_mode="r", allow_pickle=False)
                labels = split = names = None
            else:
                with np.load(path, allow_pickle=False) as npz:
                    keys = set(npz.files)
                    image_key = next((k for k in ("images", "x") if k in keys), None)
                    if image_key is None:
                        raise TransferCacheError(
                            f"{what} has no 'images' (or 'x') array; got keys: "
                            f"{', '.join(sorted(keys)) or '(none)'}: save it with "
                            "np.savez(path, images=..., labels=...)"
                        )
                    label_key = next((k for k in ("labels", "y") if k in keys), None)
                    images = npz[image_key]
                    labels = npz[label_key] if label_key else None
                    names = npz["class_names"] if "class_names" in keys else None
                    split = npz["split"] if "split" in keys else None
        except TransferCacheError:
            raise
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
                raise TransferCacheError(
                    f"{what} stores Python objects, which are never unpickled (unsafe): save "
                    "images and labels as numeric arrays and class_names/split as string arrays "
                    "(np.array(names, dtype=str))"
                ) from None
            raise TransferCacheError(f"cannot read {what}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - zip/format errors of a damaged file
            raise TransferCacheError(f"cannot read {what}: {exc}") from None

        n = len(images) if images.ndim else 0
        if n == 0:
            raise TransferCacheError(f"{what} holds no images")
        self._set_arrays([images], [(0, j) for j in range(n)], what)

        if labels is None:
            label_list = np.full(n, -1, dtype=np.int64)
        else:
            label_list = labels_array(labels, n, what)
        if names is not None:
            names = np.asarray(names)
            if names.ndim != 1 or names.dtype.kind not in "US":
                raise TransferCacheError(
                    f"{what}: class_names must be a 1-D string array; got {names.dtype} {names.shape}"
                )
            class_names = [
                n_.decode("utf-8") if isinstance(n_, bytes) else str(n_) for n_ in names.tolist()
            ]
        else:
            top = int(label_list.max()) if n else -1
            class_names = [str(k) for k in range(top + 1)]
        if n and int(label_list.max()) >= len(class_names):
            raise TransferCacheError(
                f"{what}: label {int(label_list.max())} has no class name "
                f"({len(class_names)} class_names given): add the missing names"
            )
        if split is not None:
            split = np.asarray(split)
            if split.shape != (n,) or split.dtype.kind not in "US":
                raise TransferCacheError(
                    f"{what}: split must be a string array of shape ({n},); got {split.dtype} {split.shape}"
                )
            splits = []
            for value in split.tolist():
                value = value.decode("utf-8") if isinstance(value, bytes) else value
                canonical = normalise_split(value)
                if canonical is None:
                    raise TransferCacheError(
                        f"{what}: split values must be 'train', 'val', 'test' (or 'valid', "
                        f"'validation', or empty); got {value!r}"
                    )
                splits.append(canonical)
        else:
            splits = [""] * n
        self.class_names = class_names
        self.records = [Record(path=str(j), label=int(label_list[j]), split=splits[j]) for j in range(n)]


# --------------------------------------------------------------------------- CIFAR python batches


register(SourceKind(
    name="arrays", help="an array file (.npz or .npy)", open=lambda path, allow_outside_root: ArraySource(path),
    takes="file", suffixes=(".npz", ".npy"),
))
