"""``cache_tables.TABLES`` is the one declaration of a cache's per-row datasets: a throwaway column declared there (and
nowhere else) is written, read, validated, compared by extract's hit check and carried by merge."""

from __future__ import annotations

import dataclasses
import re

import h5py
import numpy as np
import pytest

from transfer_cache import TransferCacheError, cache_tables
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract, run_sharded_result

from conftest import make_class_folder

TINY = dict(backbone="tiny", weights="none", runtime="tensorflow", progress=False)


@pytest.fixture
def scratch_column(monkeypatch):
    """The clean-rows table with one more column: the length of each image's path, also a Cache attribute."""
    column = cache_tables.Column("path_lengths", "int", lambda row: len(row.path), attribute="path_lengths")
    tables = tuple(
        dataclasses.replace(table, columns=table.columns + (column,)) if table.name == cache_tables.CLEAN_ROWS
        else table
        for table in cache_tables.TABLES
    )
    monkeypatch.setattr(cache_tables, "TABLES", tables)
    return column


def test_a_declared_column_is_written_read_and_compared_by_the_hit_check(tmp_path, scratch_column):
    root = make_class_folder(tmp_path / "images", per_class=2)
    made = extract(str(root), cache_dir=tmp_path / "c", **TINY)
    with h5py.File(made.path, "r") as f:
        stored = f["path_lengths"][()].tolist()
    with open_cache(made.path) as cache:
        expected = [len(path) for path in cache.paths]
        assert stored == expected  # written from its declared value
        assert cache.tables["rows"]["path_lengths"].tolist() == expected  # read
        assert cache.path_lengths.tolist() == expected  # under its declared attribute
    assert extract(str(root), cache_dir=tmp_path / "c", **TINY).hit
    with h5py.File(made.path, "a") as f:  # a cache whose column disagrees with what extract would write
        f["path_lengths"][0] = 999
    again = extract(str(root), cache_dir=tmp_path / "c", **TINY)
    assert not again.hit and again.computed == 0  # not a hit: rewritten from the same vectors
    with open_cache(made.path) as cache:
        assert cache.path_lengths.tolist() == expected


def test_a_declared_column_is_validated_on_open(tmp_path, scratch_column):
    root = make_class_folder(tmp_path / "images", per_class=2)
    path = extract(str(root), cache_dir=tmp_path / "c", **TINY).path
    with h5py.File(path, "a") as f:
        del f["path_lengths"]
        f["path_lengths"] = np.arange(2)  # a length that disagrees with the other columns
    with pytest.raises(
        TransferCacheError, match=re.escape(f"cache {path} is inconsistent: its datasets differ in length")
    ):
        open_cache(path)
    with h5py.File(path, "a") as f:
        del f["path_lengths"]
    with pytest.raises(TransferCacheError, match=re.escape(f"cache {path} is damaged: /path_lengths is missing")):
        open_cache(path)


def test_merge_carries_a_declared_column(tmp_path, scratch_column):
    root = make_class_folder(tmp_path / "images", per_class=3)
    single = extract(str(root), cache_dir=tmp_path / "single", **TINY).path
    options = {k: v for k, v in TINY.items() if k != "progress"}
    merged = run_sharded_result(str(root), shards=3, engine="local", cache_dir=tmp_path / "sharded", **options).path
    with open_cache(single) as a, open_cache(merged) as b:
        assert b.path_lengths.tolist() == a.path_lengths.tolist() == [len(p) for p in b.paths]
