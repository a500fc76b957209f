"""The embedded EfficientNet-Lite built for OpenVINO from its weight arrays (``runtimes._openvino_lite``): the same
vectors as the Keras model of the same configuration on real photos, a first extraction that never starts TensorFlow,
the one line it says, the models folder's record and probe check, and a wrong weights file named as the Keras port
names it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.extract_options import feature_config

from photos import make_photo_folder, varied_crops

openvino = pytest.importorskip("openvino", reason="the OpenVINO runtime needs the openvino package")

from transfer_cache.runtimes import _openvino_lite as lite_build  # noqa: E402
from transfer_cache.runtimes import openvino as ov_runtime  # noqa: E402
from transfer_cache.runtimes._openvino_convert import COMPILE_CONFIG  # noqa: E402


def _real_photos(size: int) -> np.ndarray:
    """Eight crops of scikit-image's photos, centre-cropped and resized as the Lite evaluation does: uint8 pixels."""
    from skimage import data

    from transfer_cache._efficientnet_lite import center_crop_for_eval

    crops = [crop for name in ("chelsea", "coffee", "rocket", "astronaut")
             for crop in varied_crops(getattr(data, name)(), 2, seed=1)]
    return np.stack([center_crop_for_eval(crop, size) for crop in crops])


def _per_image(got: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, max abs difference) of each image's vector."""
    got, want = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    return cosine, np.abs(got - want).max(axis=1)


CONFIGS = {
    "lite0 default": dict(),
    "lite1 default": dict(backbone="efficientnet_lite1"),
    "lite2 default": dict(backbone="efficientnet_lite2"),
    "three layers, max": dict(layer="block6a_expand_activation,stem_conv,top_activation", pooling="max"),
    "maps flattened at 96": dict(layer="block2b_add,avg_pool,input,block3a_dwconv", pooling="flatten", input_size=96),
    "a map unpooled": dict(layer="top_bn", pooling="none"),
}


@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_built_model_computes_the_keras_models_vectors_on_real_photos(options):
    """Per image and layer: cosine >= 0.9999 and max abs difference <= 1e-4 (on the scale of the layer's values when
    they exceed 1, as the models folder's probe check measures: an unpooled map before its ReLU6 reaches 50). The
    convolution layers come out unfolded; measured: cosine >= 0.9999998, differences <= 4e-5 (1.8e-4 on a map of 56)."""
    from transfer_cache.backbones import build_feature_model_from_config

    config = feature_config(runtime="openvino", **options)
    assert lite_build.builds(config)
    pixels = _real_photos(int(config.input_size)).astype(np.float32)
    compiled = openvino.Core().compile_model(lite_build.build_model(config), "CPU", COMPILE_CONFIG)
    results = compiled({0: pixels})
    got = {output.get_any_name(): results[output] for output in compiled.outputs}
    want = build_feature_model_from_config(config)(pixels, training=False)
    want = want if isinstance(want, (list, tuple)) else [want]
    assert sorted(got) == [f"output_{i}" for i in range(len(want))]
    for i, (layer, expected) in enumerate(zip(config.layers, want)):
        expected = np.asarray(expected)
        assert got[f"output_{i}"].shape == expected.shape, layer
        cosine, off = _per_image(got[f"output_{i}"], expected)
        assert cosine.min() >= 0.9999, (layer, cosine)
        assert off.max() <= 1e-4 * max(1.0, float(np.abs(expected).max())), (layer, off)


def test_what_is_built_and_what_keeps_the_keras_conversion():
    """The Lite variants with a weights file, their own preprocessing and their layers; everything else converts."""
    lite0 = feature_config(runtime="openvino")
    assert lite_build.builds(lite0)
    assert lite_build.builds(dataclasses.replace(lite0, layers=["block3a_project_conv", "top_conv"], pooling="none"))
    for other in (dict(weights="none", weights_sha256="random"), dict(preprocessing="tf"), dict(layers=["predictions"]),
                  dict(backbone="tiny", weights="none", weights_sha256="random", layers=["conv3"], input_size=32)):
        assert not lite_build.builds(dataclasses.replace(lite0, **other)), other


def test_a_built_model_has_its_own_folder_and_every_other_key_stays():
    """The key of a built model names its builder (a model converted by an earlier version is not taken for it);
    the Lite with random weights keeps the key of the conversion, as every other backbone does."""
    built = feature_config(runtime="openvino")
    converted = dataclasses.replace(built, weights="none", weights_sha256="random")
    fields = {name: getattr(built, name) for name in ov_runtime.MODEL_FIELDS}
    assert ov_runtime.model_key(built) != ov_runtime.model_key(dataclasses.replace(built, weights_sha256="0" * 64))
    identity = json.dumps({"built": lite_build.BUILD, **fields}, sort_keys=True)
    assert ov_runtime.model_key(built).endswith(__import__("hashlib").sha256(identity.encode()).hexdigest()[:16])
    fields["weights_sha256"] = "random"
    identity = json.dumps({"conversion": ov_runtime.CONVERSION, **fields}, sort_keys=True)
    assert ov_runtime.model_key(converted).endswith(__import__("hashlib").sha256(identity.encode()).hexdigest()[:16])


_FIRST_RUN = """
import json, sys
from transfer_cache.extract import extract
result = extract(sys.argv[1], cache_dir=sys.argv[2], runtime="openvino", progress=False)
print(json.dumps({"computed": result.computed, "path": str(result.path),
                  "started": sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules)}))
"""

BUILT_LINE = r"building efficientnet_lite0 for OpenVINO from its weights \(once per machine\)\.\.\. built in \d+\.\d s"


def test_a_first_extraction_with_an_empty_models_folder_starts_no_tensorflow(tmp_path):
    """A new machine: the model is built (one line says so and how long), no TensorFlow or Keras module is imported,
    the folder holds the model with its record, and the second run reads it silently, to the same vectors."""
    from transfer_cache.cache import open_cache

    photos = make_photo_folder(tmp_path / "photos", per_class=3)
    env = {**os.environ, "TRANSFER_CACHE_MODELS": str(tmp_path / "models")}

    def run(caches: str) -> tuple[dict, list[str]]:
        done = subprocess.run([sys.executable, "-c", _FIRST_RUN, str(photos), str(tmp_path / caches)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1]), [
            line for line in done.stderr.splitlines() if "OpenVINO" in line]

    first, said = run("first")
    assert first["computed"] == 9 and first["started"] == [], first
    assert len(said) == 1 and re.fullmatch(BUILT_LINE, said[0]), said
    folder = ov_runtime.converted_model_path(feature_config(runtime="openvino")).parent
    folder = tmp_path / "models" / "openvino" / folder.name
    record = json.loads((folder / "record.json").read_text())
    assert record["method"] == lite_build.BUILD and sorted(record["files"]) == sorted(
        ["model.xml", "model.bin", "config.json", "reference.npz"])
    second, said = run("second")
    assert said == [] and second["started"] == []
    with open_cache(first["path"]) as a, open_cache(second["path"]) as b:
        np.testing.assert_array_equal(a.features[:], b.features[:])


def test_a_damaged_built_model_is_built_again_before_any_vector(tmp_path, monkeypatch, capfd):
    """The record and the probe check hold for a built model as for a converted one."""
    monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(tmp_path / "models"))
    config = feature_config(runtime="openvino")
    pixels = _real_photos(224)[:3]
    clean = ov_runtime.forward_for_config(config, batch_size=4)(pixels)[0]
    model_bin = ov_runtime.converted_model_path(config).with_name("model.bin")
    data = bytearray(model_bin.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_bin.write_bytes(bytes(data))
    capfd.readouterr()
    again = ov_runtime.forward_for_config(config, batch_size=4)(pixels)[0]
    said = capfd.readouterr().err
    assert "does not match what was recorded at conversion (damaged?); converting again" in said
    assert re.search(BUILT_LINE, said), said
    np.testing.assert_array_equal(clean, again)


def test_a_weights_file_of_another_variant_is_named_as_the_keras_port_names_it(tmp_path):
    from transfer_cache._efficientnet_lite import build_efficientnet_lite, weights_path
    from transfer_cache._hashing import file_sha256

    other = weights_path("efficientnet_lite1")
    config = dataclasses.replace(feature_config(runtime="openvino"), weights=str(other),
                                 weights_sha256=file_sha256(other))
    with pytest.raises(TransferCacheError) as keras_said:
        build_efficientnet_lite("efficientnet_lite0", include_top=False, weights=other)
    with pytest.raises(TransferCacheError) as built_said:
        lite_build.build_model(config)
    assert str(built_said.value) == str(keras_said.value)
    assert "that efficientnet_lite0 does not use" in str(built_said.value)
    mismatch = dataclasses.replace(config, weights_sha256="f" * 64)
    with pytest.raises(TransferCacheError, match=re.escape("are not the ones this cache was made with")):
        lite_build.build_model(mismatch)


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_the_walk_names_every_layer_of_the_keras_model(variant):
    """``builds`` accepts a layer by the walk's names (no Keras built): they are the Keras model's, in order."""
    from transfer_cache._efficientnet_lite import build_efficientnet_lite, layer_names

    model = build_efficientnet_lite(variant, include_top=False, weights=None, input_size=64)
    assert layer_names(variant) == [layer.name for layer in model.layers]
