"""Merging shard caches: real sharded extractions with the tiny network, and small synthetic caches for the refusals."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.cache import Rows, cache_filename, fingerprint, open_cache, write_cache
from transfer_cache.extract import extract
from transfer_cache.merge import main, merge

from conftest import make_class_folder, synthetic_attrs

TINY = dict(backbone="tiny", weights="none", progress=False)


def _attrs(**overrides) -> dict:
    return synthetic_attrs(
        **{"class_names": ["a", "b"], "source": "folder:/data/pets", "source_root": "/data/pets", **overrides}
    )


def _base(attrs: dict) -> str:
    name = cache_filename(
        source_name="pets", source_description=attrs["source"], backbone=attrs["backbone"],
        fingerprint=fingerprint(attrs),
    )
    return name[: -len(".h5")]


def _synthetic_shards(folder: Path, *, n: int, rows: int, dim: int = 6, seed: int = 0, **overrides) -> list[Path]:
    """n shard caches of ``rows`` rows each, as extract --shard K/N would name and mark them."""
    attrs = _attrs(**overrides)
    base = _base(attrs)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        ids = [f"{seed:02d}{k:03d}{i:04d}".ljust(64, "0") for i in range(rows)]
        shard_rows = Rows(
            ids=ids,
            paths=[f"img_{k}_{i}.png" for i in range(rows)],
            labels=[int(i % 2) for i in range(rows)],
            split=["train" if i % 3 else "test" for i in range(rows)],
            failed=[("listing/unreadable.png", "cannot read file"), (f"bad_{k}.png", "not an image")],
        )
        path = folder / f"{base}.shard{k}-of-{n}.h5"
        write_cache(
            path,
            attrs={**attrs, "shard": f"{k}/{n}"},
            rows=shard_rows,
            features=[rng.normal(size=(rows, dim)).astype("float32")],
            failed_ids=["", f"{k:064d}"],
        )
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """One source extracted in one run and in 3 shards (with an unreadable file, so the failed lists are compared
    too)."""
    tmp = tmp_path_factory.mktemp("sharded")
    root = make_class_folder(tmp / "images", per_class=5)
    (root / "dog" / "broken.png").write_bytes(b"not a png at all")
    single = extract(str(root), cache_dir=tmp / "single", **TINY).path
    shard_dir = tmp / "shards"
    shards = [extract(str(root), cache_dir=shard_dir, shard=f"{k}/3", **TINY).path for k in range(3)]
    return root, single, shard_dir, shards


def test_merged_shards_equal_a_single_run_row_for_row(sharded, tmp_path):
    root, single, shard_dir, shards = sharded
    merged = merge(shards, output=tmp_path / single.name)
    with open_cache(single) as a, open_cache(merged) as b:
        assert len(a) == len(b) == 15
        np.testing.assert_array_equal(a.features[:], b.features[:])
        assert a.ids == b.ids
        assert a.paths == b.paths
        assert a.labels.tolist() == b.labels.tolist()
        assert list(a.split) == list(b.split)
        assert a.failed == b.failed == [("dog/broken.png", b.failed[0][1])]
        assert a.fingerprint == b.fingerprint
        assert b.config["shard"] == ""
        assert b.config["merged_from"] == [p.name for p in shards]
        assert a.config["source"] == b.config["source"]


def test_merge_by_cache_dir_then_plain_extract_is_a_cache_hit(sharded):
    root, single, shard_dir, shards = sharded
    merged = merge(cache_dir=shard_dir)
    assert merged == shard_dir / single.name  # the unsharded name, as a plain extract names it
    assert all(p.exists() for p in shards)  # shards are kept by default
    result = extract(str(root), cache_dir=shard_dir, **TINY)
    assert result.hit and result.computed == 0 and result.path == merged and result.rows == 15


def test_missing_shard_is_named(tmp_path):
    paths = _synthetic_shards(tmp_path, n=4, rows=3)
    paths[1].unlink()
    paths[3].unlink()
    base = paths[0].name[: -len(".shard0-of-4.h5")]
    expected = (
        f"cannot merge {base}: shards 1/4, 3/4 are missing (expected {base}.shard1-of-4.h5, {base}.shard3-of-4.h5 in "
        f"{tmp_path}); run python -m transfer_cache.extract SOURCE --shard K/4 with the same options for each missing "
        "shard, then merge again"
    )
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        merge(cache_dir=tmp_path)
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        merge([paths[0], paths[2]])
    assert not (tmp_path / f"{base}.h5").exists()


def test_foreign_shard_with_another_configuration_is_refused(tmp_path):
    mine = _synthetic_shards(tmp_path / "mine", n=2, rows=3)
    other = _synthetic_shards(tmp_path / "other", n=2, rows=3, seed=1, pooling="max")
    # a shard of another configuration renamed into this group: the name fits, the contents do not
    impostor = mine[1].with_name(mine[1].name)
    impostor.unlink()
    other[1].rename(impostor)
    fp_mine = fingerprint(_attrs())
    fp_other = fingerprint(_attrs(pooling="max"))
    expected = (
        f"{impostor.name} does not belong with {mine[0].name}: its feature configuration differs "
        f"(fingerprint {fp_other}, expected {fp_mine}); "
        "move the foreign file out of this folder and extract that shard again with the same options"
    )
    try:  # a reader that checks the fingerprint in the file name refuses the impostor itself; merge names the shard
        open_cache(impostor).close()
    except TransferCacheError as exc:
        expected = f"shard 1/2 ({impostor.name}) cannot be merged: {exc}"
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        merge(cache_dir=tmp_path / "mine")


def test_shard_of_another_extraction_is_refused_by_name(tmp_path):
    mine = _synthetic_shards(tmp_path, n=2, rows=3)
    other = _synthetic_shards(tmp_path / "o", n=2, rows=3, pooling="max")
    expected = (
        f"{other[1].name} is not a shard of the same extraction as {mine[0].name} (expected a name "
        f"{mine[0].name[: -len('.shard0-of-2.h5')]}.shardK-of-2.h5); merge the shards of one extraction at a time"
    )
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        merge([mine[0], other[1]])


def test_foreign_source_is_refused(tmp_path):
    mine = _synthetic_shards(tmp_path / "a", n=2, rows=3)
    other = _synthetic_shards(tmp_path / "b", n=2, rows=3, source="folder:/data/other")
    mine[1].unlink()
    other[1].rename(mine[1])
    expected = (
        f"{mine[1].name} does not belong with {mine[0].name}: its source differ ('folder:/data/other', expected "
        "'folder:/data/pets'); "
        "move the foreign file out of this folder and extract that shard again from the same source"
    )
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        merge(mine)


def test_overlapping_shards_are_refused(tmp_path):
    paths = _synthetic_shards(tmp_path, n=2, rows=3)
    # shard 1 rewritten so that it also holds an image of shard 0
    with open_cache(paths[1]) as cache:
        attrs = {k: v for k, v in cache.config.items() if k not in ("fingerprint", "format", "feature_dim", "rows")}
        features = cache.features[:]
        rows = Rows(
            ids=list(cache.ids), paths=["img_0_2.png", *cache.paths[1:]], labels=cache.labels.tolist(),
            split=list(cache.split),
        )
    write_cache(paths[1], attrs=attrs, rows=rows, features=[features])
    expected = (
        "image img_0_2.png is in both shard 0/2 and shard 1/2; shards must not overlap: were they extracted from "
        "different versions of the source? Extract all shards again"
    )
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        merge(paths)


@pytest.mark.parametrize(
    "call, expected",
    [
        (
            lambda d, p: merge(),
            "nothing to merge: give the shard files (NAME.shardK-of-N.h5 ...) or --cache-dir DIR to find them",
        ),
        (lambda d, p: merge([d / "plain.h5"]), "is not a shard file: expected a name ending in .shardK-of-N.h5"),
        (lambda d, p: merge([p[0], p[0], p[1]]), "shard 0/2 is given twice"),
        (lambda d, p: merge(cache_dir=d / "empty"), "no shard files (NAME.shardK-of-N.h5) in"),
        (lambda d, p: merge(p, output=d / "x.shard0-of-2.h5"), "has a shard name; choose a name without .shardK-of-N"),
    ],
)
def test_argument_mistakes(tmp_path, call, expected):
    paths = _synthetic_shards(tmp_path, n=2, rows=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        call(tmp_path, paths)


def test_damaged_shard_is_named(tmp_path):
    paths = _synthetic_shards(tmp_path, n=2, rows=2)
    paths[1].write_bytes(b"garbage" * 10)
    with pytest.raises(TransferCacheError, match=re.escape(f"shard 1/2 ({paths[1].name}) cannot be merged: ")):
        merge(paths)


def test_streaming_blocks_cross_shard_boundaries_and_failed_images_are_kept_once(tmp_path):
    paths = _synthetic_shards(tmp_path, n=3, rows=5, dim=4)
    merged = merge(paths, block_rows=3, remove_shards=True)
    rng = np.random.default_rng(0)
    expected = np.concatenate([rng.normal(size=(5, 4)).astype("float32") for _ in range(3)])
    with open_cache(merged) as cache:
        np.testing.assert_array_equal(cache.features[:], expected)
        assert cache.paths == [f"img_{k}_{i}.png" for k in range(3) for i in range(5)]
        assert [p for p, _ in cache.failed] == ["listing/unreadable.png", "bad_0.png", "bad_1.png", "bad_2.png"]
        assert cache.failed_ids == ["", f"{0:064d}", f"{1:064d}", f"{2:064d}"]
    assert not any(p.exists() for p in paths)


def test_several_layers_are_merged(tmp_path):
    attrs = _attrs(layers=["conv2", "conv3"])
    base = _base(attrs)
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 5)).astype("float32")]
    paths = []
    for k in range(2):
        rows = Rows(
            ids=[f"{k}{i}".ljust(64, "0") for i in range(2)], paths=[f"{k}_{i}.png" for i in range(2)], labels=[0, 1],
            split=["", ""],
        )
        path = tmp_path / f"{base}.shard{k}-of-2.h5"
        write_cache(
            path, attrs={**attrs, "shard": f"{k}/2"}, rows=rows, features=[a[2 * k : 2 * k + 2] for a in arrays]
        )
        paths.append(path)
    with open_cache(merge(paths)) as cache:
        np.testing.assert_array_equal(cache.features_for("conv2")[:], arrays[0])
        np.testing.assert_array_equal(cache.features_for("conv3")[:], arrays[1])


def test_cli_merges_every_group_and_reports_errors(tmp_path, capsys):
    _synthetic_shards(tmp_path, n=2, rows=3)
    _synthetic_shards(tmp_path, n=3, rows=2, pooling="max")
    assert main(["--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2
    assert all(re.match(r"merged [23] shards: 6 rows, [34] failed -> ", line) for line in out)
    assert main([str(tmp_path / "nothing.h5")]) == 2
    assert "is not a shard file" in capsys.readouterr().err
