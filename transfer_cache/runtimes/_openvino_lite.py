"""The embedded EfficientNet-Lite built for OpenVINO straight from its weight arrays, without TensorFlow.

The Keras port (``_efficientnet_lite``) and this builder walk the same network (``lite_features``, with the same layer
names and state-dict keys), so the two cannot drift apart. Here each convolution is followed by its batch norm folded
into it (kernel scaled per output channel, the shift as a bias: what ``tf.nn.batch_normalization`` computes, in one
pass); ReLU6 is a clamp, the pooling a reduction, and the preprocessing ``(x - 127) / 128`` comes first, in float32 on
NHWC pixels as in the Keras model, then the graph runs in OpenVINO's NCHW layout. A layer asked for by the name of a
convolution (the value before its batch norm) gets an unfolded copy of that convolution as its output.

What it builds: a Lite variant, its weights from a file (``imagenet`` or a path; random weights keep the Keras
conversion, which seeds them the Keras way), the ``lite`` preprocessing, any of its layers and any pooling.
Everything else is converted from the Keras model as before (``_openvino_convert``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import _efficientnet_lite as lite

BUILD = "opset-1"  # how the model is built (the key of its folder says it): version 1 of this builder
PREPROCESSING = "lite"


def builds(config) -> bool:
    """Whether the model of ``config`` (a ``FeatureConfig``) is built here from the weight arrays (no TensorFlow);
    cheap: nothing is read or imported."""
    if config.backbone not in lite.LITE_VARIANTS or str(config.weights).lower() == "none":
        return False
    if config.preprocessing != PREPROCESSING or int(config.input_size) < lite.MIN_INPUT_SIZE:
        return False
    names = set(lite.layer_names(config.backbone))
    return all(layer in names for layer in config.layers)


def weights_file(config) -> Path:
    """The weights file of ``config``, checked to be the one its ``weights_sha256`` names (as the Keras model's
    rebuild checks it)."""
    from ..backbones import checked_weights

    return Path(checked_weights(config))


class _Pending:
    """A convolution waiting for its batch norm, which is folded into its kernel."""

    def __init__(self, x, kernel: np.ndarray, stride: int, depthwise: bool):
        self.x, self.kernel, self.stride, self.depthwise = x, kernel, stride, depthwise


class _OpenVinoGraph(lite.Plan):
    """The OpenVINO backend of ``lite_features``: nodes of the opset API, NCHW, batch norms folded. ``tensors`` holds
    the node of every layer asked for (``wanted``), by its Keras name."""

    def __init__(self, ops, state: dict, source, wanted: set[str]):
        super().__init__()
        self.ops, self.state, self.source, self.wanted = ops, state, source, wanted
        self.tensors = {}

    def _weights(self, key: str, expected: tuple, layer: str) -> np.ndarray:
        array = np.asarray(self.state[key], dtype=np.float64)
        if array.shape != expected:
            raise lite.shape_error(self.source, key, array.shape, layer, expected)
        return array

    def _keep(self, name: str, node):
        if name in self.wanted:
            self.tensors[name] = node
        return node

    def _convolve(self, x, kernel: np.ndarray, stride: int, depthwise: bool):
        ops, strides, zeros = self.ops, [stride, stride], [0, 0]
        if depthwise:  # (C, 1, k, k) -> groups of one channel: (C, 1, 1, k, k)
            weights = ops.constant(kernel.astype(np.float32)[:, None])
            return ops.group_convolution(x, weights, strides, zeros, zeros, [1, 1], auto_pad="same_upper")
        weights = ops.constant(kernel.astype(np.float32))
        return ops.convolution(x, weights, strides, zeros, zeros, [1, 1], auto_pad="same_upper")  # TF's 'same'

    def conv(self, x, filters, kernel, stride, name, torch_name):
        super().conv(x, filters, kernel, stride, name, torch_name)
        channels = x.get_output_partial_shape(0)[1].get_length()
        weights = self._weights(f"{torch_name}.weight", (filters, channels, kernel, kernel), name)
        if name in self.wanted:
            self._keep(name, self._convolve(x, weights, stride, depthwise=False))
        return _Pending(x, weights, stride, depthwise=False)

    def depthwise_conv(self, x, kernel, stride, name, torch_name):
        super().depthwise_conv(x, kernel, stride, name, torch_name)
        channels = x.get_output_partial_shape(0)[1].get_length()
        weights = self._weights(f"{torch_name}.weight", (channels, 1, kernel, kernel), name)
        if name in self.wanted:
            self._keep(name, self._convolve(x, weights, stride, depthwise=True))
        return _Pending(x, weights, stride, depthwise=True)

    def bn(self, x: _Pending, name, torch_name):
        super().bn(x, name, torch_name)
        channels = x.kernel.shape[0]
        keys = ("weight", "bias", "running_mean", "running_var")
        gamma, beta, mean, variance = (self._weights(f"{torch_name}.{k}", (channels,), name) for k in keys)
        scale = gamma / np.sqrt(variance + lite.BN_EPSILON)  # in float64, rounded once to float32
        kernel = x.kernel * scale.reshape((-1,) + (1,) * (x.kernel.ndim - 1))
        shift = (beta - mean * scale).astype(np.float32).reshape(1, channels, 1, 1)
        folded = self.ops.add(self._convolve(x.x, kernel, x.stride, x.depthwise), self.ops.constant(shift))
        return self._keep(name, folded)

    def relu6(self, x, name):
        super().relu6(x, name)
        return self._keep(name, self.ops.clamp(x, 0.0, 6.0))

    def add(self, x, shortcut, name):
        super().add(x, shortcut, name)
        return self._keep(name, self.ops.add(x, shortcut))

    def avg_pool(self, x, name):
        super().avg_pool(x, name)
        return self._keep(name, self.ops.reduce_mean(x, self.ops.constant(np.array([2, 3])), keep_dims=False))


def _output(ops, node, pooling: str):
    """What the Keras feature model gives for one layer: a 4-D map pooled (``avg``, ``max``) or laid out NHWC
    (``flatten``, ``none``); a pooled layer as it is. Always a node of its own, so each output has its own name."""
    if len(node.get_output_partial_shape(0)) != 4:
        return ops.reshape(node, ops.constant(np.array([0, -1])), special_zero=True)
    axes = ops.constant(np.array([2, 3]))
    if pooling == "avg":
        return ops.reduce_mean(node, axes, keep_dims=False)
    if pooling == "max":
        return ops.reduce_max(node, axes, keep_dims=False)
    nhwc = ops.transpose(node, ops.constant(np.array([0, 2, 3, 1])))
    return ops.reshape(nhwc, ops.constant(np.array([0, -1])), special_zero=True) if pooling == "flatten" else nhwc


def build_model(config, source: Path | None = None):
    """The OpenVINO model of ``config`` (``builds(config)`` true): float32 NHWC 0..255 pixels in, one output per
    layer named ``output_0`` ... in the configuration's order, as the Keras conversion names them. ``source``: its
    weights file, already checked (``weights_file``)."""
    import openvino as ov
    import openvino.opset13 as ops

    from .._torch_legacy import load_state_dict

    variant, size = config.backbone, int(config.input_size)
    source = source or weights_file(config)
    state = load_state_dict(source)
    walk = lite.Plan()  # the arrays checked first, as the Keras port checks them (the same errors for the same file)
    lite.lite_features(walk, None, variant=variant)
    lite.check_arrays(walk.plan, state, source, variant, skip=("_fc.weight", "_fc.bias"))
    wanted = list(config.layers) or ["avg_pool"]
    graph = _OpenVinoGraph(ops, state, source, set(wanted))
    pixels = ops.parameter([-1, size, size, 3], np.float32, name="pixels")
    scaled = ops.multiply(ops.subtract(pixels, ops.constant(np.float32(127.0))), ops.constant(np.float32(1 / 128)))
    lite.lite_features(graph, graph._keep("input", ops.transpose(scaled, ops.constant(np.array([0, 3, 1, 2])))),
                       variant=variant)
    outputs = []
    for i, layer in enumerate(wanted):
        node = _output(ops, graph.tensors[layer], config.pooling)
        node.output(0).get_tensor().set_names({f"output_{i}"})
        outputs.append(node)
    return ov.Model([node.output(0) for node in outputs], [pixels], f"transfer_cache_{variant}")


def build_into(folder: Path, config) -> None:
    """Build the model of ``config`` and save it in ``folder`` with its record (``_openvino_convert.save_recorded``:
    read back as a reader will, its outputs on the probe batch, the digests)."""
    from ._openvino_convert import save_recorded

    source = weights_file(config)
    model = build_model(config, source)
    need = source.stat().st_size + (1 << 20)  # the weights file holds the float32 arrays the model saves
    save_recorded(folder, model, config, expected=None, need=need, method=BUILD)
