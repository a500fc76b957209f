"""Image sources: one interface over folders, CSV manifests, arrays, CIFAR batches, Keras and sklearn datasets.

The extraction asks a source only for its records (path, label, split), its class names, a
content digest per image, and the decoded image (uint8 (H, W, 3) RGB via ``_imaging``). Listing
happens once, up front, so that every layout mistake is a :class:`TransferCacheError` before any
work starts; single unreadable entries found while listing go to ``Source.failed`` and images that
cannot be decoded raise :class:`ImageError` from ``Source.load``, which the extraction records and
skips. ``load``, ``read_bytes`` and ``digest`` open their own file handles (or read immutable
arrays), so tf.data workers can call them from several threads.

``open_source(spec)`` understands:

- an image folder: ``root/<class>/<image>`` or ``root/<split>/<class>/<image>``;
- a CSV manifest ``*.csv`` with columns ``path,label[,split]``;
- arrays ``*.npz`` / ``*.npy``;
- a CIFAR-10/100 "python version" batch folder;
- ``keras:cifar10``, ``keras:cifar100``, ``keras:mnist``, ``keras:fashion_mnist``;
- ``sklearn:digits``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pathlib
import pickle
import re
import stat
import warnings
from dataclasses import dataclass

import numpy as np

from ._errors import ImageError, TransferCacheError
from ._imaging import decode_image, to_rgb_array

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.numeric import _frombuffer as _np_frombuffer

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
KERAS_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist")
SKLEARN_DATASETS = ("digits",)
#: Folders that are never classes: macOS zip leftovers.
_IGNORED_FOLDERS = frozenset({"__MACOSX"})

SOURCE_HELP = (
    "SOURCE can be an image folder (root/<class>/<image> or root/<split>/<class>/<image>), "
    "a CSV manifest (.csv with columns path,label[,split]), an array file (.npz or .npy), "
    "a CIFAR-10/100 python batch folder, keras:cifar10, keras:cifar100, keras:mnist, "
    "keras:fashion_mnist, or sklearn:digits"
)

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


@dataclass(frozen=True)
class Record:
    """One image of a source: where it is, its class index (-1 = unlabelled) and its split."""

    path: str
    label: int
    split: str


def _normalise_split(value: str) -> str | None:
    """Map train/test/val/valid/validation (any case) and "" to the canonical split, else None."""
    value = value.strip()
    if value == "":
        return ""
    return SPLIT_ALIASES.get(value.lower())


def _display(name: str) -> str:
    """A UTF-8-safe rendering of a file name that may hold undecodable bytes (surrogate escapes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sha256_array(array: np.ndarray) -> str:
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


# --------------------------------------------------------------------------- file-backed sources


class _FileSource(Source):
    """Records are files under ``root``; every call opens its own handle (thread-safe)."""

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


def _has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


class FolderSource(_FileSource):
    """An image folder in the layout of Keras ``image_dataset_from_directory``.

    ``root/<class>/<image>`` or ``root/<split>/<class>/<image>`` (split folders train, test, val,
    valid, validation, any case; valid/validation become "val"). Images are found by extension
    (jpg jpeg png bmp gif tif tiff webp, any case) anywhere below a class folder; other files are
    ignored. Hidden files and folders (leading dot) and ``__MACOSX`` are skipped. Symbolic links
    are followed; a link back to a parent folder, an unreadable folder, a broken link to an image
    and a name that is not valid UTF-8 are recorded in ``failed``, as are images lying outside any
    class folder. Class names are the sorted union over splits. An empty class folder keeps its
    class, so label indices do not depend on which images happen to be present, and triggers a
    ``UserWarning`` (it is not an image failure, so it is not in ``failed``).
    """

    kind = "folder"

    def __init__(self, root: str | os.PathLike):
        self.root = pathlib.Path(root).resolve()
        self.description = f"folder:{self.root}"
        self.name = self.root.name or "root"
        self.failed = []
        self._list()

    # -- listing helpers
    def _scandir(self, folder: str, rel: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except PermissionError:
            self.failed.append((rel or ".", "cannot list folder: permission denied"))
        except OSError as exc:
            self.failed.append((rel or ".", f"cannot list folder: {exc.strerror or exc}"))
        return []

    def _entry_kind(self, entry: os.DirEntry, rel: str) -> str | None:
        """'dir', 'file' or None (recorded in failed or silently ignored)."""
        try:
            if entry.is_dir(follow_symlinks=True):
                return "dir"
            if entry.is_file(follow_symlinks=True):
                return "file"
            if entry.is_symlink() and _has_image_extension(entry.name):
                self.failed.append((rel, "broken symbolic link"))
            return None
        except OSError as exc:  # e.g. ELOOP for a link that points at itself
            if entry.is_symlink():
                self.failed.append((rel, f"broken symbolic link: {exc.strerror or exc}"))
            else:
                self.failed.append((rel, f"cannot read entry: {exc.strerror or exc}"))
            return None

    def _visible(self, entry: os.DirEntry, rel_parent: str) -> tuple[str, bool]:
        """(relative path, usable) for an entry; records undecodable names in failed."""
        rel = f"{rel_parent}/{entry.name}" if rel_parent else entry.name
        if not _is_utf8(entry.name):
            self.failed.append((_display(rel), "file name is not valid UTF-8: rename it"))
            return _display(rel), False
        return rel, True

    def _walk_class(self, folder: str, rel: str, ancestors: tuple[tuple[int, int], ...]) -> list[str]:
        """Relative paths of the images below one class folder (recursive)."""
        try:
            st = os.stat(folder)
        except OSError as exc:
            self.failed.append((rel, f"cannot read folder: {exc.strerror or exc}"))
            return []
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            self.failed.append((rel, "symbolic link loop (points back to a parent folder)"))
            return []
        ancestors = ancestors + (key,)
        found: list[str] = []
        for entry in self._scandir(folder, rel):
            if entry.name.startswith("."):
                continue
            kind = self._entry_kind(entry, f"{rel}/{_display(entry.name)}")
            if kind is None:
                continue
            child, ok = self._visible(entry, rel)
            if not ok:
                continue
            if kind == "dir":
                found.extend(self._walk_class(entry.path, child, ancestors))
            elif _has_image_extension(entry.name):
                found.append(child)
        return found

    def _top_folders(self, folder: str, rel: str, loose: list[str]) -> list[tuple[str, str]]:
        """(name, relative path) of the visible sub-folders; images found beside them go to ``loose``."""
        folders = []
        for entry in self._scandir(folder, rel):
            if entry.name.startswith(".") or entry.name in _IGNORED_FOLDERS:
                continue
            entry_rel = f"{rel}/{_display(entry.name)}" if rel else _display(entry.name)
            kind = self._entry_kind(entry, entry_rel)
            if kind is None:
                continue
            child, ok = self._visible(entry, rel)
            if not ok:
                continue
            if kind == "dir":
                folders.append((entry.name, child))
            elif _has_image_extension(entry.name):
                loose.append(child)
        return folders

    def _list(self) -> None:
        root = str(self.root)
        root_st = os.stat(root)
        ancestors = ((root_st.st_dev, root_st.st_ino),)
        loose: list[str] = []
        top = self._top_folders(root, "", loose)
        split_folders = [(n, r) for n, r in top if _normalise_split(n)]
        class_folders = [(n, r) for n, r in top if not _normalise_split(n)]
        if split_folders and class_folders:
            raise TransferCacheError(
                f"folder '{root}' mixes split folders ({', '.join(n for n, _ in split_folders)}) with "
                f"other folders ({', '.join(n for n, _ in class_folders)}): use either "
                "root/<class>/<image> or root/<split>/<class>/<image> with splits train, val "
                "(or valid, validation) and test, and move the other folders out"
            )
        # (split, class name, relative folder)
        layout: list[tuple[str, str, str]] = []
        if split_folders:
            seen: dict[str, str] = {}
            for name, rel in split_folders:
                split = _normalise_split(name)
                if split in seen:
                    raise TransferCacheError(
                        f"folder '{root}' has two folders for the {split!r} split: "
                        f"'{seen[split]}' and '{name}': merge them into one"
                    )
                seen[split] = name
                for class_name, class_rel in self._top_folders(os.path.join(root, rel), rel, loose):
                    layout.append((split, class_name, class_rel))
        else:
            layout = [("", name, rel) for name, rel in class_folders]
        expected = "root/<split>/<class>/<image>" if split_folders else "root/<class>/<image>"
        self.failed.extend((p, f"image outside a class folder (expected {expected})") for p in loose)

        class_names = sorted({class_name for _, class_name, _ in layout})
        index = {name: i for i, name in enumerate(class_names)}
        records: list[Record] = []
        per_class: dict[str, int] = {name: 0 for name in class_names}
        for split, class_name, rel in layout:
            paths = self._walk_class(os.path.join(root, rel), rel, ancestors)
            per_class[class_name] += len(paths)
            records.extend(Record(path=p, label=index[class_name], split=split) for p in paths)
        if not records:
            details = ""
            if self.failed:
                first_path, first_reason = self.failed[0]
                details = (
                    f" ({len(self.failed)} entries could not be used, e.g. {first_path}: {first_reason})"
                )
            raise TransferCacheError(
                f"folder '{root}' contains no images{details}: expected root/<class>/<image> or "
                f"root/<split>/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}"
            )
        for class_name, count in per_class.items():
            if count == 0:
                warnings.warn(
                    f"class folder '{class_name}' in '{root}' has no images; the class is kept so "
                    "that label indices stay the same",
                    UserWarning,
                    stacklevel=3,
                )
        records.sort(key=lambda r: r.path)
        self.class_names = class_names
        self.records = records


def _class_sort_key(names: list[str]):
    """Numeric order when every class name is an integer ("2" before "10"), else string order."""
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return lambda n: (int(n), n)
    return lambda n: n


class CsvSource(_FileSource):
    """A CSV manifest: a header row with ``path`` and ``label`` columns and an optional ``split``.

    Paths are relative to the manifest's folder (absolute paths are accepted when they lie inside
    it); a path that leads outside that folder is refused unless ``allow_outside_root=True``. The
    check is on the written path (``..`` components), not on where symbolic links point, so a
    dataset folder linked into place still works. ``label`` is a class name, or empty for an
    unlabelled image; class names are sorted (numerically when all are integers). ``split`` is
    train, test, val (valid, validation) or empty. Other columns are ignored. Files that do not
    exist and repeated paths are recorded in ``failed``.
    """

    kind = "csv"

    def __init__(self, manifest: str | os.PathLike, *, allow_outside_root: bool = False):
        manifest = pathlib.Path(manifest).resolve()
        self.manifest = manifest
        self.root = manifest.parent
        self.description = f"csv:{manifest}"
        self.name = manifest.stem
        self.failed = []
        self._read(allow_outside_root)

    def _read(self, allow_outside_root: bool) -> None:
        manifest = self.manifest
        try:
            with open(manifest, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.reader(fh))
        except UnicodeDecodeError as exc:
            raise TransferCacheError(
                f"manifest '{manifest}' is not valid UTF-8 text ({exc.reason} at byte {exc.start}): "
                "save it as UTF-8 CSV"
            ) from None
        except csv.Error as exc:
            raise TransferCacheError(f"manifest '{manifest}' is not a valid CSV file: {exc}") from None
        except OSError as exc:
            raise TransferCacheError(f"cannot read manifest '{manifest}': {exc.strerror or exc}") from None
        expected = "path,label[,split]"
        if not rows:
            raise TransferCacheError(
                f"manifest '{manifest}' is empty: expected a header row with columns {expected}"
            )
        header = [h.strip().lower() for h in rows[0]]
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise TransferCacheError(
                f"manifest '{manifest}' must have a header row with columns {expected}; "
                f"got columns: {', '.join(rows[0]) or '(none)'} (missing {', '.join(missing)})"
            )
        col_path, col_label = header.index("path"), header.index("label")
        col_split = header.index("split") if "split" in header else None
        root = os.path.normpath(str(self.root))
        entries: list[tuple[int, str, str, str]] = []  # (line, relative path, label, split)
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) <= max(col_path, col_label, col_split or 0):
                raise TransferCacheError(
                    f"manifest '{manifest}' line {line}: expected {len(header)} columns "
                    f"({', '.join(rows[0])}); got {len(row)}: {','.join(row)!r}"
                )
            raw_path = row[col_path].strip()
            if not raw_path:
                raise TransferCacheError(f"manifest '{manifest}' line {line}: the path is empty")
            full = os.path.normpath(os.path.join(root, raw_path))
            inside = os.path.commonpath([root, full]) == root
            if not inside and not allow_outside_root:
                raise TransferCacheError(
                    f"manifest '{manifest}' line {line}: path {raw_path!r} leads outside the "
                    f"manifest's folder '{root}': move the images below that folder, or pass "
                    "allow_outside_root=True (--allow-outside-root) if you trust the manifest"
                )
            rel = pathlib.PurePath(os.path.relpath(full, root)).as_posix()
            split = ""
            if col_split is not None:
                split = _normalise_split(row[col_split])
                if split is None:
                    raise TransferCacheError(
                        f"manifest '{manifest}' line {line}: split must be one of 'train', 'val', "
                        f"'test' (or 'valid', 'validation', or empty); got {row[col_split]!r}"
                    )
            entries.append((line, rel, row[col_label].strip(), split))
        if not entries:
            raise TransferCacheError(f"manifest '{manifest}' lists no images: add rows under the header")

        names = sorted({label for _, _, label, _ in entries if label})
        names.sort(key=_class_sort_key(names))
        index = {name: i for i, name in enumerate(names)}
        first_line: dict[str, int] = {}
        records = []
        for line, rel, label, split in entries:
            if rel in first_line:
                self.failed.append((rel, f"duplicate row (line {line} repeats line {first_line[rel]})"))
                continue
            first_line[rel] = line
            if not os.path.isfile(os.path.join(root, rel)):
                self.failed.append((rel, "file not found"))
                continue
            records.append(Record(path=rel, label=index[label] if label else -1, split=split))
        if not records:
            raise TransferCacheError(
                f"manifest '{manifest}': none of its {len(entries)} images can be used "
                f"(e.g. {self.failed[0][0]}: {self.failed[0][1]}): paths are relative to the "
                "manifest's folder"
            )
        records.sort(key=lambda r: r.path)
        self.class_names = names
        self.records = records


# --------------------------------------------------------------------------- array-backed sources


class _ArraySource(Source):
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
        return _sha256_array(self._image(i))

    def load(self, i: int) -> np.ndarray:
        a, _ = self._where[i]
        return to_rgb_array(self._image(i), float_range=self._float_range[a])


def _labels_array(labels, n: int, what: str) -> np.ndarray:
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


class ArraySource(_ArraySource):
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
            label_list = _labels_array(labels, n, what)
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
                canonical = _normalise_split(value)
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


class CifarSource(_ArraySource):
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
        if cifar100:
            meta_file, names_key, labels_key = "meta", "fine_label_names", "fine_labels"
            batches = [("train", "train"), ("test", "test")]
            self.name = "cifar100"
        else:
            meta_file, names_key, labels_key = "batches.meta", "label_names", "labels"
            numbered = [
                p.name for p in self.root.glob("data_batch_*") if re.fullmatch(r"data_batch_\d+", p.name)
            ]
            numbered.sort(key=lambda s: int(s.rsplit("_", 1)[1]))
            batches = [(b, "train") for b in numbered] + [("test_batch", "test")]
            self.name = "cifar10"
        meta = _read_cifar_pickle(self.root / meta_file)
        if names_key not in meta:
            raise TransferCacheError(
                f"CIFAR meta file '{self.root / meta_file}' has no {names_key!r}; got keys: "
                f"{', '.join(map(str, meta))}"
            )
        self.class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[names_key]]

        arrays, where, records = [], [], []
        for batch, split in batches:
            path = self.root / batch
            if not path.is_file():
                continue
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
            labels = _labels_array(content[labels_key], len(data), what)
            if len(labels) and int(labels.max()) >= len(self.class_names):
                raise TransferCacheError(
                    f"{what}: label {int(labels.max())} has no name in '{meta_file}' "
                    f"({len(self.class_names)} names)"
                )
            images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
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


# --------------------------------------------------------------------------- bundled datasets


class KerasSource(_ArraySource):
    """``keras.datasets.<name>.load_data()``: downloads on first use, then reads Keras' local copy.

    Record paths are "train/<index>" and "test/<index>"; class names are the datasets' published
    label names. Offline without a local copy this raises a TransferCacheError that says so.
    """

    kind = "keras"

    def __init__(self, dataset: str):
        if dataset not in KERAS_DATASETS:
            raise TransferCacheError(
                f"keras dataset must be one of {', '.join(repr(d) for d in KERAS_DATASETS)}; "
                f"got {dataset!r}"
            )
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
            labels = _labels_array(y, len(x), what)
            arrays.append(np.asarray(x))
            for j in range(len(x)):
                where.append((a, j))
                records.append(Record(path=f"{split}/{j}", label=int(labels[j]), split=split))
        self._set_arrays(arrays, where, what)
        self.class_names = list(_KERAS_CLASSES[dataset])
        self.records = records


class SklearnSource(_ArraySource):
    """scikit-learn's bundled ``digits``: 1797 8x8 grayscale digits, offline.

    Values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``) and stored as uint8; labels 0..9,
    class names "0".."9", no split.
    """

    kind = "sklearn"

    def __init__(self, dataset: str):
        if dataset not in SKLEARN_DATASETS:
            raise TransferCacheError(
                f"scikit-learn dataset must be one of {', '.join(repr(d) for d in SKLEARN_DATASETS)}; "
                f"got {dataset!r}"
            )
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
        self.description = f"sklearn:{dataset}"
        self.name = dataset
        self.failed = []
        self._set_arrays([images], [(0, j) for j in range(len(images))], self.description)
        self.class_names = [str(int(k)) for k in digits.target_names]
        self.records = [Record(path=str(j), label=int(t), split="") for j, t in enumerate(digits.target)]


# --------------------------------------------------------------------------- dispatch


_DESCRIPTION_KINDS = ("folder", "csv", "arrays", "cifar")


def open_source(spec: str | os.PathLike, *, allow_outside_root: bool = False) -> Source:
    """Open the image source named by ``spec`` (see the module docstring for what it can be).

    A source's ``description`` is also a valid spec (``open_source(s.description)`` reopens ``s``):
    the prefixes folder:, csv:, arrays: and cifar: force that kind for the path that follows.

    ``allow_outside_root`` lets a CSV manifest list files outside its own folder.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TransferCacheError(
            f"SOURCE must be a string or a path; got {type(spec).__name__}: {SOURCE_HELP}"
        )
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.startswith("keras:"):
        return KerasSource(text[len("keras:"):])
    if text.startswith("sklearn:"):
        return SklearnSource(text[len("sklearn:"):])
    # A source's own description ("folder:/abs/root", "csv:/abs/m.csv", ...) opens it again as that kind.
    forced = next((k for k in _DESCRIPTION_KINDS if text.startswith(k + ":")), None)
    if forced:
        text = text[len(forced) + 1 :]
    if not text:
        raise TransferCacheError(f"SOURCE is empty: {SOURCE_HELP}")
    path = pathlib.Path(text)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TransferCacheError(f"SOURCE '{text}' does not exist: {SOURCE_HELP}") from None
    except OSError as exc:
        raise TransferCacheError(f"cannot open SOURCE '{text}': {exc.strerror or exc}") from None
    if forced:
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir != (forced in ("folder", "cifar")):
            expected = "a folder" if forced in ("folder", "cifar") else "a file"
            raise TransferCacheError(f"SOURCE '{forced}:{text}' must name {expected}: {SOURCE_HELP}")
        if forced == "folder":
            return FolderSource(path)
        if forced == "cifar":
            return CifarSource(path)
        if forced == "csv":
            return CsvSource(path, allow_outside_root=allow_outside_root)
        return ArraySource(path)
    if stat.S_ISDIR(st.st_mode):
        if _is_cifar_folder(path):
            return CifarSource(path)
        return FolderSource(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CsvSource(path, allow_outside_root=allow_outside_root)
    if suffix in (".npz", ".npy"):
        return ArraySource(path)
    raise TransferCacheError(f"SOURCE '{text}' is a file but not .csv, .npz or .npy: {SOURCE_HELP}")


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
]


def reopen(description: str) -> tuple[Source, dict[str, int]]:
    """Open the source a cache was made from again, its records indexed by path (thumbnails, the raw-pixel baseline).

    ``description`` is the cache's ``source`` attribute. Paths outside a manifest's folder are allowed here: the
    user already chose to extract those images.
    """
    source = open_source(description, allow_outside_root=True)
    return source, {record.path: i for i, record in enumerate(source.records)}
