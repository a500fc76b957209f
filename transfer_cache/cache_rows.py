"""The rows of one or more caches as one table whose vectors stay on disk: a *row reader*.

``inspect`` looks at a cache plus, optionally, a test cache as one table (the cache's rows, then the test cache's);
``neighbors`` at one cache. Their labels, paths, digests and splits are small and held in memory; their vectors
(5 GB at a million rows of 1280 float32) are not: ``read(rows)`` reads the rows asked for, from whichever cache
holds them, so the neighbour index, the findings and the label-error search stream blocks instead of holding a copy.
Any object with ``__len__`` and ``read(rows)`` is a row reader to those consumers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CacheRows:
    """The rows of the opened caches, the first cache then the next; class names are merged by name, so a class
    keeps one label whichever cache lists it, and in whatever order. Keep it open while reading (``with``)."""

    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # remapped to ``class_names``
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, cache)
    class_names: list[str] = field(default_factory=list)
    parts: list[tuple] = field(default_factory=list)  # (open Cache, layer, first row in the table)
    _added: list[tuple] = field(default_factory=list)  # (cache path, test?) of each part
    _text: dict = field(default_factory=dict)  # the text columns once read
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _kept: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    # the text columns are read from the caches on first use: a neighbour query at a million rows needs none of them
    @property
    def ids(self) -> list[str]:
        return self._joined("ids", lambda opened, path, test: opened.ids)

    @property
    def paths(self) -> list[str]:
        return self._joined("paths", lambda opened, path, test: opened.paths)

    @property
    def split(self) -> list[str]:
        return self._joined("split", lambda opened, path, test: ["test"] * len(opened) if test
                            else [str(s) for s in opened.split])

    @property
    def origin(self) -> list[str]:
        """Which cache file each row comes from."""
        return self._joined("origin", lambda opened, path, test: [str(path)] * len(opened))

    def _joined(self, name: str, values) -> list[str]:
        if name not in self._text:
            self._text[name] = [value for (opened, _, _), (path, test) in zip(self.parts, self._added)
                                for value in values(opened, path, test)]
        return self._text[name]

    def __enter__(self) -> "CacheRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def keep_open(self, opened) -> None:
        """Close ``opened`` with the table (once, however often it is given)."""
        if all(part[0] is not opened for part in self.parts) and opened not in self._kept:
            self._kept.append(opened)
            self._stack.callback(opened.close)

    @property
    def dim(self) -> int:
        opened, layer, _ = self.parts[0]
        return int(np.prod(opened.features_for(layer).shape[1:]))

    def add(self, opened, *, path, layer: str | None, test: bool) -> None:
        """Append one open cache's rows (all "test" when it is the test cache); the table closes it."""
        self.keep_open(opened)
        names = list(opened.class_names)
        for name in names:
            if name not in self.class_names:
                self.class_names.append(name)
        remap = np.asarray([self.class_names.index(n) for n in names] or [0], dtype=np.int64)
        self.parts.append((opened, opened.layer_name(layer), len(self)))
        self._added.append((path, test))
        self._text.clear()
        self.labels = np.concatenate([self.labels, np.where(opened.labels >= 0, remap[np.maximum(opened.labels, 0)],
                                                            -1)])
        self.failed.extend((str(p), str(reason), str(path)) for p, reason in opened.failed)

    def read(self, rows) -> np.ndarray:
        """The vectors of ``rows`` (table row numbers, any order) as float32 (len(rows), D), in the order asked."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        for index, (opened, layer, first) in enumerate(self.parts):
            stop = self.parts[index + 1][2] if index + 1 < len(self.parts) else len(self)
            wanted = np.flatnonzero((rows >= first) & (rows < stop))
            if not len(wanted):
                continue
            unique, back = np.unique(rows[wanted] - first, return_inverse=True)
            out[wanted] = opened.read_rows(unique, layer=layer).reshape(len(unique), -1)[back]
        return out

    def blocks(self, *, block_rows: int = 16384):
        """(first row, vectors) of consecutive blocks of rows, in order: one pass over the vectors."""
        for start in range(0, len(self), block_rows):
            yield start, self.read(np.arange(start, min(len(self), start + block_rows)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every vector in memory: for the consumers that still take an array (small tables)."""
        whole = self.read(np.arange(len(self)))
        return whole if dtype is None else whole.astype(dtype)

    def index_key(self) -> dict:
        """What the vectors of this table depend on: a kept neighbour index is valid while this is unchanged."""
        return {"caches": [{"name": opened.path.name, "fingerprint": opened.fingerprint, "rows": len(opened),
                            "created": str(opened.info.created), "modified_ns": opened.path.stat().st_mtime_ns,
                            "layer": layer}
                           for opened, layer, _ in self.parts]}

    @property
    def first_path(self):
        return self.parts[0][0].path
