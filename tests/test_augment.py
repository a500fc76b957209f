"""Augmented views stored at extraction: seeded, reproducible, only for training images, incremental."""

from __future__ import annotations

import re

import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.augment import RECIPES, augment_image, view_rng
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract

from conftest import make_class_folder, write_image

TINY = dict(backbone="tiny", weights="none", progress=False)


@pytest.fixture
def split_folder(tmp_path):
    return make_class_folder(tmp_path / "images", per_class=3, splits=["train", "test"])


def test_views_exist_for_training_images_only_and_are_reproducible(split_folder, tmp_path):
    first = extract(str(split_folder), cache_dir=tmp_path / "a", augment=3, **TINY)
    second = extract(str(split_folder), cache_dir=tmp_path / "b", augment=3, **TINY)
    with open_cache(first.path) as a, open_cache(second.path) as b:
        assert a.n_views == 3 and a.views.shape == (9, 3, 32)
        assert set(a.split[a.view_rows]) == {"train"}
        assert not set(np.flatnonzero(a.split == "test")) & set(a.view_rows.tolist())
        np.testing.assert_array_equal(a.views[:], b.views[:])
        clean = a.features[:][a.view_rows]
        assert not np.allclose(a.views[:, 0], clean)  # a view is not the clean image
        assert a.config["augment"]["views"] == 3 and a.config["augment"]["recipe"]["name"] == "standard"


def test_another_seed_gives_other_views_and_another_cache(split_folder, tmp_path):
    one = extract(str(split_folder), cache_dir=tmp_path, augment=2, augment_seed=0, **TINY)
    two = extract(str(split_folder), cache_dir=tmp_path, augment=2, augment_seed=1, **TINY)
    plain = extract(str(split_folder), cache_dir=tmp_path, **TINY)
    assert len({one.path, two.path, plain.path}) == 3
    with open_cache(one.path) as a, open_cache(two.path) as b, open_cache(plain.path) as c:
        assert not np.allclose(a.views[:], b.views[:])
        np.testing.assert_allclose(a.features[:], c.features[:], rtol=1e-6, atol=1e-6)  # clean rows unchanged
        assert c.views is None and c.n_views == 0


def test_new_images_get_views_and_old_views_are_copied(split_folder, tmp_path):
    first = extract(str(split_folder), cache_dir=tmp_path, augment=2, **TINY)
    with open_cache(first.path) as cache:
        before = {cache.ids[row]: cache.views[m] for m, row in enumerate(cache.view_rows)}
    write_image(split_folder / "train" / "cat" / "extra.png", seed=77)
    second = extract(str(split_folder), cache_dir=tmp_path, augment=2, **TINY)
    assert second.computed == 1 and second.reused == 18
    with open_cache(second.path) as cache:
        after = {cache.ids[row]: cache.views[m] for m, row in enumerate(cache.view_rows)}
    assert len(after) == 10
    for digest, views in before.items():
        np.testing.assert_array_equal(after[digest], views)
    assert extract(str(split_folder), cache_dir=tmp_path, augment=2, **TINY).hit


def test_augment_image_is_a_pure_function_of_its_seed():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for recipe in RECIPES.values():
        a = augment_image(image, recipe=recipe, rng=view_rng("ab" * 32, 1, 0))
        b = augment_image(image, recipe=recipe, rng=view_rng("ab" * 32, 1, 0))
        c = augment_image(image, recipe=recipe, rng=view_rng("ab" * 32, 2, 0))
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
        assert not np.array_equal(a, c) or recipe.name == "flip"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"augment": -1}, "augment (views per image) must be a whole number of at least 0; got -1"),
        ({"augment": 2, "augment_recipe": "wild"},
         "augmentation recipe must be one of 'standard', 'imagedatagenerator', 'flip', 'mild'; got 'wild'"),
        ({"augment": 2, "layer": "conv2,conv3"}, "--augment works with one feature layer; got 2 (conv2, conv3)"),
    ],
)
def test_bad_augmentation_arguments(split_folder, tmp_path, kwargs, message):
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        extract(str(split_folder), cache_dir=tmp_path, **TINY, **kwargs)


# --------------------------------------------------------------------------- fit uses the views


def _augmented_cache(tmp_path, *, views=3, splits=("train", "test")):
    root = make_class_folder(tmp_path / "images", per_class=6, splits=list(splits) if splits else None)
    return extract(str(root), cache_dir=tmp_path / "caches", augment=views, **TINY).path


def test_fit_trains_sklearn_heads_on_every_view_and_tests_on_clean_rows(tmp_path):
    from transfer_cache.fit import fit

    path = _augmented_cache(tmp_path)
    with_views = fit(path, classifier="logreg", runs_dir=tmp_path / "runs", progress=False)[0]
    without = fit(path, classifier="logreg", runs_dir=tmp_path / "runs", views="none", progress=False)[0]
    assert with_views.metrics["n_train"] == without.metrics["n_train"] == 18  # images, not rows
    assert with_views.metrics["n_test"] == without.metrics["n_test"] == 18
    config = __import__("json").loads((with_views.run_dir / "config.json").read_text())
    assert config["augmented_views"] == 3
    assert "augmented_views" not in __import__("json").loads((without.run_dir / "config.json").read_text())


def test_dense_head_samples_one_view_per_image_each_epoch(tmp_path):
    from transfer_cache.classifiers import make_classifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    views = X[:, None, :] + rng.normal(scale=0.1, size=(40, 4, 8)).astype("float32")
    mask = np.arange(40) < 30
    head = make_classifier("dense", {"hidden": 16, "epochs": 3, "batch_size": 8}, seed=0)
    head.fit(X, y, views=views, view_mask=mask, n_classes=2)
    assert len(head.history["loss"]) == 3
    again = make_classifier("dense", {"hidden": 16, "epochs": 3, "batch_size": 8}, seed=0)
    again.fit(X, y, views=views, view_mask=mask, n_classes=2)
    np.testing.assert_allclose(head.predict_proba(X), again.predict_proba(X), rtol=1e-5, atol=1e-6)  # seeded
    plain = make_classifier("dense", {"hidden": 16, "epochs": 3, "batch_size": 8}, seed=0).fit(X, y, n_classes=2)
    assert not np.allclose(head.predict_proba(X), plain.predict_proba(X))


def test_views_are_grouped_with_their_image_in_cross_validation(tmp_path):
    """With an unsplit source every image has views; each fold trains on its training images' views only."""
    from transfer_cache.classifiers.base import with_views as _with_views
    from transfer_cache.splits import choose_split as _choose_split
    from transfer_cache.training_data import load_training_data

    path = _augmented_cache(tmp_path, views=2, splits=None)
    data = load_training_data([path], None, None)
    data.use_views = True
    try:
        split = _choose_split(data, split="auto", test_size=0.2, seed=0, cv=3, grid=False)
        features = data.features(np.arange(len(data.labels)))
        for train, test in split.folds:
            views, mask = data.views(train)
            assert mask.all() and views.shape == (len(train), 2, 32)
            X, y = _with_views(features[train], data.labels[train], views, mask)
            assert len(X) == 3 * len(train)
            # no row of the expanded training set is a view of a test image
            test_views, _ = data.views(test)
            for vector in test_views.reshape(-1, 32):
                assert not np.any(np.all(np.isclose(X, vector, atol=1e-7), axis=1))
    finally:
        data.close()


def test_views_none_is_validated(tmp_path):
    from transfer_cache.fit import fit

    path = _augmented_cache(tmp_path, views=1)
    with pytest.raises(TransferCacheError, match=re.escape("views must be one of 'auto', 'none'; got 'all'")):
        fit(path, classifier="logreg", runs_dir=tmp_path / "runs", views="all", progress=False)
