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


# --------------------------------------------------------------------------- text columns read on first use


@pytest.fixture
def written(tmp_path):
    """A real cache of 300 rows with distinct paths and a mix of splits."""
    from conftest import write_synthetic_cache

    n = 300
    path = tmp_path / "c.h5"
    write_synthetic_cache(path, features=np.random.default_rng(0).random((n, 8), dtype=np.float32),
                          labels=np.arange(n) % 2, paths=[f"photos/é_{i:04d}.jpg" for i in range(n)],
                          split=["train", "test", "val"] * (n // 3))
    return path


def test_opening_a_cache_reads_no_text_column_until_one_is_asked_for(written):
    with open_cache(written) as cache:
        assert len(cache) == 300 and cache.labels[:4].tolist() == [0, 1, 0, 1]
        assert "paths" not in cache.__dict__ and "paths" not in dict.keys(cache.tables["rows"])
        assert cache.paths[299] == "photos/é_0299.jpg"  # read now, from the file
        assert list(cache.split[:4]) == ["train", "test", "val", "train"] and cache.split.dtype == object
        with h5py.File(written, "r") as f:  # the file itself is the oracle
            assert cache.ids == [v.decode() for v in f["ids"][()]]


def test_a_few_rows_of_a_text_column_are_read_alone_in_the_order_asked(written):
    with open_cache(written) as cache:
        assert cache.values_at("paths", [7, 2, 7, 299]) == [
            "photos/é_0007.jpg", "photos/é_0002.jpg", "photos/é_0007.jpg", "photos/é_0299.jpg"]
        assert "paths" not in cache.__dict__  # the whole column was not read for them
        assert cache.values_at("split", np.array([1, 0])) == ["test", "train"]
        cache.paths  # noqa: B018  (read whole: the same values from it)
        assert cache.values_at("paths", [7, 2]) == ["photos/é_0007.jpg", "photos/é_0002.jpg"]


def test_a_text_column_asked_for_after_closing_says_so(written):
    with open_cache(written) as cache:
        pass
    with pytest.raises(TransferCacheError, match=re.escape(
            f"cache {written} was closed before its paths were read; read them while it is open (inside its with "
            "block)")):
        cache.paths  # noqa: B018
    with pytest.raises(TransferCacheError, match=re.escape(
            f"cache {written} is closed; read its ids while it is open (inside its with block)")):
        cache.values_at("ids", [0])


def test_a_damaged_text_column_is_refused_in_one_line_when_read(written):
    with h5py.File(written, "a") as f:
        paths = f["paths"][()]
        del f["paths"]
        paths[3] = b"\xff\xfe not utf-8"
        f["paths"] = paths
    with open_cache(written) as cache:
        damaged = re.escape(f"cannot read cache {written}: the file is damaged (")
        with pytest.raises(TransferCacheError, match=damaged):
            cache.values_at("paths", [3])
        with pytest.raises(TransferCacheError, match=damaged):
            cache.paths  # noqa: B018
