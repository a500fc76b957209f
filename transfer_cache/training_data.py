"""The rows ``fit`` trains and tests on: labelled rows of one or more caches of equal fingerprint (class names merged
by name, unlabelled rows left out), read from HDF5 a block at a time, and the raw images of those rows re-read
through each cache's source for the raw-pixel baseline."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ._errors import ImageError, TransferCacheError
from .cache import Cache, open_cache, read_rows

BLOCK_ROWS = 4096  # rows read from HDF5 at a time


@dataclass
class TrainingData:
    """Labelled rows of one or more caches of equal fingerprint, with class names merged by name."""

    caches: list[Cache]
    roles: list[str]  # "train" (positional) or "test" (--test-cache)
    layer: str
    class_names: list[str]
    cache_of: np.ndarray  # per labelled row: index into caches
    row_of: np.ndarray  # per labelled row: row index in its cache
    labels: np.ndarray
    split: np.ndarray
    paths: list[str]
    notes: list[str] = field(default_factory=list)
    use_views: bool = False  # train on the caches' augmented views (extract --augment)

    @property
    def config(self) -> dict:
        return self.caches[0].config

    @property
    def feature_config(self):
        """The (shared) feature configuration of the caches, typed."""
        return self.caches[0].feature_config

    @property
    def info(self):
        """Where the first cache's images came from (``cache.CacheInfo``)."""
        return self.caches[0].info

    def features(self, rows: np.ndarray) -> np.ndarray:
        """Features of the given labelled-row positions, read block by block (only those rows stay in memory)."""
        rows = np.asarray(rows, dtype=np.int64)
        shape = self.caches[0].features_for(self.layer).shape[1:]
        out = np.empty((len(rows),) + tuple(shape), dtype=np.float32)
        for k, cache in enumerate(self.caches):
            mine = np.flatnonzero(self.cache_of[rows] == k)
            if not len(mine):
                continue
            cache_rows = self.row_of[rows[mine]]
            order = np.argsort(cache_rows, kind="stable")
            out[mine[order]] = read_rows(cache.features_for(self.layer), cache_rows[order])
        return out

    def views(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augmented views aligned with ``rows``: (len(rows), K, D) and a mask of the rows that have them."""
        rows = np.asarray(rows, dtype=np.int64)
        first = self.caches[0]
        out = np.zeros((len(rows), first.n_views) + tuple(first.views.shape[2:]), dtype=np.float32)
        mask = np.zeros(len(rows), dtype=bool)
        for k, cache in enumerate(self.caches):
            where = {int(row): m for m, row in enumerate(cache.view_rows)}
            mine = [(j, where[int(self.row_of[r])]) for j, r in enumerate(rows)
                    if self.cache_of[r] == k and int(self.row_of[r]) in where]
            if not mine:
                continue
            positions = np.asarray([j for j, _ in mine])
            view_rows = np.asarray([m for _, m in mine])
            order = np.argsort(view_rows, kind="stable")
            out[positions[order]] = read_rows(cache.views, view_rows[order])
            mask[positions] = True
        return out, mask

    def chunks(self, rows: np.ndarray, *, seed: int, block_rows: int = BLOCK_ROWS):
        """A callable giving a fresh shuffled pass of (X, y) chunks over ``rows``, one HDF5 block at a time."""
        rows = np.asarray(rows, dtype=np.int64)
        rng = np.random.default_rng(seed)
        blocks = []
        for k, cache in enumerate(self.caches):
            mine = rows[self.cache_of[rows] == k]
            cache_rows = self.row_of[mine]
            order = np.argsort(cache_rows, kind="stable")
            mine, cache_rows = mine[order], cache_rows[order]
            for start in range(0, len(cache), block_rows):
                inside = (cache_rows >= start) & (cache_rows < start + block_rows)
                if inside.any():
                    blocks.append((k, start, min(len(cache), start + block_rows), cache_rows[inside], mine[inside]))

        def passes():
            for b in rng.permutation(len(blocks)):
                k, start, stop, cache_rows, positions = blocks[b]
                block = np.asarray(self.caches[k].features_for(self.layer)[start:stop], dtype=np.float32)
                X = block[cache_rows - start]
                shuffle = rng.permutation(len(positions))
                yield X[shuffle], self.labels[positions][shuffle]

        return passes

    def close(self) -> None:
        for cache in self.caches:
            cache.close()


def _open_all(paths: Sequence[str | os.PathLike]) -> list[Cache]:
    opened: list[Cache] = []
    try:
        for path in paths:
            opened.append(open_cache(path, check_vectors=True))  # NaN would stop a head with a traceback
    except BaseException:
        for cache in opened:
            cache.close()
        raise
    return opened


def _check_fingerprints(caches: list[Cache]) -> None:
    first = caches[0]
    for other in caches[1:]:
        if other.fingerprint != first.fingerprint:
            raise TransferCacheError(
                f"caches have different feature configurations: {first.path} (fingerprint {first.fingerprint}, "
                f"backbone {first.feature_config.backbone}) vs {other.path} (fingerprint {other.fingerprint}, backbone "
                f"{other.feature_config.backbone}); extract both with the same "
                f"--backbone/--layer/--pooling/--input-size"
            )


def load_training_data(cache_paths, test_cache, layer) -> TrainingData:
    paths = [cache_paths] if isinstance(cache_paths, (str, os.PathLike)) else list(cache_paths)
    if not paths:
        raise TransferCacheError("no cache given; "
                                 "pass one or more cache files made by python -m transfer_cache.extract")
    all_paths = paths + ([test_cache] if test_cache else [])
    caches = _open_all(all_paths)
    try:
        _check_fingerprints(caches)
        chosen = caches[0].layer_name(layer, must_choose=True)
        class_names: list[str] = []
        for cache in caches:
            for name in cache.class_names:
                if name not in class_names:
                    class_names.append(name)
        cache_of, row_of, labels, split, row_paths = [], [], [], [], []
        unlabelled = 0
        for k, cache in enumerate(caches):
            remap = np.asarray([class_names.index(name) for name in cache.class_names] or [0], dtype=np.int64)
            keep = np.flatnonzero(cache.labels >= 0)
            unlabelled += len(cache) - len(keep)  # (labels beyond the class names are refused when a cache opens)
            cache_of.append(np.full(len(keep), k, dtype=np.int64))
            row_of.append(keep)
            labels.append(remap[cache.labels[keep]])
            split.append(cache.split[keep] if k < len(paths) else np.full(len(keep), "test", dtype=object))
            row_paths.extend(cache.paths[i] for i in keep)
        if test_cache and not len(row_of[-1]) and any(len(keep) for keep in row_of[:-1]):
            test = caches[-1]  # named here: the split's own message cannot say which cache lacks labels
            test.require_rows("test on")
            raise TransferCacheError(
                f"the test cache {test.path} has no labelled rows (its {len(test)} rows are unlabelled, label -1): "
                "fit measures accuracy on labels; give --test-cache a cache extracted from labelled images"
            )
        data = TrainingData(
            caches=caches, roles=["train"] * len(paths) + (["test"] if test_cache else []), layer=chosen,
            class_names=class_names, cache_of=np.concatenate(cache_of), row_of=np.concatenate(row_of),
            labels=np.concatenate(labels).astype(np.int64), split=np.concatenate(split), paths=row_paths,
        )
        if unlabelled:
            data.notes.append(f"{unlabelled} unlabelled rows (label -1) are left out of training and testing")
        if not len(data.labels):
            if not any(len(cache) for cache in caches):
                caches[0].require_rows("train on")
            raise TransferCacheError(
                f"no labelled rows in {', '.join(str(c.path) for c in caches)}; fit needs labels (class folders or a "
                "label column in the manifest)"
            )
        if len(class_names) < 2:
            raise TransferCacheError(f"fit needs at least two classes; "
                                     f"the caches hold {len(class_names)} ({', '.join(class_names)})")
        return data
    except BaseException:
        for cache in caches:
            cache.close()
        raise




def reread_images(data: TrainingData, rows: np.ndarray, size: int, progress: bool) -> np.ndarray:
    """Re-read the images of ``rows`` through each cache's source (matched by path), resized as extraction did."""
    from tqdm import tqdm

    from .pipeline import prepare_image
    from .reread import ImageFinder

    out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    finders = {}
    for k, cache in enumerate(data.caches):
        if not np.any(data.cache_of[rows] == k):
            continue
        finders[k] = ImageFinder(cache)
        try:
            finders[k].source()
        except TransferCacheError as exc:
            raise TransferCacheError(
                f"classifier 'pixels' re-reads the images, but the source of {cache.path} ({finders[k].description}) "
                f"cannot be opened: {exc}"
            ) from None
    config = dataclasses.replace(data.feature_config, input_size=size)
    for j, row in enumerate(tqdm(rows, desc="reading images", unit="img", disable=not progress, leave=False)):
        source, index = finders[int(data.cache_of[row])].source()
        path = data.paths[row]
        if path not in index:
            raise TransferCacheError(
                f"classifier 'pixels' cannot find image '{path}' in {source.description}: the source changed since "
                "extraction; extract it again"
            )
        try:
            out[j] = prepare_image(source.load(index[path]), config=config)
        except ImageError as exc:
            raise TransferCacheError(f"classifier 'pixels' cannot read image '{path}' of {source.description}: "
                                     f"{exc}") from None
    return out
