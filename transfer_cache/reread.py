"""A cache's images read again by path, through the source they were extracted from: the thumbnails of figures and
pages, and the raw images of the pixel baseline. One reader, so every stage finds an image the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._errors import ImageError, TransferCacheError
from ._imaging import decode_image
from .sources import Source, reopen


class ImageFinder:
    """Re-reads a cache's images by path: through its source (reopened once, when first needed) or from
    ``source_root``/path."""

    def __init__(self, cache):
        self.info = cache.info
        self._source: Source | None = None
        self._index: dict[str, int] | None = None
        self._source_error = ""

    @property
    def description(self) -> str:
        """The cache's ``source`` attribute: what is opened again."""
        return str(self.info.source)

    def source(self) -> tuple[Source, dict[str, int]]:
        """The source opened again, with its records indexed by path; TransferCacheError when it cannot be opened."""
        if self._source is None:
            self._source, self._index = reopen(self.description)
        return self._source, self._index

    def load(self, path: str) -> np.ndarray:
        """The image at ``path``, from the source or else from ``source_root``; ImageError saying why when neither
        has it."""
        if self._index is None:
            try:
                self.source()
            except TransferCacheError as exc:
                self._index, self._source_error = {}, str(exc)
        if self._source is not None and path in self._index:
            return self._source.load(self._index[path])
        root = self.info.source_root
        if root:
            file = Path(root) / path
            if file.is_file():
                return decode_image(file.read_bytes())
        reason = self._source_error or f"not found in source {self.info.source!r}"
        raise ImageError(f"cannot re-read {path}: {reason}")
