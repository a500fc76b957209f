"""The extract stage end to end: real image files, real HDF5, a real (tiny) TensorFlow network."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import transfer_cache as tc
from transfer_cache import TransferCacheError
from transfer_cache.cache import cache_lock, open_cache
from transfer_cache.extract import extract, main
from transfer_cache.extract_options import feature_config
from transfer_cache.feature_config import FeatureConfig

from conftest import make_class_folder, write_image

TINY = dict(backbone="tiny", weights="none", progress=False)


def _direct_features(config, images):
    """The backbone called directly on the same resized images: what the cache must hold."""
    from transfer_cache._imaging import resize_image
    from transfer_cache.backbones import build_feature_model_from_config

    model = build_feature_model_from_config(FeatureConfig.from_attrs(config))
    batch = np.stack(
        [
            resize_image(
                image,
                size=config["input_size"],
                policy=config["resize"],
                crop_fraction=config["crop_fraction"],
                interpolation=config["interpolation"],
            )
            for image in images
        ]
    ).astype("float32")
    return np.asarray(model(batch, training=False))


def test_mixed_folder_keeps_good_images_and_lists_bad_ones(tmp_path, cache_dir):
    root = tmp_path / "photos"
    write_image(root / "train" / "cat" / "a.png", seed=1)
    write_image(root / "train" / "cat" / "b.jpg", seed=2, mode="L", fmt="JPEG")
    write_image(root / "train" / "dog" / "c.png", seed=3, mode="RGBA")
    write_image(root / "train" / "dog" / "d.bmp", seed=4)
    write_image(root / "test" / "cat" / "e.png", seed=5, mode="P")
    write_image(root / "test" / "dog" / "f.gif", seed=6)
    (root / "train" / "dog" / "empty.png").write_bytes(b"")
    (root / "train" / "cat" / "notes.jpg").write_text("this is not an image")
    good = (root / "test" / "dog" / "f.gif").read_bytes()
    (root / "test" / "dog" / "broken.png").write_bytes(
        (root / "train" / "cat" / "a.png").read_bytes()[:60]
    )

    result = extract(str(root), cache_dir=cache_dir, **TINY)

    assert result.rows == 6 and result.computed == 6 and result.reused == 0
    with open_cache(result.path) as cache:
        assert cache.class_names == ["cat", "dog"]
        assert cache.paths == [
            "test/cat/e.png",
            "test/dog/f.gif",
            "train/cat/a.png",
            "train/cat/b.jpg",
            "train/dog/c.png",
            "train/dog/d.bmp",
        ]
        assert cache.labels.tolist() == [0, 1, 0, 0, 1, 1]
        assert list(cache.split) == ["test", "test", "train", "train", "train", "train"]
        assert cache.features.shape == (6, 32)
        assert np.isfinite(cache.features[:]).all()
        failed = dict(cache.failed)
        assert sorted(failed) == ["test/dog/broken.png", "train/cat/notes.jpg", "train/dog/empty.png"]
        assert failed["train/dog/empty.png"] == "empty file (0 bytes)"
        assert failed["train/cat/notes.jpg"].startswith("not an image")
        assert cache.ids[1] == __import__("hashlib").sha256(good).hexdigest()
    assert len(result.failed) == 3


def test_features_equal_a_direct_call_of_the_backbone(image_folder, cache_dir):
    result = extract(str(image_folder), cache_dir=cache_dir, batch_size=5, runtime="tensorflow", **TINY)
    from transfer_cache.sources import open_source

    source = open_source(str(image_folder))
    with open_cache(result.path) as cache:
        expected = _direct_features(cache.config, [source.load(i) for i in range(len(source))])
        np.testing.assert_allclose(cache.features[:], expected, rtol=1e-5, atol=1e-5)


def test_second_run_is_a_cache_hit_and_new_images_are_the_only_work(image_folder, cache_dir):
    first = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    mtime = first.path.stat().st_mtime_ns
    second = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    assert second.hit and second.computed == 0 and second.path == first.path
    assert first.path.stat().st_mtime_ns == mtime  # not even rewritten

    for i in range(3):
        write_image(image_folder / "dog" / f"new_{i}.png", seed=100 + i)
    third = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    assert (third.computed, third.reused, third.rows) == (3, 12, 15)
    with open_cache(first.path) as cache:
        assert len(cache) == 15
        fresh = extract(str(image_folder), cache_dir=cache_dir.parent / "fresh", **TINY)
        with open_cache(fresh.path) as reference:
            assert cache.ids == reference.ids
            np.testing.assert_allclose(cache.features[:], reference.features[:], rtol=1e-5, atol=1e-6)

    (image_folder / "cat" / "cat_000.png").unlink()
    fourth = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    assert (fourth.computed, fourth.rows) == (0, 14)


@pytest.mark.parametrize(
    "change",
    [
        {"pooling": "max"},
        {"input_size": 40},
        {"dtype": "float16"},
        {"resize": "pad"},
        {"layer": "conv2"},
        {"preprocessing": "rescale"},
    ],
)
def test_changing_any_fingerprint_field_makes_a_new_file(image_folder, cache_dir, change):
    # the TensorFlow runtime: a changed network is built in-process instead of converted in a child (seconds each)
    base = extract(str(image_folder), cache_dir=cache_dir, runtime="tensorflow", **TINY)
    other = extract(str(image_folder), cache_dir=cache_dir, runtime="tensorflow", **TINY, **change)
    assert other.path != base.path and not other.hit
    with open_cache(base.path) as a, open_cache(other.path) as b:
        assert a.fingerprint != b.fingerprint
        assert a.fingerprint in base.path.name and b.fingerprint in other.path.name


def test_several_layers_come_out_of_one_pass(image_folder, cache_dir):
    # in-process TensorFlow (runtime-independent; the OpenVINO side: tests/test_runtime_openvino.py)
    result = extract(str(image_folder), cache_dir=cache_dir, layer="conv2,conv3", runtime="tensorflow", **TINY)
    with open_cache(result.path) as cache:
        assert cache.layers == ["conv2", "conv3"]
        assert cache.features_for("conv2").shape == (12, 16)
        assert cache.features_for("conv3").shape == (12, 32)
        with pytest.raises(TransferCacheError, match=re.escape("use features_for(layer) to choose one")):
            cache.features
    with h5py.File(result.path, "r") as raw:  # plain h5py sees the documented layout
        assert set(raw["features"]) == {"conv2", "conv3"}
        assert raw.attrs["format"] == "transfer_cache"


def test_cache_attributes_describe_the_configuration(image_folder, cache_dir):
    result = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    with open_cache(result.path) as cache:
        config = cache.config
    assert config["backbone"] == "tiny"
    assert config["weights"] == "none" and config["weights_sha256"] == "random"
    assert config["layers"] == ["conv3"] and config["pooling"] == "avg"
    assert config["input_size"] == 32 and config["resize"] == "squash"
    assert config["preprocessing"] == "tf" and config["dtype"] == "float32"
    assert config["source"] == f"folder:{image_folder.resolve()}"
    assert config["feature_dim"] == 32
    assert set(config["versions"]) >= {"transfer_cache", "tensorflow", "keras", "h5py"}


def test_local_weights_file_is_loaded_and_fingerprinted(image_folder, cache_dir, tmp_path):
    from transfer_cache.backbones import file_sha256, get_spec

    model = get_spec("tiny").build(32, None, False)
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(weights)

    result = extract(str(image_folder), cache_dir=cache_dir, backbone="tiny", weights=str(weights), progress=False,
                     runtime="tensorflow")
    random = extract(str(image_folder), cache_dir=cache_dir, runtime="tensorflow", **TINY)
    with open_cache(result.path) as cache, open_cache(random.path) as other:
        assert cache.config["weights_sha256"] == file_sha256(weights)
        assert cache.fingerprint != other.fingerprint
        assert not np.allclose(cache.features[:], other.features[:])


def test_imagenet_weights_offline_fail_with_one_clear_sentence(image_folder, cache_dir):
    with pytest.raises(TransferCacheError) as info:
        extract(str(image_folder), cache_dir=cache_dir, backbone="mobilenet_v2", input_size=32, progress=False)
    message = str(info.value)
    if "could not download" not in message:
        pytest.skip("this machine can download Keras weights")
    assert message == (
        "could not download the ImageNet weights of 'mobilenet_v2' (no network?): pass --weights PATH to a local "
        "weights file, use --backbone efficientnet_lite0 whose weights ship with the package, or --weights none for "
        "random weights (tests only)"
    )
    assert not list(cache_dir.glob("*.h5"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "resnet5"}, "unknown backbone 'resnet5'; choose one of: "),
        ({"pooling": "mean"}, "pooling must be one of 'avg', 'max', 'flatten', 'none'; got 'mean'"),
        ({"resize": "crop"}, "resize policy must be one of 'squash', 'center-crop', 'pad'; got 'crop'"),
        ({"dtype": "float64"}, "dtype must be one of 'float32', 'float16'; got 'float64'"),
        ({"batch_size": 0}, "batch size must be a whole number of at least 1; got 0"),
        ({"shard": "4/4"}, "shard must look like K/N with 0 <= K < N (e.g. 0/4); got '4/4'"),
        ({"weights": "missing.h5"}, "weights must be 'imagenet', 'none' or the path of a weights file; "
                                    "'missing.h5' is none of these (no such file)"),
        ({"layer": "conv9"}, "backbone 'tiny' has no layer 'conv9'"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(image_folder, cache_dir, kwargs, message):
    arguments = {**TINY, **kwargs}
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        extract(str(image_folder), cache_dir=cache_dir, **arguments)
    assert not cache_dir.exists() or not list(cache_dir.glob("*.h5"))


def test_a_second_writer_gets_a_clear_error(image_folder, cache_dir):
    first = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    with cache_lock(first.path):
        with pytest.raises(TransferCacheError, match=re.escape("another extraction is writing")):
            extract(str(image_folder), cache_dir=cache_dir, **TINY)


def test_the_cli_prints_a_summary_and_refuses_mistakes_without_a_traceback(image_folder, cache_dir, capsys):
    assert main(
        [str(image_folder), "--backbone", "tiny", "--weights", "none", "--cache-dir", str(cache_dir), "--quiet"]
    ) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^12 rows written \(12 computed, 0 reused\), 0 failed, [\d.]+ images/s, [\d.]+ s -> .+\.h5$", out.strip()
    )

    assert main([str(image_folder), "--backbone", "nope", "--cache-dir", str(cache_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m transfer_cache.extract: error: unknown backbone 'nope'; choose one of:")
    assert "Traceback" not in err

    assert main([str(image_folder / "nowhere"), "--backbone", "tiny", "--weights", "none"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("cache_dir_arg, blocker", [("a_file", "a_file"), ("a_file/caches", "a_file")])
def test_a_cache_dir_that_is_a_file_is_one_line_exit_2_before_any_work(
        image_folder, tmp_path, capsys, cache_dir_arg, blocker):
    """--cache-dir naming a file (or a folder under one) used to end in a FileExistsError traceback, exit 1."""
    (tmp_path / "a_file").write_text("notes\n")
    target = tmp_path / cache_dir_arg
    assert main(
        [str(image_folder), "--backbone", "tiny", "--weights", "none", "--cache-dir", str(target), "--quiet"]
    ) == 2
    where = "is a file" if cache_dir_arg == blocker else f"cannot be created: {tmp_path / blocker} is a file"
    assert capsys.readouterr().err == (
        f"python -m transfer_cache.extract: error: cache folder {target} {where}, not a folder; give --cache-dir a "
        "folder path (it is created when missing)\n"
    )
    assert (tmp_path / "a_file").read_text() == "notes\n"
    with pytest.raises(TransferCacheError, match=re.escape(f"cache folder {target} {where}")):
        extract(str(image_folder), cache_dir=target, shards=2, **TINY)  # the sharded path checks it as early


def test_cli_help_shows_an_example():
    completed = subprocess.run(
        [sys.executable, "-m", "transfer_cache.extract", "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0
    assert "python -m transfer_cache.extract sklearn:digits" in completed.stdout
    assert "--backbone" in completed.stdout and "--cache-dir" in completed.stdout


_CHILD = textwrap.dedent(
    """
    import sys
    from transfer_cache.extract import extract
    extract(sys.argv[1], cache_dir=sys.argv[2], backbone="tiny", weights="none", batch_size=2, progress=False)
    """
)


def _finished_caches(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*.h5") if not p.name.startswith(".")]


def test_sigkill_mid_extraction_leaves_no_false_cache_and_the_rerun_resumes(tmp_path):
    root = make_class_folder(tmp_path / "many", per_class=60)
    killed_dir = tmp_path / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(killed_dir)], env=env)
    deadline = time.monotonic() + 120
    parts = None
    while time.monotonic() < deadline:
        found = list(killed_dir.glob(".*.parts/part-*.npz")) if killed_dir.exists() else []
        if len(found) >= 5:
            parts = found
            break
        if child.poll() is not None:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    if parts is None:
        pytest.fail("the child finished or stalled before it could be killed mid-extraction")
    assert _finished_caches(killed_dir) == []

    resumed = extract(str(root), cache_dir=killed_dir, backbone="tiny", weights="none", batch_size=2, progress=False)
    assert resumed.reused >= 2 * 5 - 2 and resumed.computed < 180
    reference = extract(
        str(root), cache_dir=tmp_path / "clean", backbone="tiny", weights="none", batch_size=2, progress=False
    )
    with open_cache(resumed.path) as a, open_cache(reference.path) as b:
        assert a.ids == b.ids and a.paths == b.paths and a.labels.tolist() == b.labels.tolist()
        np.testing.assert_allclose(a.features[:], b.features[:], rtol=1e-6, atol=1e-6)
        # what the cache cost counts the killed run's batches too, not only the resuming run's
        assert a.config["extraction_computed"] == 180 and resumed.computed < 180
        assert a.config["extraction_seconds"] > resumed.compute_seconds
    assert not list(killed_dir.glob(".*.parts"))  # finished: the work folder is gone
    assert not list(killed_dir.glob(".*.tmp-*"))


def test_damaged_cache_is_recomputed_never_read(image_folder, cache_dir, capsys):
    first = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 3])
    with pytest.raises(TransferCacheError, match=re.escape("the file is damaged")):
        open_cache(first.path)
    again = extract(str(image_folder), cache_dir=cache_dir, **TINY)
    assert again.computed == 12 and not again.hit
    assert "recomputing it" in capsys.readouterr().err
    with open_cache(again.path) as cache:
        assert len(cache) == 12


def test_public_api_is_importable_lazily():
    assert tc.extract is extract
    assert tc.open_cache is open_cache
    with pytest.raises(AttributeError):
        tc.nonexistent


def test_lite0_features_through_extract_equal_the_keras_models_pooled_output(tmp_path, cache_dir):
    """The embedded backbone end to end: real photos, real ImageNet weights, the reference evaluation crop."""
    import keras
    from skimage import data as photos

    from transfer_cache._efficientnet_lite import build_efficientnet_lite, center_crop_for_eval, preprocess_lite

    root = tmp_path / "photos"
    pictures = {"coffee": photos.coffee(), "chelsea": photos.chelsea(), "rocket": photos.rocket()}
    for name, array in pictures.items():
        (root / name).mkdir(parents=True)
        Image.fromarray(array).save(root / name / f"{name}.png")

    result = extract(str(root), cache_dir=cache_dir, progress=False, runtime="tensorflow")  # the default backbone
    full = build_efficientnet_lite("efficientnet_lite0", include_top=True)
    pooled = keras.Model(full.inputs, [full.get_layer("avg_pool").output, full.output])
    crops = np.stack(
        [center_crop_for_eval(Image.fromarray(pictures[n]), 224) for n in sorted(pictures)]
    ).astype("float32")
    features, probabilities = (np.asarray(t) for t in pooled(preprocess_lite(crops)))
    with open_cache(result.path) as cache:
        assert cache.config["backbone"] == "efficientnet_lite0" and cache.config["weights"] == "imagenet"
        assert cache.paths == ["chelsea/chelsea.png", "coffee/coffee.png", "rocket/rocket.png"]
        np.testing.assert_allclose(cache.features[:], features, rtol=1e-4, atol=1e-4)
    assert probabilities.argmax(axis=1).tolist()[1] == 967  # espresso


def test_prepare_image_resizes_as_the_feature_config_says(tmp_path):
    """pipeline.prepare_image reads the FeatureConfig's input size, resize policy, crop and filter."""
    import io

    from transfer_cache._imaging import resize_image
    from transfer_cache.pipeline import prepare_image

    config = feature_config(backbone="tiny", weights="none", input_size=20, resize="center-crop",
                                   interpolation="bicubic", runtime="tensorflow")
    array = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    want = resize_image(array, size=20, policy="center-crop", crop_fraction=config.crop_fraction,
                        interpolation="bicubic")
    assert want.shape == (20, 20, 3)
    np.testing.assert_array_equal(prepare_image(buffer.getvalue(), config=config), want)
    np.testing.assert_array_equal(prepare_image(array, config=config), want)
