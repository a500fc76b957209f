"""Assembling the new cache: every row's vectors copied from the previous cache or read from this run's parts,
block by block, into one file written atomically (``cache_writer``)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from . import cache_tables
from ._versions import library_versions
from .cache import CLEAN_ROWS, CacheInfo, ViewEntry
from .cache_writer import TableData, write_tables
from .extraction_plan import PriorWork, RowPlan, augmentable
from .feature_config import FeatureConfig
from .shards import Shard
from .work_parts import part_key


def _feature_reader(plan: RowPlan, prior: PriorWork, config: FeatureConfig, shapes):
    """Blocks of the new cache's vectors, copied from the previous cache or read from this run's parts."""

    def feature_rows(start: int, stop: int):
        block = [np.empty((stop - start,) + tuple(shape), dtype=config.dtype) for shape in shapes]
        origins = plan.origins[start:stop]
        old = [(k, origin.previous_row) for k, origin in enumerate(origins) if not origin.from_parts]
        if old:
            unique, inverse = np.unique(np.asarray([row for _, row in old]), return_inverse=True)
            for layer_index, layer_name in enumerate(config.layers):
                values = prior.existing.features_for(layer_name)[unique.tolist()]
                for (k, _), j in zip(old, inverse):
                    block[layer_index][k] = values[j]
        for k, origin in enumerate(origins):
            if origin.from_parts:
                for layer_index, vector in enumerate(prior.parts.features(plan.rows[start + k].digest)):
                    block[layer_index][k] = vector
        return block

    return feature_rows


def _views_table(src, plan: RowPlan, prior: PriorWork, config: FeatureConfig, shapes) -> TableData | None:
    """The rows that have all their augmented views, and a block reader of those views (None without views)."""
    n_views = config.views
    if not n_views:
        return None
    view_rows = [
        row
        for row, i in enumerate(plan.images)
        if augmentable(src.records[i]) and prior.has_all_views(plan.rows[row].digest, n_views)
    ]

    def view_features(start: int, stop: int):
        block = np.empty((stop - start, n_views) + tuple(shapes[0]), dtype=config.dtype)
        for k, row in enumerate(view_rows[start:stop]):
            digest = plan.rows[row].digest
            if part_key(digest, 1) in prior.parts:
                for v in range(n_views):
                    block[k, v] = prior.parts.features(part_key(digest, v + 1))[0]
            else:
                block[k] = prior.existing.views[prior.views[digest]]
        return [block]

    columns = cache_tables.table("augmented").columns_of(ViewEntry(row) for row in view_rows)
    return TableData(columns, features=view_features, shapes=[(n_views,) + tuple(shapes[0])])


def cache_attrs(config: FeatureConfig, src, shard: Shard | None, *, seconds: float, computed: int) -> dict:
    """The root attributes: the feature configuration, where the images came from, and what the cache cost."""
    info = CacheInfo(
        source=src.description,
        source_kind=src.kind,
        source_root=str(src.root or ""),
        shard=shard.spec if shard else "",
        versions=library_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extraction_seconds=round(seconds, 3),
        extraction_computed=computed,
    )
    attrs = config.as_dict()
    attrs.update(class_names=list(src.class_names), **info.as_attrs())
    return attrs


def row_shapes(plan: RowPlan, prior: PriorWork, config: FeatureConfig):
    """The per-row shape of each layer's vectors, from whichever earlier work holds the first row."""
    first = plan.rows[0].digest
    if first in prior.parts:
        return [vector.shape for vector in prior.parts.features(first)]
    return [prior.existing.features_for(layer).shape[1:] for layer in config.layers]


def write_new_cache(path: Path, src, plan: RowPlan, prior: PriorWork, config: FeatureConfig, *, attrs: dict,
                    shapes) -> Path:
    """Every table of the new cache, written atomically."""
    tables = {
        CLEAN_ROWS: TableData(
            cache_tables.table(CLEAN_ROWS).columns_of(plan.rows),
            features=_feature_reader(plan, prior, config, shapes), shapes=[tuple(s) for s in shapes],
        ),
        "failed": TableData(cache_tables.table("failed").columns_of(plan.failures)),
    }
    views = _views_table(src, plan, prior, config, shapes)
    if views is not None:
        tables["augmented"] = views
    return write_tables(path, attrs=attrs, tables=tables)
