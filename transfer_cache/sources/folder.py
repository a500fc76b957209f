"""An image folder: ``root/<class>/<image>`` or ``root/<split>/<class>/<image>`` (the layout of Keras'
``image_dataset_from_directory`` and of every seed), listed once with every unusable entry recorded."""

from __future__ import annotations

import os
import pathlib
import warnings

from .._errors import TransferCacheError
from .base import IMAGE_EXTENSIONS, FileSource, Record, _display, _is_utf8, normalise_split
from .registry import SourceKind, register

#: Folders that are never classes: macOS zip leftovers.
_IGNORED_FOLDERS = frozenset({"__MACOSX"})


def _has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


class FolderSource(FileSource):
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
        """Every image below the class folders, labelled by its class folder; an empty class keeps its index."""
        root = str(self.root)
        root_st = os.stat(root)
        ancestors = ((root_st.st_dev, root_st.st_ino),)
        layout = self._layout(root)
        class_names = sorted({class_name for _, class_name, _ in layout})
        index = {name: i for i, name in enumerate(class_names)}
        records: list[Record] = []
        per_class: dict[str, int] = {name: 0 for name in class_names}
        for split, class_name, rel in layout:
            paths = self._walk_class(os.path.join(root, rel), rel, ancestors)
            per_class[class_name] += len(paths)
            records.extend(Record(path=p, label=index[class_name], split=split) for p in paths)
        if not records:
            raise self._no_images_error(root)
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

    def _layout(self, root: str) -> list[tuple[str, str, str]]:
        """(split, class name, relative folder) of every class folder, in either layout (the two cannot be mixed);
        images lying beside the folders are recorded in ``failed``."""
        loose: list[str] = []
        top = self._top_folders(root, "", loose)
        split_folders = [(n, r) for n, r in top if normalise_split(n)]
        class_folders = [(n, r) for n, r in top if not normalise_split(n)]
        if split_folders and class_folders:
            raise TransferCacheError(
                f"folder '{root}' mixes split folders ({', '.join(n for n, _ in split_folders)}) with "
                f"other folders ({', '.join(n for n, _ in class_folders)}): use either "
                "root/<class>/<image> or root/<split>/<class>/<image> with splits train, val "
                "(or valid, validation) and test, and move the other folders out"
            )
        if split_folders:
            layout = self._split_layout(root, split_folders, loose)
        else:
            layout = [("", name, rel) for name, rel in class_folders]
        expected = "root/<split>/<class>/<image>" if split_folders else "root/<class>/<image>"
        self.failed.extend((p, f"image outside a class folder (expected {expected})") for p in loose)
        return layout

    def _split_layout(self, root: str, split_folders: list[tuple[str, str]], loose: list[str]):
        """(split, class name, relative folder) below the split folders; two folders for one split (say "val" and
        "validation") are refused rather than silently merged."""
        layout: list[tuple[str, str, str]] = []
        seen: dict[str, str] = {}
        for name, rel in split_folders:
            split = normalise_split(name)
            if split in seen:
                raise TransferCacheError(
                    f"folder '{root}' has two folders for the {split!r} split: "
                    f"'{seen[split]}' and '{name}': merge them into one"
                )
            seen[split] = name
            for class_name, class_rel in self._top_folders(os.path.join(root, rel), rel, loose):
                layout.append((split, class_name, class_rel))
        return layout

    def _no_images_error(self, root: str) -> TransferCacheError:
        """The error for a folder without a usable image, naming the first entry that could not be used."""
        details = ""
        if self.failed:
            first_path, first_reason = self.failed[0]
            details = (
                f" ({len(self.failed)} entries could not be used, e.g. {first_path}: {first_reason})"
            )
        return TransferCacheError(
            f"folder '{root}' contains no images{details}: expected root/<class>/<image> or "
            f"root/<split>/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)}"
        )


register(SourceKind(
    name="folder", help="an image folder (root/<class>/<image> or root/<split>/<class>/<image>)",
    open=lambda path, allow_outside_root: FolderSource(path), takes="folder", fallback=True, keras_listing=True,
))
