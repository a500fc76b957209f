"""Extraction's work in progress: the durable per-batch results of an unfinished extraction.

While an extraction runs, each finished batch is written as its own small file in ``.<cache name>.parts/`` beside
the cache (temporary name, fsync, ``os.replace``), so a killed run loses at most the batch in flight and the next run
resumes from the parts it finds. The cache format knows nothing of them: extraction reads them back when it
assembles the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from ._atomic import replacing
from .cache_writer import disk_write_error


def part_key(digest: str, view: int = 0) -> str:
    """How a part names one forward pass: the image's digest, and ``digest:view`` for augmented view 1..K."""
    return digest if view == 0 else f"{digest}:{view}"


class WorkParts:
    """The durable per-batch results of an unfinished extraction, in ``.<cache name>.parts/``.

    Each part is an ``.npz`` with the content digests of its rows, one feature array per layer, the
    images that failed in that batch, and what the batch cost (seconds, images computed), so a resumed
    cache records the cost of every run that made it, not only the last one. Parts are written to a temporary
    name, fsynced and renamed, so a part that exists is complete; a partial temporary file from a killed run is
    swept on the next start.
    """

    def __init__(self, cache_path: Path, *, layers: Sequence[str]):
        cache_path = Path(cache_path)
        self.folder = cache_path.with_name(f".{cache_path.name}.parts")
        self.layers = list(layers)
        self._index: dict[str, tuple[Path, int]] = {}
        self._failed: dict[str, str] = {}
        self._next = 0
        self.earlier_seconds = 0.0  # what the parts found by scan() cost the runs that wrote them
        self.earlier_computed = 0
        self._loaded: "OrderedDict[Path, dict[str, np.ndarray]]" = OrderedDict()

    def scan(self) -> None:
        """Index the finished parts; sweep temporary files left by a killed run."""
        self._index.clear()
        self._failed.clear()
        self.earlier_seconds, self.earlier_computed = 0.0, 0
        if not self.folder.is_dir():
            return
        for stale in self.folder.glob("*.tmp*"):
            stale.unlink(missing_ok=True)
        for part in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as data:
                    ids = data["ids"].tolist()
                    for k, layer in enumerate(self.layers):
                        if data[f"f{k}"].shape[0] != len(ids):
                            raise ValueError("row count mismatch")
                    failed_ids = data["failed_ids"].tolist()
                    failed_reasons = data["failed_reasons"].tolist()
                    cost = (float(data["seconds"]), int(data["computed"])) if "seconds" in data.files else (0.0, 0)
            except Exception:  # a damaged part is recomputed, never read
                part.unlink(missing_ok=True)
                continue
            for row, digest in enumerate(ids):
                self._index[digest] = (part, row)
            self._failed.update(zip(failed_ids, failed_reasons))
            self.earlier_seconds += cost[0]
            self.earlier_computed += cost[1]
            self._next = max(self._next, int(part.stem.split("-")[1]) + 1)

    def __contains__(self, digest: str) -> bool:
        return digest in self._index

    @property
    def failed(self) -> dict[str, str]:
        return dict(self._failed)

    def write(
        self, ids: Sequence[str], features: Sequence[np.ndarray], failed: Sequence[tuple[str, str]] = (), *,
        seconds: float = 0.0, computed: int = 0,
    ) -> None:
        """Make one batch durable: after this returns, a crash cannot lose it (nor what it cost)."""
        final = self.folder / f"part-{self._next:08d}.npz"
        arrays = {"ids": np.asarray(list(ids), dtype="U80")}  # a digest, or "digest:view" for an augmented view
        for k, array in enumerate(features):
            arrays[f"f{k}"] = np.asarray(array)
        arrays["failed_ids"] = np.asarray([digest for digest, _ in failed], dtype="U80")
        arrays["failed_reasons"] = np.asarray([reason for _, reason in failed], dtype=str)
        arrays["seconds"], arrays["computed"] = np.float64(seconds), np.int64(computed)
        # the temporary (.part-NNNNNNNN.npz.tmp-PID.npz) is one the sweep above removes when a run is killed
        with replacing(final, keep_suffix=True, error=disk_write_error) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)
        for row, digest in enumerate(ids):
            self._index[digest] = (final, row)
        self._failed.update(failed)
        self._next += 1

    def features(self, digest: str) -> list[np.ndarray]:
        """The vectors of one image, read through a small cache of recently used parts."""
        part, row = self._index[digest]
        data = self._loaded.get(part)
        if data is None:
            with np.load(part, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
            self._loaded[part] = data
            if len(self._loaded) > 8:
                self._loaded.popitem(last=False)
        else:
            self._loaded.move_to_end(part)
        return [data[f"f{k}"][row] for k in range(len(self.layers))]

    def remove(self) -> None:
        if self.folder.is_dir():
            for item in self.folder.iterdir():
                item.unlink(missing_ok=True)
            self.folder.rmdir()
        self._loaded.clear()
