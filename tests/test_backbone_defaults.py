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
