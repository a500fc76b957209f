"""Vectors out to Parquet and back: export_vectors and import_vectors on real caches and real Parquet files.

The files are read back with pyarrow, DuckDB and pandas (when installed), never through the package; the caches
with h5py. Files from elsewhere are written here with pyarrow as another tool would write them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.cache import cache_filename, fingerprint, open_cache
from transfer_cache.export_vectors import export_vectors
from transfer_cache.export_vectors import main as export_main
from transfer_cache.import_vectors import import_vectors
from transfer_cache.import_vectors import main as import_main

from conftest import synthetic_attrs, write_synthetic_cache

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

TINY = {"backbone": "tiny", "weights": "none"}


def _cache(folder: Path, *, n: int = 23, dims=(8,), dtype: str = "float32", seed: int = 0) -> Path:
    """A real cache named as extract names it: labelled, unlabelled and split rows, one failed image."""
    rng = np.random.default_rng(seed)
    layers = ["conv3"] if len(dims) == 1 else [f"conv{k + 1}" for k in range(len(dims))]
    attrs = dict(class_names=("cat", "dog", "fox"), layers=layers, dtype=dtype)
    name = cache_filename(source_name="digits", source_description="sklearn:digits", backbone="tiny",
                          fingerprint=fingerprint(synthetic_attrs(**attrs)))
    features = [rng.normal(size=(n, d)).astype(dtype) for d in dims]
    labels = rng.integers(-1, 3, size=n)
    split = [("train", "val", "test", "")[i % 4] for i in range(n)]
    ids = [hashlib.sha256(f"image {i}".encode()).hexdigest() for i in range(n)]
    return write_synthetic_cache(folder / name, features=features if len(dims) > 1 else features[0], labels=labels,
                                 ids=ids, split=split, failed=[("broken.png", "cannot decode: truncated")],
                                 failed_ids=["ab" * 32], **attrs)


def _h5(path: Path, layer: str | None = None) -> dict:
    """The cache as stored, read with h5py alone (the oracle)."""
    with h5py.File(path, "r") as f:
        node = f["features"] if layer is None else f["features"][layer]
        return {
            "ids": [v.decode() for v in f["ids"][()]],
            "paths": [v.decode() for v in f["paths"][()]],
            "labels": f["labels"][()].tolist(),
            "split": [v.decode() for v in f["split"][()]],
            "vectors": node[()],
            "class_names": json.loads(f.attrs["class_names"]),
            "failed": [v.decode() for v in f["failed/paths"][()]],
            "failed_ids": [v.decode() for v in f["failed/ids"][()]],
            "fingerprint": str(f.attrs["fingerprint"]),
        }


# --------------------------------------------------------------------------- the file, as other tools read it


def test_the_file_has_the_declared_columns_and_the_cache_in_its_metadata(tmp_path):
    cache = _cache(tmp_path)
    out = export_vectors(cache, tmp_path / "v.parquet").path
    table = pq.read_table(out)
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("id", "string"), ("path", "string"), ("label", "int64"), ("class", "string"), ("split", "string"),
        ("vector", "fixed_size_list<element: float>[8]"),
    ]
    stored = _h5(cache)
    assert table.column("id").to_pylist() == stored["ids"]
    assert table.column("path").to_pylist() == stored["paths"]
    assert table.column("label").to_pylist() == stored["labels"]
    assert table.column("class").to_pylist() == [stored["class_names"][k] if k >= 0 else None
                                                 for k in stored["labels"]]
    assert table.column("split").to_pylist() == stored["split"]
    vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(vectors, stored["vectors"])
    meta = {k.decode(): json.loads(v) for k, v in table.schema.metadata.items()}
    assert meta["transfer_cache.fingerprint"] == meta["transfer_cache.cache_fingerprint"] == stored["fingerprint"]
    assert meta["transfer_cache.class_names"] == ["cat", "dog", "fox"]
    assert meta["transfer_cache.feature_config"]["backbone"] == "tiny"
    assert meta["transfer_cache.failed"] == [["broken.png", "cannot decode: truncated", "ab" * 32]]


def test_duckdb_reads_the_file_without_the_package(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    cache = _cache(tmp_path, n=40)
    out = export_vectors(cache, tmp_path / "v.parquet").path
    stored = _h5(cache)
    connection = duckdb.connect()
    counts = dict(connection.execute(f"SELECT label, count(*) FROM '{out}' GROUP BY label").fetchall())
    labels = np.asarray(stored["labels"])
    assert counts == {k: int((labels == k).sum()) for k in set(labels.tolist())}
    (row,) = connection.execute(f"SELECT id, len(vector), vector FROM '{out}' WHERE path = 'img_00017.png'").fetchall()
    assert row[0] == stored["ids"][17] and row[1] == 8
    np.testing.assert_array_equal(np.asarray(row[2], dtype=np.float32), stored["vectors"][17])


def test_pandas_reads_the_file_without_the_package(tmp_path):
    import pandas as pd  # in the dev extra: the file must read without this package
    cache = _cache(tmp_path)
    frame = pd.read_parquet(export_vectors(cache, tmp_path / "v.parquet").path)
    stored = _h5(cache)
    assert list(frame.columns) == ["id", "path", "label", "class", "split", "vector"]
    np.testing.assert_array_equal(np.stack(frame["vector"].to_list()).astype(np.float32), stored["vectors"])


def test_the_file_is_written_in_row_groups_of_a_block_of_the_cache(tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("transfer_cache.export_vectors")  # tc.export_vectors is the function
    monkeypatch.setattr(module, "_ROW_GROUP_BYTES", 7 * 8 * 4)  # 7 rows of 8 float32 instead of 16 MB
    cache = _cache(tmp_path, n=23)
    out = export_vectors(cache, tmp_path / "v.parquet").path
    metadata = pq.ParquetFile(out).metadata
    assert [metadata.row_group(k).num_rows for k in range(metadata.num_row_groups)] == [7, 7, 7, 2]
    np.testing.assert_array_equal(np.asarray(pq.read_table(out).column("vector").to_pylist(), dtype=np.float32),
                                  _h5(cache)["vectors"])


def test_a_cache_of_several_layers_exports_the_layer_asked_for(tmp_path):
    cache = _cache(tmp_path, dims=(4, 6))
    with pytest.raises(TransferCacheError, match=re.escape(
            f"cache {cache} holds several layers (conv1, conv2); choose one with --layer NAME")):
        export_vectors(cache, tmp_path / "v.parquet")
    out = export_vectors(cache, tmp_path / "v.parquet", layer="conv2").path
    table = pq.read_table(out)
    np.testing.assert_array_equal(np.asarray(table.column("vector").to_pylist(), dtype=np.float32),
                                  _h5(cache, "conv2")["vectors"])
    meta = {k.decode(): json.loads(v) for k, v in table.schema.metadata.items()}
    one_layer = synthetic_attrs(class_names=("cat", "dog", "fox"), layers=["conv2"])
    assert meta["transfer_cache.fingerprint"] == fingerprint(one_layer) != meta["transfer_cache.cache_fingerprint"]


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_an_exported_file_becomes_the_same_cache_again(tmp_path, dtype):
    cache = _cache(tmp_path / "first", dtype=dtype)
    out = export_vectors(cache, tmp_path / "v.parquet").path
    result = import_vectors(out, cache_dir=tmp_path / "second")
    assert result.path == tmp_path / "second" / cache.name
    before, after = _h5(cache), _h5(result.path)
    vectors_before, vectors_after = before.pop("vectors"), after.pop("vectors")
    assert after == before
    assert vectors_after.dtype == vectors_before.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vectors_after, vectors_before)
    with open_cache(result.path) as imported:
        assert imported.info.source == "sklearn:digits"
    assert result.summary() == (f"imported 23 rows of 8 values (3 classes, fingerprint {before['fingerprint']}) -> "
                                f"{result.path}")


def test_one_layer_of_several_becomes_a_cache_of_that_layer(tmp_path):
    cache = _cache(tmp_path / "first", dims=(4, 6))
    out = export_vectors(cache, tmp_path / "v.parquet", layer="conv1").path
    result = import_vectors(out, cache_dir=tmp_path / "second")
    expected = fingerprint(synthetic_attrs(class_names=("cat", "dog", "fox"), layers=["conv1"]))
    assert result.path.name == cache.name.replace(_h5(cache, "conv1")["fingerprint"], expected)
    with open_cache(result.path) as imported:
        assert imported.layers == ["conv1"] and imported.fingerprint == expected
        np.testing.assert_array_equal(imported.features[:], _h5(cache, "conv1")["vectors"])


def test_the_commands_end_in_one_summary_line(tmp_path, capsys):
    cache = _cache(tmp_path / "first")
    assert export_main([str(cache), str(tmp_path / "out" / "v.parquet"), "--quiet"]) == 0
    fp = _h5(cache)["fingerprint"]
    assert capsys.readouterr().out == (f"exported 23 rows of 8 float32 (layer 'conv3', fingerprint {fp}) -> "
                                       f"{tmp_path / 'out' / 'v.parquet'}\n")
    assert import_main([str(tmp_path / "out" / "v.parquet"), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    assert capsys.readouterr().out == (f"imported 23 rows of 8 values (3 classes, fingerprint {fp}) -> "
                                       f"{tmp_path / 'c' / cache.name}\n")


def test_an_existing_cache_is_replaced_only_with_overwrite(tmp_path, capsys):
    cache = _cache(tmp_path / "first")
    out = export_vectors(cache, tmp_path / "v.parquet").path
    import_vectors(out, cache_dir=tmp_path / "c")
    target = tmp_path / "c" / cache.name
    assert import_main([str(out), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"python -m transfer_cache.import_vectors: error: cache {target} already exists; import_vectors replaces a "
        "cache only when given --overwrite (python -m transfer_cache.extract reuses the one there)\n")
    assert import_vectors(out, cache_dir=tmp_path / "c", overwrite=True).path == target


# --------------------------------------------------------------------------- export's mistakes


def test_export_mistakes_are_one_line(tmp_path, monkeypatch):
    cache = _cache(tmp_path)
    missing = tmp_path / "missing.h5"
    with pytest.raises(TransferCacheError, match=re.escape(
            f"cache file {missing} does not exist; run python -m transfer_cache.extract first")):
        export_vectors(missing, tmp_path / "v.parquet")
    (tmp_path / "folder").mkdir()
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{tmp_path / 'folder'} is a folder; give the Parquet file to write, e.g. "
            f"{tmp_path / 'folder' / 'vectors.parquet'}")):
        export_vectors(cache, tmp_path / "folder")
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{cache} exists and is not a Parquet file; export_vectors replaces only a Parquet file: choose another "
            "OUT path")):
        export_vectors(cache, cache)  # the arguments swapped, or a cache's name typed as OUT: the cache stays
    assert _h5(cache)["ids"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(TransferCacheError, match=re.escape(
            f"cannot write {tmp_path / 'a_file' / 'v.parquet'}: {tmp_path / 'a_file'} is a file, not a folder; "
            "choose another OUT path")):
        export_vectors(cache, tmp_path / "a_file" / "v.parquet")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(TransferCacheError, match=re.escape(
            'reading and writing Parquet needs pyarrow, which is not installed; pip install "pyarrow>=14.0.1" '
            '(or pip install "transfer_cache[parquet]")')):
        export_vectors(cache, tmp_path / "v.parquet")
    assert not (tmp_path / "v.parquet").exists()
    (tmp_path / "v.parquet").write_bytes(b"PAR1")
    with pytest.raises(TransferCacheError, match=re.escape("reading and writing Parquet needs pyarrow, which is not "
                                                           "installed; pip install")):
        import_vectors(tmp_path / "v.parquet", cache_dir=tmp_path / "c")


def test_an_existing_file_is_replaced_once_the_new_one_is_complete(tmp_path):
    out = tmp_path / "new" / "folder" / "v.parquet"  # folders that do not exist yet are created
    export_vectors(_cache(tmp_path / "a", n=5), out)
    export_vectors(_cache(tmp_path / "b", n=9, seed=1), out)
    assert pq.read_table(out).num_rows == 9
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.parquet"]  # no temporary left


# --------------------------------------------------------------------------- import's mistakes (any file)


def _cache_name(tmp_path: Path) -> str:
    return next((tmp_path / "first").glob("*.h5")).name


def _exported(tmp_path: Path, n: int = 12) -> Path:
    return export_vectors(_cache(tmp_path / "first", n=n), tmp_path / "v.parquet").path


def _rewritten(original: Path, out: Path, *, vectors=None, **columns) -> Path:
    """The file ``original`` with some columns replaced (None drops one), written as another tool would."""
    table = pq.read_table(original)
    data = {name: table.column(name) for name in table.column_names}
    if vectors is not None:
        data["vector"] = vectors
    for name, values in columns.items():
        if values is None:
            data.pop(name)
        else:
            data[name] = values
    pq.write_table(pa.table(data).replace_schema_metadata(table.schema.metadata), out)
    return out


def test_a_vector_with_nan_or_infinity_is_refused_naming_its_row(tmp_path):
    source = _exported(tmp_path)
    for value, word in ((np.nan, "NaN"), (np.inf, "infinity")):
        vectors = np.asarray(pq.read_table(source).column("vector").to_pylist(), dtype=np.float32)
        vectors[9, 3] = value
        bad = _rewritten(source, tmp_path / "bad.parquet",
                         vectors=pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 8))
        with pytest.raises(TransferCacheError, match=re.escape(
                f"row 9 of {bad} (img_00009.png) holds {word} in its vector; a cache holds finite vectors: fix or "
                "drop that row")):
            import_vectors(bad, cache_dir=tmp_path / "c")
        left = sorted(p.name for p in (tmp_path / "c").iterdir())
        assert left == [f".{_cache_name(tmp_path)}.lock"]  # no cache, no temporary: only the (released) lock


def test_ragged_vectors_are_refused_naming_the_first_odd_row(tmp_path):
    source = _exported(tmp_path)
    vectors = pq.read_table(source).column("vector").to_pylist()
    vectors[5] = vectors[5][:7]
    bad = _rewritten(source, tmp_path / "bad.parquet", vectors=pa.array(vectors, type=pa.list_(pa.float32())))
    with pytest.raises(TransferCacheError, match=re.escape(
            f"row 5 of {bad} (img_00005.png) holds a vector of 7 values but row 0 one of 8; every vector must have "
            "the same length")):
        import_vectors(bad, cache_dir=tmp_path / "c")


def test_a_row_without_a_vector_is_refused_naming_it(tmp_path):
    source = _exported(tmp_path)
    vectors = pq.read_table(source).column("vector").to_pylist()
    vectors[4] = None
    bad = _rewritten(source, tmp_path / "bad.parquet", vectors=pa.array(vectors, type=pa.list_(pa.float32())))
    with pytest.raises(TransferCacheError, match=re.escape(
            f"row 4 of {bad} (img_00004.png) has no vector (null); every row needs one")):
        import_vectors(bad, cache_dir=tmp_path / "c")


def test_vectors_of_the_wrong_length_are_refused_before_any_work(tmp_path):
    source = _exported(tmp_path)
    vectors = np.asarray(pq.read_table(source).column("vector").to_pylist(), dtype=np.float32)[:, :5]
    bad = _rewritten(source, tmp_path / "bad.parquet",
                     vectors=pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 5))
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{bad} holds vectors of 5 values, but tiny (layer conv3, pooling avg, input size 32) makes vectors of "
            "8; give the extract options that made these vectors (--backbone, --layer, --pooling, --input-size)")):
        import_vectors(bad, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("columns, message", [
    (dict(vector=None), "{bad} has no column 'vector' (its columns: id, path, label, class, split); name the column "
                        "of vectors 'vector' or give it with --vector-column NAME"),
    (dict(path=None), "{bad} has no column 'path' (its columns: id, label, class, split, vector); expected 'path' "
                      "and 'vector' (and optionally 'id', 'label', 'class', 'split'), as python -m "
                      "transfer_cache.export_vectors writes them"),
    (dict(vector=pa.array(["1,2"] * 12)),
     "column 'vector' of {bad} holds string; expected one list of floats per row (a fixed-size list of float32, as "
     "export_vectors writes it)"),
    (dict(id=pa.array(["not-a-digest"] * 12)),
     "row 0 of {bad} (img_00000.png) has id 'not-a-digest'; an id is the sha256 of the image's file, 64 hex "
     "digits: fix the column, or drop it and give --images-root so the ids are computed from the files"),
    (dict(split=pa.array(["train"] * 11 + ["holdout"])),
     "row 11 of {bad} (img_00011.png) has split 'holdout'; a split is one of train, val, test (or valid, "
     "validation) or empty"),
])
def test_a_file_with_wrong_columns_is_refused_in_one_line(tmp_path, columns, message):
    bad = _rewritten(_exported(tmp_path), tmp_path / "bad.parquet", **columns)
    with pytest.raises(TransferCacheError, match=re.escape(message.format(bad=bad))):
        import_vectors(bad, cache_dir=tmp_path / "c")


def test_an_exported_file_refuses_options_that_would_contradict_it(tmp_path):
    source = _exported(tmp_path)
    fp = pq.read_table(source).schema.metadata[b"transfer_cache.fingerprint"].decode().strip('"')
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{source} was written by export_vectors and carries the feature configuration of its vectors "
            f"(fingerprint {fp}) and their source; drop --backbone, --input-size, --source")):
        import_vectors(source, cache_dir=tmp_path / "c", backbone="tiny", input_size=64, source="photos")


def test_damaged_metadata_is_named(tmp_path):
    source = _exported(tmp_path)
    table = pq.read_table(source)
    metadata = {k: v for k, v in table.schema.metadata.items() if k != b"transfer_cache.class_names"}
    pq.write_table(table.replace_schema_metadata(metadata), tmp_path / "bad.parquet")
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{tmp_path / 'bad.parquet'} is damaged: its metadata lacks transfer_cache.class_names; export the cache "
            "again")):
        import_vectors(tmp_path / "bad.parquet", cache_dir=tmp_path / "c")


def test_a_missing_or_foreign_input_file_is_named(tmp_path):
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{tmp_path / 'none.parquet'} does not exist; give a Parquet file of vectors, e.g. one written by python "
            "-m transfer_cache.export_vectors CACHE OUT.parquet")):
        import_vectors(tmp_path / "none.parquet", cache_dir=tmp_path / "c")
    (tmp_path / "text.parquet").write_text("id,path\n")
    with pytest.raises(TransferCacheError, match=re.escape(f"{tmp_path / 'text.parquet'} is not a Parquet file (")):
        import_vectors(tmp_path / "text.parquet", cache_dir=tmp_path / "c")


def test_vectors_of_a_feature_map_keep_their_shape_through_the_file(tmp_path):
    """pooling none stores (h, w, c) per image: the file holds it flat and says the shape; import restores it."""
    rng = np.random.default_rng(5)
    maps = rng.normal(size=(6, 2, 2, 3)).astype(np.float32)
    attrs = dict(class_names=("cat", "dog"), pooling="none")
    name = cache_filename(source_name="maps", source_description="maps", backbone="tiny",
                          fingerprint=fingerprint(synthetic_attrs(**attrs)))
    cache = write_synthetic_cache(tmp_path / "first" / name, features=maps, labels=[0, 1, 0, 1, -1, 0], **attrs)
    out = export_vectors(cache, tmp_path / "v.parquet").path
    assert str(pq.read_schema(out).field("vector").type) == "fixed_size_list<element: float>[12]"
    with open_cache(import_vectors(out, cache_dir=tmp_path / "second").path) as imported:
        assert imported.features.shape == (6, 2, 2, 3)
        np.testing.assert_array_equal(imported.features[:], maps)
