"""Declared default layers equal the ones found by building each network (the declaration saves that build)."""

from __future__ import annotations

import pytest

from transfer_cache.backbones import REGISTRY, default_layers, find_default_layers

DECLARED = sorted(name for name, spec in REGISTRY.items() if spec.default_layer is not None)


def test_the_embedded_and_test_backbones_declare_theirs():
    assert {"efficientnet_lite0", "tiny", "vgg16", "inception_v3"} <= set(DECLARED)


@pytest.mark.parametrize("name", ["tiny", "efficientnet_lite0"])
def test_declared_default_layer_is_the_last_feature_map(name):
    spec = REGISTRY[name]
    assert default_layers(name, spec.input_size) == find_default_layers(name, spec.input_size) == [spec.default_layer]


@pytest.mark.slow
@pytest.mark.parametrize("name", DECLARED)
def test_every_declared_default_layer_is_the_last_feature_map(name):
    import keras

    keras.backend.clear_session()
    spec = REGISTRY[name]
    assert find_default_layers(name, spec.input_size) == [spec.default_layer]


def test_the_feature_model_is_built_from_the_feature_config_object():
    """build_feature_model_from_config reads the FeatureConfig's attributes: its layers and input size make the model,
    and weights other than the ones the configuration records are refused before any network is built."""
    import dataclasses
    import re

    from transfer_cache._errors import TransferCacheError
    from transfer_cache.backbones import build_feature_model_from_config
    from transfer_cache.extract_options import feature_config

    config = feature_config(backbone="tiny", weights="none", layer="conv3,conv1", pooling="max", input_size=24,
                                   runtime="tensorflow")
    model = build_feature_model_from_config(config)
    assert tuple(model.inputs[0].shape[1:]) == (24, 24, 3) and len(model.outputs) == 2
    other = dataclasses.replace(config, weights_sha256="0" * 64)
    with pytest.raises(TransferCacheError, match=re.escape(
        "the weights 'none' are not the ones this cache was made with (sha256 random... vs 000000000000...); "
        "use the original weights file"
    )):
        build_feature_model_from_config(other)
