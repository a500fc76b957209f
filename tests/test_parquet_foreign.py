"""Vectors computed elsewhere into a cache: import_vectors on Parquet files another tool wrote (paths and vectors,
maybe ids, labels, classes, splits), and what a later extract makes of the cache it writes.

The files are written with pyarrow as another tool would write them; the caches are read back with h5py.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.cache import open_cache
from transfer_cache.export_vectors import export_vectors
from transfer_cache.import_vectors import import_vectors

from conftest import make_class_folder
from test_parquet import TINY, _h5

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


# --------------------------------------------------------------------------- files from elsewhere


def _foreign(tmp_path: Path, images: Path, *, dim: int = 32, **columns) -> Path:
    """A file another tool wrote for the images under ``images``: paths relative to that folder, seeded vectors."""
    paths = sorted(str(p.relative_to(images)) for p in images.rglob("*.png"))
    rng = np.random.default_rng(3)
    data = {"path": paths, "embedding": rng.normal(size=(len(paths), dim)).astype(np.float32).tolist(), **columns}
    out = tmp_path / "theirs.parquet"
    pq.write_table(pa.table(data), out)
    return out


def test_a_file_from_elsewhere_needs_the_options_that_made_it(tmp_path):
    images = make_class_folder(tmp_path / "images", per_class=2)
    theirs = _foreign(tmp_path, images)
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{theirs} does not say which feature configuration made its vectors (export_vectors did not write it); "
            "give the extract options that made them: --backbone NAME at least, and --layer, --pooling, "
            "--input-size, --weights as they were")):
        import_vectors(theirs, cache_dir=tmp_path / "c", vector_column="embedding")
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{theirs} holds one vector per image and no augmented views; drop --augment")):
        import_vectors(theirs, cache_dir=tmp_path / "c", vector_column="embedding", augment=2, **TINY)


def test_a_file_from_elsewhere_gets_ids_from_its_images_and_classes_from_its_names(tmp_path):
    images = make_class_folder(tmp_path / "images", per_class=2, classes=("dog", "cat"))
    names = ["cat", "cat", "dog", "dog"]  # sorted paths: cat/..., dog/...
    theirs = _foreign(tmp_path, images, **{"class": names})
    result = import_vectors(theirs, cache_dir=tmp_path / "c", vector_column="embedding", images_root=images, **TINY)
    stored = _h5(result.path)
    table = pq.read_table(theirs)
    expected_ids = [hashlib.sha256((images / p).read_bytes()).hexdigest() for p in table.column("path").to_pylist()]
    assert stored["ids"] == expected_ids
    assert stored["class_names"] == ["cat", "dog"] and stored["labels"] == [0, 0, 1, 1]
    np.testing.assert_array_equal(stored["vectors"], np.asarray(table.column("embedding").to_pylist(), np.float32))
    with open_cache(result.path) as imported:
        assert imported.info.source_kind == "parquet" and imported.info.source == f"parquet:{theirs.resolve()}"


def test_a_file_from_elsewhere_keeps_its_label_numbering_and_is_checked(tmp_path):
    images = make_class_folder(tmp_path / "images", per_class=2, classes=("dog", "cat"))
    theirs = _foreign(tmp_path, images, label=[1, 1, 0, -1], **{"class": ["cat", "cat", "dog", None]})
    result = import_vectors(theirs, cache_dir=tmp_path / "c", vector_column="embedding", images_root=images, **TINY)
    stored = _h5(result.path)
    assert stored["class_names"] == ["dog", "cat"] and stored["labels"] == [1, 1, 0, -1]
    bad = _foreign(tmp_path, images, label=[1, 0, 0, 1], **{"class": ["cat", "cat", "dog", "cat"]})
    with pytest.raises(TransferCacheError, match=re.escape(
            f"row 2 of {bad} (dog/dog_000.png) names label 0 'dog', but an earlier row names it 'cat'; "
            "each label index has one class name")):
        import_vectors(bad, cache_dir=tmp_path / "c", vector_column="embedding", images_root=images, **TINY)


@pytest.mark.parametrize("columns, message", [
    (dict(label=[0.0, 0.0, 1.0, 1.0]),
     "row 0 of {bad} (cat/cat_000.png) has label 0.0; a label is a class index 0, 1, ... or -1 (unlabelled)"),
    ({"class": [1, 1, 2, 2]},
     "row 0 of {bad} (cat/cat_000.png) has class 1; the 'class' column holds class names (text), and 'label' their "
     "indices"),
    ({"label": [-1, 0, 0, 1], "class": ["cat", "cat", "dog", "dog"]},
     "row 0 of {bad} (cat/cat_000.png) has label -1 and class 'cat'; an unlabelled row has label -1 and no class, a "
     "labelled one both"),
    ({"label": [0, 0, 2, 2], "class": ["cat", "cat", "fox", "fox"]},
     "{bad} uses labels up to 2 but no row names class 1; labels must number the classes 0, 1, ... without gaps (or "
     "drop the label column and the classes are numbered by name)"),
])
def test_labels_and_classes_of_a_file_from_elsewhere_are_checked_before_any_work(tmp_path, columns, message):
    images = make_class_folder(tmp_path / "images", per_class=2, classes=("dog", "cat"))
    bad = _foreign(tmp_path, images, **columns)
    with pytest.raises(TransferCacheError, match=re.escape(message.format(bad=bad))):
        import_vectors(bad, cache_dir=tmp_path / "c", vector_column="embedding", images_root=images, **TINY)
    assert not (tmp_path / "c").exists()


def test_a_label_column_alone_numbers_the_classes(tmp_path):
    images = make_class_folder(tmp_path / "images", per_class=2, classes=("dog", "cat"))
    theirs = _foreign(tmp_path, images, label=[0, 0, 1, -1], split=["train", "Validation", "test", None])
    stored = _h5(import_vectors(theirs, cache_dir=tmp_path / "c", vector_column="embedding", images_root=images,
                                **TINY).path)
    assert stored["class_names"] == ["0", "1"] and stored["labels"] == [0, 0, 1, -1]
    assert stored["split"] == ["train", "val", "test", ""]


def test_a_file_from_elsewhere_of_the_wrong_length_is_refused_before_its_images_are_read(tmp_path):
    images = make_class_folder(tmp_path / "images", per_class=2)
    theirs = _foreign(tmp_path, images, dim=1280)
    with pytest.raises(TransferCacheError, match=re.escape(
            f"{theirs} holds vectors of 1280 values, but tiny (layer conv3, pooling avg, input size 32) makes vectors "
            "of 32; give the extract options that made these vectors (--backbone, --layer, --pooling, --input-size)")):
        import_vectors(theirs, cache_dir=tmp_path / "c", vector_column="embedding", images_root=tmp_path / "nowhere",
                       **TINY)
    flat = _foreign(tmp_path, images, dim=8 * 8 * 32)  # pooling flatten at 32 px: an 8 x 8 map of 32 channels
    result = import_vectors(flat, cache_dir=tmp_path / "c", vector_column="embedding", images_root=images,
                            pooling="flatten", **TINY)
    with open_cache(result.path) as imported:
        assert imported.features.shape == (6, 8 * 8 * 32) and imported.feature_config.pooling == "flatten"


def test_ids_that_cannot_be_computed_say_how_to_give_them(tmp_path):
    images = make_class_folder(tmp_path / "images", per_class=2)
    theirs = _foreign(tmp_path, images)
    with pytest.raises(TransferCacheError, match=re.escape(
            f"row 0 of {theirs} has no id column to say which image cat/cat_000.png is, and "
            f"{tmp_path / 'cat' / 'cat_000.png'} cannot be read (No such file or directory); give --images-root "
            "FOLDER, the folder its paths are relative to, or an 'id' column (sha256 of each image's file)")):
        import_vectors(theirs, cache_dir=tmp_path / "c", vector_column="embedding", **TINY)


# --------------------------------------------------------------------------- a later extract finds the cache


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A real extraction of a small folder with the tiny backbone (the reference runtime: no model conversion)."""
    from transfer_cache.extract import extract

    root = tmp_path_factory.mktemp("extracted")
    images = make_class_folder(root / "images", per_class=3, splits=("train", "test"))
    (images / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    result = extract(str(images), cache_dir=root / "caches", runtime="tensorflow", progress=False, **TINY)
    assert result.failed and not result.hit
    return images, result.path


def _extract_again(images: Path, cache_dir: Path):
    from transfer_cache.extract import extract

    return extract(str(images), cache_dir=cache_dir, runtime="tensorflow", progress=False, **TINY)


def test_an_imported_export_is_a_hit_for_extract(extracted, tmp_path):
    images, cache = extracted
    out = export_vectors(cache, tmp_path / "v.parquet").path
    imported = import_vectors(out, cache_dir=tmp_path / "caches").path
    assert imported.name == cache.name
    again = _extract_again(images, tmp_path / "caches")
    assert again.hit and again.path == imported and again.computed == 0


def test_vectors_from_elsewhere_named_by_their_source_are_reused_by_extract(extracted, tmp_path):
    images, cache = extracted
    table = pq.read_table(export_vectors(cache, tmp_path / "v.parquet").path)
    theirs = tmp_path / "theirs.parquet"  # what another tool keeps: paths and vectors, no ids, labels or metadata
    pq.write_table(pa.table({"path": table.column("path"), "vector": table.column("vector")}), theirs)
    imported = import_vectors(theirs, cache_dir=tmp_path / "caches", source=str(images), runtime="tensorflow",
                              **TINY).path
    assert imported.name == cache.name
    after, before = _h5(imported), _h5(cache)
    np.testing.assert_array_equal(after.pop("vectors"), before.pop("vectors"))
    assert before.pop("failed") == ["train/cat/broken.png"] and after.pop("failed") == []  # the file does not say
    before.pop("failed_ids"), after.pop("failed_ids")
    assert after == before  # ids computed from the images, labels, splits and classes from the source
    again = _extract_again(images, tmp_path / "caches")  # tries the one image the file did not hold, reuses the rest
    assert not again.hit and again.computed == 0 and again.reused == len(table) and len(again.failed) == 1
    assert _extract_again(images, tmp_path / "caches").hit
    # only some of the images: the cache holds those, and extract computes the rest only
    half = tmp_path / "half.parquet"
    pq.write_table(pa.table({"path": table.column("path"), "vector": table.column("vector")}).slice(0, 5), half)
    import_vectors(half, cache_dir=tmp_path / "half", source=str(images), runtime="tensorflow", **TINY)
    partial = _extract_again(images, tmp_path / "half")
    assert not partial.hit and partial.computed == len(table) - 5 and partial.reused == 5


def test_a_source_that_disagrees_with_the_file_is_named(extracted, tmp_path):
    images, cache = extracted
    table = pq.read_table(export_vectors(cache, tmp_path / "v.parquet").path)
    wrong = table.column("split").to_pylist()
    wrong[2] = "test" if wrong[2] != "test" else "train"
    theirs = tmp_path / "theirs.parquet"
    pq.write_table(pa.table({"path": table.column("path"), "split": wrong, "vector": table.column("vector")}), theirs)
    with pytest.raises(TransferCacheError, match=re.escape(
            f"row 2 of {theirs} ({table.column('path')[2]}) has split {wrong[2]!r}, but folder:{images} says "
            f"{table.column('split')[2].as_py()!r}; the source's labels and splits are kept in the cache: fix the "
            "file or give the right --source")):
        import_vectors(theirs, cache_dir=tmp_path / "caches", source=str(images), **TINY)
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"path": ["elsewhere.png"], "vector": table.column("vector").slice(0, 1)}), outside)
    with pytest.raises(TransferCacheError, match=re.escape(
            f"row 0 of {outside} (elsewhere.png) is not an image of folder:{images} (the paths must be as that source "
            f"lists them, e.g. {table.column('path')[0]})")):
        import_vectors(outside, cache_dir=tmp_path / "caches", source=str(images), **TINY)
