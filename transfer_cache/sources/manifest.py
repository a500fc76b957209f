"""A CSV manifest: ``path,label[,split]``, paths relative to the manifest."""

from __future__ import annotations

import csv
import os
import pathlib

from .._checks import one_of
from .._errors import TransferCacheError
from .base import FileSource, Record, class_sort_key, normalise_split
from .registry import SourceKind, register

#: The columns a manifest must have, as every message about its header names them.
_EXPECTED_COLUMNS = "path,label[,split]"


class CsvSource(FileSource):
    """A CSV manifest: a header row with ``path`` and ``label`` columns and an optional ``split``.

    Paths are relative to the manifest's folder (absolute paths are accepted when they lie inside
    it); a path that leads outside that folder is refused unless ``allow_outside_root=True``, by its
    ``..`` components or through a symbolic link inside the folder (a manifest is often someone
    else's file: where its paths really lead is what counts). ``label`` is a class name, or empty for an
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
        """The manifest in three steps: its CSV rows, the entries they list (each checked and named by its line),
        then the records of the images that exist (the others go to ``failed``)."""
        rows = self._csv_rows()
        entries = self._entries(rows, allow_outside_root)
        self._set_records(entries)

    def _csv_rows(self) -> list[list[str]]:
        """Every row of the file, the header first; a file that is not UTF-8 CSV is one line naming it."""
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
        if not rows:
            raise TransferCacheError(
                f"manifest '{manifest}' is empty: expected a header row with columns {_EXPECTED_COLUMNS}"
            )
        return rows

    def _columns(self, rows: list[list[str]]) -> tuple[list[str], int, int, int | None]:
        """(header, path column, label column, split column or None): other columns are ignored, in any order."""
        header = [h.strip().lower() for h in rows[0]]
        missing = [c for c in ("path", "label") if c not in header]
        if missing:
            raise TransferCacheError(
                f"manifest '{self.manifest}' must have a header row with columns {_EXPECTED_COLUMNS}; "
                f"got columns: {', '.join(rows[0]) or '(none)'} (missing {', '.join(missing)})"
            )
        col_split = header.index("split") if "split" in header else None
        return header, header.index("path"), header.index("label"), col_split

    def _entries(self, rows: list[list[str]], allow_outside_root: bool) -> list[tuple[int, str, str, str]]:
        """(line, relative path, label, split) of every row that is not blank; a malformed row stops the reading."""
        manifest = self.manifest
        header, col_path, col_label, col_split = self._columns(rows)
        root = os.path.normpath(str(self.root))
        real_root = os.path.realpath(root)
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
            rel = self._relative_path(raw_path, line=line, root=root, real_root=real_root,
                                      allow_outside_root=allow_outside_root)
            split = ""
            if col_split is not None:
                split = normalise_split(row[col_split])
                if split is None:  # not a spelling of a split: named as given, with the spellings accepted
                    one_of(row[col_split], ("train", "val", "test"), f"manifest '{manifest}' line {line}: split",
                           also=" (or 'valid', 'validation', or empty)")
            entries.append((line, rel, row[col_label].strip(), split))
        if not entries:
            raise TransferCacheError(f"manifest '{manifest}' lists no images: add rows under the header")
        return entries

    def _relative_path(self, raw_path: str, *, line: int, root: str, real_root: str, allow_outside_root: bool) -> str:
        """The path relative to the manifest's folder, refused when it leads outside it: by its text, then (a
        manifest is often someone else's file) by where its symbolic links really lead."""
        full = os.path.normpath(os.path.join(root, raw_path))
        # the text of the path, then where its symbolic links lead: a link inside the folder may point outside
        inside = os.path.commonpath([root, full]) == root
        linked_out = False
        if inside and not allow_outside_root:  # one lstat per component: only where the answer is used
            try:
                real = os.path.realpath(full)
            except ValueError:  # a NUL byte: no such file anywhere, recorded as not found below
                real = full
            linked_out = os.path.commonpath([real_root, real]) != real_root
        if (linked_out or not inside) and not allow_outside_root:
            how = f"through a symbolic link to '{real}'" if linked_out else ""
            raise TransferCacheError(
                f"manifest '{self.manifest}' line {line}: path {raw_path!r} leads outside the "
                f"manifest's folder '{root}'{' ' + how if how else ''}: move the images below that folder, or "
                "pass allow_outside_root=True (--allow-outside-root) if you trust the manifest"
            )
        return pathlib.PurePath(os.path.relpath(full, root)).as_posix()

    def _set_records(self, entries: list[tuple[int, str, str, str]]) -> None:
        """Class names (sorted, numerically when all are integers) and the records of the listed files that exist;
        a repeated or missing file is recorded in ``failed``, and a manifest with no usable image is refused."""
        root = os.path.normpath(str(self.root))
        names = sorted({label for _, _, label, _ in entries if label})
        names.sort(key=class_sort_key(names))
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
                f"manifest '{self.manifest}': none of its {len(entries)} images can be used "
                f"(e.g. {self.failed[0][0]}: {self.failed[0][1]}): paths are relative to the "
                "manifest's folder"
            )
        records.sort(key=lambda r: r.path)
        self.class_names = names
        self.records = records


register(SourceKind(
    name="csv", help="a CSV manifest (.csv with columns path,label[,split])",
    open=lambda path, allow_outside_root: CsvSource(path, allow_outside_root=allow_outside_root), takes="file",
    suffixes=(".csv",),
))
