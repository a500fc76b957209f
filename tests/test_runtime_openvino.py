"""The OpenVINO runtime against the TensorFlow reference: real photos through the embedded Lite0, the converted-model
cache, fingerprints that keep the runtimes' caches apart, and the behaviour without OpenVINO installed."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from transfer_cache import TransferCacheError
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract
from transfer_cache.extract_options import feature_config
from transfer_cache.feature_config import FeatureConfig, fingerprint
from transfer_cache.runtimes import registry

from conftest import make_class_folder

TINY = dict(backbone="tiny", weights="none", progress=False)


def test_without_openvino_auto_uses_tensorflow_and_asking_for_it_is_a_clear_error(monkeypatch, tmp_path):
    """What a machine without the openvino package sees (simulated: the package is reported absent)."""
    import dataclasses

    absent = dataclasses.replace(registry._RUNTIMES["openvino"], available=lambda: False)
    monkeypatch.setitem(registry._RUNTIMES, "openvino", absent)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert registry.auto_candidates() == ["tensorflow"]
    assert feature_config(backbone="tiny", weights="none").runtime == "tensorflow"
    with pytest.raises(TransferCacheError, match=re.escape("runtime 'openvino' is not installed here: "
                                                           "OpenVINO on the CPU (pip install openvino)")):
        extract(str(tmp_path), runtime="openvino", cache_dir=tmp_path / "c", **TINY)


LITE0 = FeatureConfig(
    backbone="efficientnet_lite0", weights="imagenet", weights_sha256="0123abcd" * 8, layers=["top_activation"],
    pooling="avg", input_size=224, resize="squash", crop_fraction=1.0, interpolation="bilinear", preprocessing="lite",
    dtype="float32", augment=0, compute_precision="float32", runtime="openvino",
)
TWO_LAYERS = FeatureConfig(
    backbone="tiny", weights="none", weights_sha256="random", layers=["conv2", "conv3"], pooling="max", input_size=32,
    resize="center-crop", crop_fraction=0.875, interpolation="bicubic", preprocessing="rescale", dtype="float16",
    augment={"views": 2, "recipe": {"flip": True}, "seed": 3}, compute_precision="mixed_float16", runtime="openvino",
)


@pytest.mark.parametrize("config, key", [
    (dataclasses.replace(LITE0, preprocessing="tf"), "efficientnet_lite0-80fea7c13bbbab9e"),
    (TWO_LAYERS, "tiny-b91476d649539a0c"),
    (LITE0, "efficientnet_lite0-eea470461de180d4"),
])
def test_the_converted_models_folder_name_stays_the_same(config, key):
    """The keys as computed from the configuration's dict before the runtimes took the FeatureConfig object: a new key
    would make every user convert every model again. Fields the network does not depend on leave it alone. The
    embedded Lite with its weights file is built from its arrays instead (``runtimes._openvino_lite``): its key names
    the builder (it was efficientnet_lite0-63b6ac89f8567e00 when converted; rebuilding it takes about a second)."""
    from transfer_cache.runtimes.openvino import model_key

    assert model_key(config) == key
    outside = dataclasses.replace(config, resize="pad", interpolation="nearest", dtype="float32", augment=0)
    assert model_key(outside) == key
    assert model_key(dataclasses.replace(config, input_size=config.input_size + 8)) != key


openvino = pytest.importorskip("openvino",
                               reason="the OpenVINO runtime needs the openvino package (pip install openvino)")


def test_auto_prefers_openvino_on_a_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            pytest.skip("this machine has a GPU: auto picks TensorFlow there")
    assert registry.auto_candidates()[0] == "openvino"


def test_runtimes_never_share_a_cache_and_tensorflow_keeps_its_fingerprint(tmp_path):
    root = make_class_folder(tmp_path / "images", per_class=2)
    tf_result = extract(str(root), cache_dir=tmp_path / "c", runtime="tensorflow", **TINY)
    ov_result = extract(str(root), cache_dir=tmp_path / "c", runtime="openvino", **TINY)
    assert tf_result.path != ov_result.path and not ov_result.hit
    base = feature_config(backbone="tiny", weights="none", runtime="tensorflow").as_dict()
    assert tf_result.path.name.endswith(f".{fingerprint({k: v for k, v in base.items() if k != 'runtime'})}.h5")
    with open_cache(tf_result.path) as a, open_cache(ov_result.path) as b:
        assert a.config["runtime"] == "tensorflow" and b.config["runtime"] == "openvino"
        np.testing.assert_allclose(a.features[:], b.features[:], rtol=1e-3, atol=1e-4)
        assert a.ids == b.ids


def test_a_converted_model_is_reused_without_tensorflow(tmp_path):
    root = make_class_folder(tmp_path / "images", per_class=2)
    extract(str(root), cache_dir=tmp_path / "first", runtime="openvino", **TINY)  # converts once
    script = (
        "import sys; from transfer_cache.extract import extract; "
        f"r = extract({str(root)!r}, cache_dir={str(tmp_path / 'second')!r}, runtime='openvino', backbone='tiny', "
        "weights='none', progress=False); "
        "print(r.computed, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["6", "False", "False"]


def test_a_damaged_converted_model_is_converted_again(tmp_path, capfd):
    from transfer_cache.runtimes.openvino import converted_model_path

    root = make_class_folder(tmp_path / "images", per_class=2)
    config = feature_config(backbone="tiny", weights="none", runtime="openvino")
    first = extract(str(root), cache_dir=tmp_path / "a", runtime="openvino", **TINY)
    path = converted_model_path(config)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])  # truncated by a full disk, say
    capfd.readouterr()
    again = extract(str(root), cache_dir=tmp_path / "b", runtime="openvino", **TINY)
    assert f"the converted model in {path.parent} does not match what was recorded at conversion (damaged?); " \
        "converting again" in capfd.readouterr().err.splitlines()
    assert path.read_bytes() == good
    with open_cache(first.path) as a, open_cache(again.path) as b:
        np.testing.assert_array_equal(a.features[:], b.features[:])


def test_several_layers_come_out_in_their_order(tmp_path):
    root = make_class_folder(tmp_path / "images", per_class=2)
    options = dict(layer="conv3,conv1", cache_dir=tmp_path / "c", **TINY)
    tf_cache = extract(str(root), runtime="tensorflow", **options).path
    ov_cache = extract(str(root), runtime="openvino", **options).path
    with open_cache(tf_cache) as a, open_cache(ov_cache) as b:
        for layer in ("conv3", "conv1"):
            assert a.features_for(layer).shape == b.features_for(layer).shape
            np.testing.assert_allclose(a.features_for(layer)[:], b.features_for(layer)[:], rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- real photos, real weights


def _photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    sample = dict(zip(("china", "flower"), load_sample_images().images))
    return {"coffee": data.coffee(), "chelsea": data.chelsea(), "rocket": data.rocket(), **sample}


@pytest.fixture(scope="module")
def lite0_vectors(tmp_path_factory):
    """The reference photos through the embedded Lite0 with each runtime, via extract (same files, same crop)."""
    root = tmp_path_factory.mktemp("photos")
    for name, array in _photos().items():
        (root / name).mkdir()
        Image.fromarray(array).save(root / name / f"{name}.png")
    vectors = {}
    for runtime in ("tensorflow", "openvino"):
        result = extract(str(root), cache_dir=root.parent / f"caches-{runtime}", runtime=runtime, progress=False)
        with open_cache(result.path) as cache:
            vectors[runtime] = (cache.paths, cache.features[:])
    return vectors


def test_openvino_vectors_are_within_cosine_0_9999_of_tensorflow_on_real_photos(lite0_vectors):
    (paths, tf), (paths_ov, ov) = lite0_vectors["tensorflow"], lite0_vectors["openvino"]
    assert paths == paths_ov and len(paths) == 5
    cosine = (tf * ov).sum(axis=1) / (np.linalg.norm(tf, axis=1) * np.linalg.norm(ov, axis=1))
    assert cosine.min() >= 0.9999, dict(zip(paths, cosine))
    # with the weights kept in float32 the vectors agree far closer still (7e-6 measured; OpenVINO's default float16
    # weights moved them by up to 0.03)
    assert np.abs(tf - ov).max() <= 1e-4, np.abs(tf - ov).max()


def test_top1_of_the_embedded_lite0_is_unchanged_on_the_reference_photos(lite0_vectors):
    """The ImageNet classifier of Lite0 applied to each runtime's pooled vectors gives DESIGN's reference classes."""
    from transfer_cache._efficientnet_lite import build_efficientnet_lite

    full = build_efficientnet_lite("efficientnet_lite0", include_top=True)
    kernel, bias = full.layers[-1].get_weights()
    expected = {"chelsea/chelsea.png": 282, "china/china.png": 698, "coffee/coffee.png": 967, "flower/flower.png": 985,
                "rocket/rocket.png": 657}
    for runtime, (paths, vectors) in lite0_vectors.items():
        top1 = np.argmax(vectors @ kernel + bias, axis=1)
        assert dict(zip(paths, top1.tolist())) == expected, runtime


# --------------------------------------------------------------------------- saying when a conversion takes time


CONVERTED_LINE = r"converting tiny for OpenVINO \(once per machine\)\.\.\. converted in \d+\.\d s"


def test_a_first_run_says_once_that_it_converts_and_how_long_it_took(tmp_path, monkeypatch, capfd):
    """On a new machine (an empty models folder) the conversion takes seconds: one stderr line says so; the second
    run reads the converted model and says nothing of it."""
    monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(tmp_path / "fresh-models"))
    root = make_class_folder(tmp_path / "images", per_class=2)
    capfd.readouterr()
    extract(str(root), cache_dir=tmp_path / "first", runtime="openvino", **TINY)
    said = [line for line in capfd.readouterr().err.splitlines() if "OpenVINO" in line]
    assert len(said) == 1 and re.fullmatch(CONVERTED_LINE, said[0]), said
    extract(str(root), cache_dir=tmp_path / "second", runtime="openvino", **TINY)
    assert "OpenVINO" not in capfd.readouterr().err


@pytest.mark.slow
def test_the_conversion_line_stays_whole_between_the_progress_bars(tmp_path):
    """The command as a user runs it, bars drawn: the line is whole on screen, and only on the first run."""
    import os

    root = make_class_folder(tmp_path / "images", per_class=2)
    env = {**os.environ, "TRANSFER_CACHE_MODELS": str(tmp_path / "fresh-models")}

    def run(cache_dir: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "transfer_cache.extract", str(root), "--runtime", "openvino", "--backbone", "tiny",
             "--weights", "none", "--cache-dir", str(tmp_path / cache_dir)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return [line.split("\r")[-1] for line in done.stderr.split("\n")]  # what stays on screen of each line

    said = [line for line in run("first") if "OpenVINO" in line]
    assert len(said) == 1 and re.fullmatch(CONVERTED_LINE, said[0]), said
    assert not [line for line in run("second") if "OpenVINO" in line]


def test_a_failed_conversion_ends_its_line_and_a_drawn_bar_gets_whole_lines(capsys):
    from tqdm import tqdm

    from transfer_cache.runtimes.openvino import _announced

    with pytest.raises(TransferCacheError):
        with _announced("tiny"):
            raise TransferCacheError("weights file x.h5 does not exist")
    assert capsys.readouterr().err == "converting tiny for OpenVINO (once per machine)... failed\n"
    with tqdm(total=2, desc="bench", file=sys.stderr) as bar:
        with _announced("tiny"):
            bar.update(1)
    lines = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n")]
    assert "converting tiny for OpenVINO (once per machine)..." in lines
    assert any(re.fullmatch(r"\.\.\. converted in \d+\.\d s", line) for line in lines), lines


@pytest.mark.parametrize("runtime", ["tensorflow", "openvino"])
def test_each_runtime_forward_takes_the_feature_config(runtime):
    """Runtime.forward(FeatureConfig, ...): the warm forward pass computes what the Keras model of that configuration
    computes, one array per layer in the configuration's order, for a batch shorter than the batch size."""
    from transfer_cache.backbones import build_feature_model_from_config

    config = feature_config(backbone="tiny", weights="none", layer="conv3,conv1", runtime=runtime)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    got = registry.get_runtime(runtime).forward(config, batch_size=4)(pixels)
    want = build_feature_model_from_config(config)(pixels.astype(np.float32), training=False)
    assert [g.shape for g in got] == [(3, 32), (3, 8)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-3, atol=1e-4)


def test_the_conversion_child_rebuilds_the_feature_config_and_passes_a_users_mistake_on(tmp_path, monkeypatch):
    """The configuration crosses to the conversion child as JSON and is rebuilt there as a FeatureConfig: the child
    checks its weights like the parent would, and its one-line message (exit 3) is the parent's error, word for word.
    Nothing is left in the models folder."""
    from transfer_cache.runtimes import openvino as ov_runtime

    monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(tmp_path / "models"))
    config = dataclasses.replace(
        feature_config(backbone="tiny", weights="none", runtime="openvino"), weights_sha256="f" * 64
    )
    with pytest.raises(TransferCacheError) as caught:
        ov_runtime.convert(config)
    assert str(caught.value) == (
        "the weights 'none' are not the ones this cache was made with (sha256 random... vs ffffffffffff...); "
        "use the original weights file"
    )
    assert not (tmp_path / "models" / "openvino" / ov_runtime.model_key(config)).exists()
    assert [p.name for p in (tmp_path / "models" / "openvino").iterdir()] == [f"{ov_runtime.model_key(config)}.lock"]
