"""What every image source is: records (path, label, split), class names, failures, and per image its content digest
and decoded pixels. ``load``, ``read_bytes`` and ``digest`` open their own file handles (or read immutable arrays),
so decoding workers can call them from several threads."""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
from dataclasses import dataclass

import numpy as np

from .._errors import ImageError, TransferCacheError
from .._imaging import decode_image, decode_resized, resize_image, to_rgb_array

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
#: Folder names and CSV values accepted for each split (compared case-insensitively).
SPLIT_ALIASES = {
    "train": "train",
    "test": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}
#: Folders that are never classes: macOS zip leftovers.

@dataclass(frozen=True)
class Record:
    """One image of a source: where it is, its class index (-1 = unlabelled) and its split."""

    path: str
    label: int
    split: str


def normalise_split(value: str) -> str | None:
    """Map train/test/val/valid/validation (any case) and "" to the canonical split, else None."""
    value = value.strip()
    if value == "":
        return ""
    return SPLIT_ALIASES.get(value.lower())


def class_sort_key(names: list[str]):
    """Numeric order when every class name is an integer ("2" before "10"), else string order."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return lambda n: (int(n), n)
    return lambda n: n


def _display(name: str) -> str:
    """A UTF-8-safe rendering of a file name that may hold undecodable bytes (surrogate escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sha256_array(array: np.ndarray) -> str:
    """Digest of an in-memory image: its bytes, shape and dtype, so equal pixels give equal ids."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(array.tobytes())
    h.update(repr(tuple(array.shape)).encode())
    h.update(array.dtype.str.encode())
    return h.hexdigest()


class Source:
    """Base class: the interface the extraction uses. Subclasses fill the attributes in ``__init__``."""

    kind: str = ""
    description: str = ""
    name: str = ""
    root: pathlib.Path | None = None
    class_names: list[str]
    records: list[Record]
    failed: list[tuple[str, str]]
    #: whether records are encoded files (a decoding applies) rather than arrays (used whole)
    decodes_files: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.description}: {len(self)} images, "
            f"{len(self.class_names)} classes, {len(self.failed)} failed>"
        )

    def read_bytes(self, i: int) -> bytes | None:
        """The encoded file bytes of record ``i``, or None for array-backed sources."""
        raise NotImplementedError

    def digest(self, i: int) -> str:
        """sha256 hex of record ``i``'s content (file bytes, or array bytes + shape + dtype)."""
        raise NotImplementedError

    def load(self, i: int) -> np.ndarray:
        """Record ``i`` as a uint8 (H, W, 3) RGB array; raises ImageError when it cannot be read."""
        raise NotImplementedError

    def load_resized(self, i: int, *, size: int, policy: str, crop_fraction: float, interpolation: str,
                     decoding: str = "full") -> np.ndarray:
        """``resize_image(self.load(i), ...)``: record ``i`` as extraction feeds it to the backbone (a source may do it
        in fewer steps, pixel for pixel the same). ``decoding`` applies to encoded files; arrays are used whole."""
        return resize_image(self.load(i), size=size, policy=policy, crop_fraction=crop_fraction,
                            interpolation=interpolation)


# --------------------------------------------------------------------------- file-backed sources


class FileSource(Source):
    """Records are files under ``root``; every call opens its own handle (thread-safe)."""

    decodes_files = True

    def _file(self, i: int) -> str:
        return os.path.join(self.root, self.records[i].path)

    def read_bytes(self, i: int) -> bytes:
        path = self._file(i)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except IsADirectoryError:
            raise ImageError("not a file (is a folder)") from None
        except PermissionError:
            raise ImageError("cannot read file: permission denied") from None
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from None

    def digest(self, i: int) -> str:
        return hashlib.sha256(self.read_bytes(i)).hexdigest()

    def load(self, i: int) -> np.ndarray:
        return decode_image(self.read_bytes(i), name=self.records[i].path)

    def load_resized(self, i: int, *, size: int, policy: str, crop_fraction: float, interpolation: str,
                     decoding: str = "full") -> np.ndarray:
        return decode_resized(self.read_bytes(i), size=size, policy=policy, crop_fraction=crop_fraction,
                              interpolation=interpolation, decoding=decoding, name=self.records[i].path)


# --------------------------------------------------------------------------- array-backed sources


class ArraySourceBase(Source):
    """Images held in memory (or memory-mapped): record i is ``self._arrays[a][j]``."""

    root = None

    def _set_arrays(self, arrays: list[np.ndarray], where: list[tuple[int, int]], what: str) -> None:
        for array in arrays:
            shape = array.shape
            if not (array.ndim == 3 or (array.ndim == 4 and shape[3] in (1, 3, 4))) or 0 in shape[1:]:
                raise TransferCacheError(
                    f"{what}: images must be an array of shape (N, H, W), (N, H, W, 1), (N, H, W, 3) "
                    f"or (N, H, W, 4); got {shape}"
                )
            if array.dtype.kind not in "biuf":
                raise TransferCacheError(
                    f"{what}: images must hold integers, booleans or floats; got dtype {array.dtype}"
                )
        self._arrays = arrays
        self._where = where
        # One float range per array, decided on the whole array (see to_rgb_array).
        self._float_range = []
        for array in arrays:
            if array.dtype.kind == "f" and array.size:
                low, high = float(np.nanmin(array)), float(np.nanmax(array))
                self._float_range.append("0-1" if low >= 0.0 and high <= 1.0 else "0-255")
            else:
                self._float_range.append("auto")

    def _image(self, i: int) -> np.ndarray:
        a, j = self._where[i]
        return self._arrays[a][j]

    def read_bytes(self, i: int) -> None:
        return None

    def digest(self, i: int) -> str:
        return sha256_array(self._image(i))

    def load(self, i: int) -> np.ndarray:
        a, _ = self._where[i]
        return to_rgb_array(self._image(i), float_range=self._float_range[a])


def labels_array(labels, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # Keras datasets give (N, 1)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise TransferCacheError(
            f"{what}: labels must be integers of shape ({n},) (one per image); "
            f"got {labels.dtype} {labels.shape}"
        )
    if n and int(labels.min()) < -1:
        raise TransferCacheError(
            f"{what}: labels must be class indices >= 0, or -1 for unlabelled; got {int(labels.min())}"
        )
    return labels.astype(np.int64)
