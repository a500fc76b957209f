"""Resume planning: what earlier work already holds, what is left to compute, and where each new row comes from.

An extraction never recomputes what it has: the previous cache of the same configuration (rows keyed by the content
digest of their image) and the parts of a killed run are ``PriorWork``; ``work_items`` lists what is left, and once
it is computed ``plan_rows`` lays out the new cache, each row with its ``RowOrigin``. ``is_hit`` says when the
previous cache already is exactly the file this run would write.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _atomic, cache_tables
from ._errors import TransferCacheError
from .cache import CLEAN_ROWS, Cache, Failure, ImageRow, NewerFormatError
from .feature_config import FeatureConfig
from .work_parts import WorkParts, part_key


@dataclass(frozen=True)
class WorkItem:
    """One forward pass to make: image ``index`` of the source (content ``digest``), view 0 (the clean image) or an
    augmented view 1..K."""

    index: int
    digest: str
    view: int = 0

    @property
    def key(self) -> str:
        """How its vectors are found among the parts."""
        return part_key(self.digest, self.view)


@dataclass(frozen=True)
class RowOrigin:
    """Where a row's vectors come from: row ``previous_row`` of the previous cache, or (None) this run's parts."""

    previous_row: int | None = None

    @property
    def from_parts(self) -> bool:
        return self.previous_row is None


@dataclass
class PriorWork:
    """What earlier work already holds: the previous cache of this configuration and a killed run's parts."""

    existing: Cache | None
    parts: WorkParts
    rows: dict[str, int] = field(default_factory=dict)  # digest -> row of the previous cache
    failed: dict[str, str] = field(default_factory=dict)  # digest -> why it could not be read
    views: dict[str, int] = field(default_factory=dict)  # digest -> entry of the previous cache's augmented views

    @classmethod
    def find(cls, path: Path, config: FeatureConfig) -> "PriorWork":
        existing = _open_existing(path)
        parts = WorkParts(path, layers=config.layers)
        parts.scan()
        prior = cls(existing=existing, parts=parts)
        if existing is not None:
            prior.rows = {digest: row for row, digest in enumerate(existing.ids)}
            prior.failed = {d: reason for d, (_, reason) in zip(existing.failed_ids, existing.failed) if d}
            if config.views:
                prior.views = {existing.ids[row]: m for m, row in enumerate(existing.view_rows.tolist())}
        prior.failed.update(parts.failed)
        return prior

    def has_all_views(self, digest: str, n_views: int) -> bool:
        return digest in self.views or all(part_key(digest, v) in self.parts for v in range(1, n_views + 1))

    def close(self) -> None:
        if self.existing is not None:
            self.existing.close()


def _open_existing(path: Path) -> Cache | None:
    """The previous cache at ``path``; an unreadable one is kept aside (never deleted) and recomputed."""
    if not path.exists():
        return None
    if path.is_dir():
        raise TransferCacheError(f"{path} is a folder, where this cache's file goes; move or rename it and run again")
    try:
        return Cache(path)
    except NewerFormatError:  # not damaged: another version's work is never deleted
        raise
    except TransferCacheError as exc:  # kept aside, not deleted: it may be a file the user still wants
        kept, number = path.with_name(path.name + ".unreadable"), 1
        while kept.exists():  # an earlier unreadable file is kept too
            number += 1
            kept = path.with_name(f"{path.name}.unreadable-{number}")
        with _atomic.translated(path, where="move it out of the cache folder and run again"):
            os.rename(path, kept)
        print(f"warning: {exc}; kept as {kept.name} and recomputing it", file=sys.stderr)
        return None


def augmentable(record) -> bool:
    """Training images get augmented views; so does every image of a source without splits (fit then keeps
    each image's views on the same side of its split). Validation and test images never do."""
    return record.split in ("train", "")


def image_row(src, index: int, digest: str) -> ImageRow:
    record = src.records[index]
    return ImageRow(digest=digest, path=record.path, label=int(record.label), split=record.split)


def work_items(src, planned, digests, prior: PriorWork, *, n_views: int) -> list[WorkItem]:
    """The forward passes still to make: images no earlier work holds, and their missing augmented views."""
    items: list[WorkItem] = []
    seen: set[str] = set()
    for i in planned:
        digest = digests[i]
        if digest in prior.failed or digest in seen:
            continue
        seen.add(digest)
        if digest not in prior.rows and digest not in prior.parts:
            items.append(WorkItem(i, digest))
        if n_views and augmentable(src.records[i]) and digest not in prior.views:
            missing = [WorkItem(i, digest, v) for v in range(1, n_views + 1)]
            items.extend(item for item in missing if item.key not in prior.parts)
    return items


@dataclass
class RowPlan:
    """The new cache's rows in source order, where each one's vectors come from, and the images that failed."""

    rows: list[ImageRow]
    origins: list[RowOrigin]
    images: list[int]  # the source index of each row
    failures: list[Failure]


def plan_rows(src, planned, digests, prior: PriorWork, listing_failed) -> RowPlan:
    """Lay out the new cache once the work is done: every image whose vectors exist somewhere, in source order."""
    plan = RowPlan(rows=[], origins=[], images=[], failures=[Failure(p, r) for p, r in listing_failed])
    failed_now = {**prior.failed, **prior.parts.failed}
    for i in planned:
        digest = digests[i]
        if digest in prior.parts:
            plan.origins.append(RowOrigin())
        elif digest in prior.rows:
            plan.origins.append(RowOrigin(prior.rows[digest]))
        else:
            reason = failed_now.get(digest, "not computed")
            plan.failures.append(Failure(src.records[i].path, reason, digest))
            continue
        plan.images.append(i)
        plan.rows.append(image_row(src, i, digest))
    if not plan.rows:
        reasons = "; ".join(f"{f.path}: {f.reason}" for f in plan.failures[:3])
        raise TransferCacheError(
            f"no image in {src.description} could be read ({len(plan.failures)} failed: {reasons})"
        )
    return plan


def is_hit(existing: Cache, src, planned, digests, listing_failed, known_failed) -> bool:
    """The previous cache holds exactly what this run would write: the same rows (every declared column of the
    clean rows), the same classes, the same failures."""
    expected = [image_row(src, i, digests[i]) for i in planned if digests[i] not in known_failed]
    declared = cache_tables.table(CLEAN_ROWS)
    wanted = declared.columns_of(expected)
    same_rows = all(
        np.asarray(existing.tables[CLEAN_ROWS][column.name]).tolist() == wanted[column.name]
        for column in declared.columns
    )
    failed_now = [p for p, _ in listing_failed] + [src.records[i].path for i in planned if digests[i] in known_failed]
    return (
        same_rows
        and existing.class_names == list(src.class_names)
        and sorted(p for p, _ in existing.failed) == sorted(failed_now)
    )
