"""Decoding for the size needed: the same region of the photo at a fraction of the decoding cost, recorded in the
cache's fingerprint (0.1.0 and 0.2.0 caches keep theirs and are continued), and used by everything that prepares an
image for a cache's configuration."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from transfer_cache import _imaging
from transfer_cache._imaging import INTERPOLATIONS, decode_resized
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract
from transfer_cache.extract_options import feature_config
from transfer_cache.feature_config import FeatureConfig, fingerprint

TINY = dict(backbone="tiny", weights="none", runtime="tensorflow")
POLICIES = [("squash", 1.0), ("center-crop", 0.875), ("center-crop", 0.5), ("pad", 1.0)]


def pattern(width: int, height: int) -> np.ndarray:
    """Colour ramps across and down, a grid of dark lines every 1/9 of each side and an off-centre white disc: a
    region taken from the wrong place, or scaled wrongly, moves the lines and the disc far past any tolerance."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack([255 * x / width, 255 * y / height, 255 * (1 - x / width) * (y / height)], axis=-1)
    image[(np.floor(9 * x / width) != np.floor(9 * (x + 3) / width))] = 20  # vertical lines, 3 px wide
    image[(np.floor(9 * y / height) != np.floor(9 * (y + 3) / height))] = 20
    image[(x - 0.62 * width) ** 2 + (y - 0.41 * height) ** 2 < (0.08 * min(width, height)) ** 2] = 255
    return image.astype(np.uint8)


def encoded(array: np.ndarray, fmt: str, *, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def reductions(monkeypatch):
    """The reductions actually made: ("draft", scale) for a JPEG's DCT scaling, ("reduce", k) for Image.reduce."""
    made = []
    from PIL import JpegImagePlugin

    draft, reduce = JpegImagePlugin.JpegImageFile.draft, Image.Image.reduce

    def spy_draft(self, mode, size):
        result = draft(self, mode, size)
        if result is not None:
            made.append(("draft", round(self.decoderconfig[0])))
        return result

    def spy_reduce(self, factor, box=None):
        made.append(("reduce", factor))
        return reduce(self, factor, box)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy_draft)
    monkeypatch.setattr(Image.Image, "reduce", spy_reduce)
    return made


@pytest.mark.parametrize("policy, crop_fraction", POLICIES)
@pytest.mark.parametrize("fmt, orientation, expected", [
    ("JPEG", None, "draft"), *[("JPEG", turn, "draft") for turn in range(2, 9)], ("PNG", None, "reduce"),
    ("PNG", 8, "reduce"),
])
def test_the_reduced_decode_uses_the_same_region_as_the_full_decode(fmt, orientation, expected, policy, crop_fraction,
                                                                     reductions):
    """Odd sizes (the last block of a reduction is partial), a landscape image stored in every EXIF orientation: the
    drafted or reduced path gives the full path's pixels within a small tolerance, for every policy."""
    data = encoded(pattern(1203, 779), fmt, orientation=orientation)
    options = dict(size=48, policy=policy, crop_fraction=crop_fraction, interpolation="bilinear")
    full = decode_resized(data, **options).astype(np.int64)
    assert reductions == []
    reduced = decode_resized(data, decoding="reduced", **options).astype(np.int64)
    assert reductions and {kind for kind, _ in reductions} == {expected} and all(k >= 2 for _, k in reductions)
    difference = np.abs(full - reduced)
    assert difference.mean() < 2.0 and np.percentile(difference, 99) < 24, (difference.mean(), difference.max())


@pytest.mark.parametrize("policy, crop_fraction", POLICIES)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_every_filter_gives_the_full_decodes_pixels_of_a_photo(interpolation, policy, crop_fraction, reductions):
    """scikit-learn's china.jpg at 1600x1200; "nearest" picks single pixels, which a reduced image has averaged
    away: it is never reduced."""
    from sklearn.datasets import load_sample_images

    photo = Image.fromarray(load_sample_images().images[0]).resize((1600, 1200), Image.Resampling.LANCZOS)
    data = encoded(np.asarray(photo), "JPEG")
    options = dict(size=40, policy=policy, crop_fraction=crop_fraction, interpolation=interpolation)
    full = decode_resized(data, **options).astype(np.int64)
    difference = np.abs(full - decode_resized(data, decoding="reduced", **options).astype(np.int64))
    assert bool(reductions) == (interpolation != "nearest")
    assert difference.mean() < 1.5, difference.mean()


def test_a_region_taken_from_the_wrong_place_would_fail_the_tolerance():
    """The tolerance above sees a region 2% off: the full decode of a region shifted by 2% of the side."""
    image = pattern(1203, 779)
    options = dict(size=48, policy="center-crop", crop_fraction=0.875, interpolation="bilinear")
    shifted = np.roll(image, 24, axis=1)
    difference = np.abs(decode_resized(encoded(image, "PNG"), **options).astype(np.int64)
                        - decode_resized(encoded(shifted, "PNG"), **options).astype(np.int64))
    assert difference.mean() > 4.0


@pytest.mark.parametrize("fmt, needs", [("JPEG", 60), ("PNG", 96)])
@pytest.mark.parametrize("width, height", [(150, 100), (119, 119), (121, 190), (190, 190), (400, 300)])
def test_an_image_less_than_twice_what_the_policy_needs_is_decoded_in_full(fmt, needs, width, height, reductions):
    """For an output of 48 the policy needs a region of 96 pixels (2x, Pillow's reducing gap; 60 for a JPEG, whose
    DCT scaling filters as it reduces); only twice that is reduced, and an image decoded in full gives exactly the full
    path's pixels."""
    data = encoded(pattern(width, height), fmt)
    options = dict(size=48, policy="squash", crop_fraction=1.0, interpolation="bicubic")
    same = np.array_equal(decode_resized(data, **options), decode_resized(data, decoding="reduced", **options))
    assert same == (min(width, height) < 2 * needs)
    assert bool(reductions) == (min(width, height) >= 2 * needs)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_damaged_large_file_is_the_same_short_reason_either_way(fmt):
    from transfer_cache._errors import ImageError

    whole = encoded(np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8), fmt)
    options = dict(size=32, policy="squash", crop_fraction=1.0, interpolation="bilinear", name="a/b.img")
    for data in (whole[: len(whole) // 2], b""):
        reasons = []
        for decoding in ("full", "reduced"):
            with pytest.raises(ImageError) as info:
                decode_resized(data, decoding=decoding, **options)
            reasons.append((str(info.value), info.value.__notes__))
        assert reasons[0] == reasons[1] and reasons[0][1] == ["while decoding a/b.img"], reasons


def test_a_decoding_that_does_not_exist_is_named():
    from transfer_cache import TransferCacheError

    with pytest.raises(TransferCacheError, match="decoding must be one of 'reduced', 'full'; got 'fast'"):
        decode_resized(encoded(pattern(64, 64), "PNG"), size=8, policy="squash", crop_fraction=1.0,
                       interpolation="bilinear", decoding="fast")
    with pytest.raises(TransferCacheError, match="decoding must be one of 'reduced', 'full'; got 'fast'"):
        feature_config(decoding="fast")


# --------------------------------------------------------------------------- the fingerprint


def test_full_decoding_is_left_out_of_the_fingerprint_so_earlier_caches_keep_theirs():
    """A cache written before the field existed has no 'decoding' attribute: it reads back as full, with the
    fingerprint it was named by; a reduced cache's fingerprint says so."""
    full = feature_config(decoding="full", **TINY)
    earlier = {name: value for name, value in full.as_dict().items() if name != "decoding"}
    assert FeatureConfig.from_attrs(earlier) == full and fingerprint(earlier) == full.fingerprint
    assert feature_config(**TINY).decoding == "reduced"
    assert feature_config(**TINY).fingerprint != full.fingerprint
    assert dataclasses.replace(full, decoding="reduced") == feature_config(**TINY)


def _photo_folder(root, *, per_class=2, size=(640, 480)):
    """Large JPEGs (2 classes) that a reduced decode does reduce at the tiny backbone's 32 pixels."""
    for label, name in enumerate(("ant", "bee")):
        for i in range(per_class):
            image = np.roll(pattern(*size), 37 * (i + 3 * label), axis=1)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / name / f"{name}_{i}.jpg", quality=90)
    return root


def test_a_default_run_continues_a_full_cache_and_an_asked_decoding_gets_its_own(tmp_path):
    root = _photo_folder(tmp_path / "images")
    caches = tmp_path / "caches"
    old = extract(str(root), cache_dir=caches, decoding="full", progress=False, **TINY)
    again = extract(str(root), cache_dir=caches, progress=False, **TINY)
    assert again.hit and again.path == old.path
    _photo_folder(tmp_path / "more", per_class=3)
    (root / "ant" / "ant_2.jpg").write_bytes((tmp_path / "more" / "ant" / "ant_2.jpg").read_bytes())
    grown = extract(str(root), cache_dir=caches, progress=False, **TINY)  # one new image, decoded as the cache says
    assert grown.path == old.path and (grown.computed, grown.reused) == (1, 4)
    with open_cache(grown.path) as cache:
        assert cache.feature_config.decoding == "full"
        assert cache.fingerprint == feature_config(decoding="full", **TINY).fingerprint
    reduced = extract(str(root), cache_dir=caches, decoding="reduced", progress=False, **TINY)
    assert not reduced.hit and reduced.path != old.path and reduced.computed == 5
    with open_cache(reduced.path) as cache:
        assert cache.feature_config == feature_config(**TINY) and cache.config["decoding"] == "reduced"
    assert extract(str(root), cache_dir=caches, progress=False, **TINY).path == reduced.path  # preferred when both


def test_the_shards_of_a_run_continue_a_full_run_together(tmp_path):
    """One shard of a full decoding was finished (a killed 0.2.0 sharded run): a default sharded run continues it in
    full for every shard, so the merge sees one configuration."""
    root = _photo_folder(tmp_path / "images")
    caches = tmp_path / "caches"
    first = extract(str(root), cache_dir=caches, decoding="full", shard="0/2", progress=False, **TINY)
    merged = extract(str(root), cache_dir=caches, shards=2, engine="local", progress=False, **TINY)
    with open_cache(merged.path) as cache:
        assert cache.feature_config.decoding == "full" and len(cache) == 4
    assert first.path.exists() and merged.computed == 2


def test_arrays_are_used_whole_and_their_caches_keep_one_fingerprint(tmp_path):
    """An array source has nothing to decode: whatever decoding is asked, its cache records full (one file)."""
    images = np.random.default_rng(0).integers(0, 256, size=(6, 300, 300, 3), dtype=np.uint8)
    np.savez(tmp_path / "pictures.npz", images=images, labels=np.arange(6) % 2)
    paths = {extract(str(tmp_path / "pictures.npz"), cache_dir=tmp_path / "c", decoding=decoding, progress=False,
                     **TINY).path for decoding in (None, "reduced", "full")}
    assert len(paths) == 1
    with open_cache(paths.pop()) as cache:
        assert cache.feature_config.decoding == "full"


# --------------------------------------------------------------------------- everything that prepares an image


def test_prepare_image_decodes_bytes_as_the_configuration_says_and_uses_arrays_whole():
    from transfer_cache.pipeline import prepare_image

    array = pattern(1203, 779)
    data = encoded(array, "JPEG")
    reduced = feature_config(**TINY)
    full = dataclasses.replace(reduced, decoding="full")
    fit = dict(size=32, policy=reduced.resize, crop_fraction=reduced.crop_fraction,
               interpolation=reduced.interpolation)
    assert np.array_equal(prepare_image(data, config=reduced), decode_resized(data, decoding="reduced", **fit))
    assert np.array_equal(prepare_image(data, config=full), decode_resized(data, **fit))
    assert not np.array_equal(prepare_image(data, config=reduced), prepare_image(data, config=full))
    assert np.array_equal(prepare_image(array, config=reduced), prepare_image(array, config=full))


@pytest.fixture
def decodings(monkeypatch):
    """The decoding of every call of decode_resized (the one function that decodes a file for a configuration)."""
    seen = []
    original = _imaging.decode_resized

    def spy(data, **options):
        seen.append(options.get("decoding", "full"))
        return original(data, **options)

    monkeypatch.setattr(_imaging, "decode_resized", spy)
    import transfer_cache.sources.base as base

    monkeypatch.setattr(base, "decode_resized", spy)
    return seen


@pytest.mark.parametrize("decoding", ["reduced", "full"])
def test_extraction_neighbors_the_pixel_baseline_and_predict_decode_as_the_cache_says(decoding, tmp_path, decodings):
    from transfer_cache.export import export_model, load_exported, read_description
    from transfer_cache.fit import fit
    from transfer_cache.neighbors import image_vector
    from transfer_cache.predict import predict
    from transfer_cache.training_data import load_training_data, reread_images

    root = _photo_folder(tmp_path / "images", per_class=3)
    made = extract(str(root), cache_dir=tmp_path / "caches", decoding=decoding, progress=False, **TINY)
    assert decodings == [decoding] * 6  # the pipeline's batches
    image = sorted(root.rglob("*.jpg"))[4]
    with open_cache(made.path) as cache:
        config = cache.feature_config
        row = next(i for i, path in enumerate(cache.paths) if path.endswith(image.name))
        cached = cache.read_rows(np.array([row])).reshape(-1)
    np.testing.assert_allclose(image_vector(config, image, layer="conv3"), cached, rtol=1e-4, atol=1e-5)
    data = load_training_data([made.path], None, None)
    try:
        reread_images(data, np.arange(2), 32, progress=False)
    finally:
        data.close()
    assert decodings == [decoding] * 9  # + neighbors' query image + the pixel baseline's two images
    run = fit([made.path], classifier="logreg", test_size=0.5, runs_dir=tmp_path / "runs", progress=False)[0]
    model = export_model(run.run_dir, tmp_path / "model.keras")
    assert read_description(model)["decoding"] == decoding
    assert load_exported(model).config.decoding == decoding
    del decodings[:]
    predict(model, [str(image)])
    assert decodings == [decoding]
