"""The TensorFlow runtime: the Keras feature model compiled with ``tf.function``.

It is the reference runtime (its vectors define a configuration's fingerprint), and the one for GPUs: several local
GPUs are used together through a ``tf.distribute.MirroredStrategy``, and ``mixed_float16`` is the compute policy
where mixed precision pays (only on GPUs).
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from .registry import Runtime, full_batch, padded, register


def compute_precision(mixed_precision: bool, *, warn: bool = True) -> str:
    """The Keras dtype policy of the forward pass: mixed_float16 only where it pays, on GPUs."""
    if not mixed_precision:
        return "float32"
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        if warn:
            print("warning: --mixed-precision needs a GPU and none is visible; computing in float32", file=sys.stderr)
        return "float32"
    return "mixed_float16"


def gpu_devices() -> list[str] | None:
    """All local GPUs when there are several (then a MirroredStrategy spreads each batch over them), else None."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [gpu.name for gpu in gpus] if len(gpus) > 1 else None


def compiled_forward(build_model, *, devices: Sequence[str] | None = None, policy: str = "float32"):
    """The compiled forward pass: uint8 batch in, one array per layer out, in batch order.

    With several ``devices``, the model is built under a ``tf.distribute.MirroredStrategy`` and each batch is cut
    into one contiguous slice per device (padded to equal slices), so the result order is the input order.
    """
    import keras
    import tensorflow as tf

    def forward(model, pixels):
        outputs = model(tf.cast(pixels, tf.float32), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [tf.cast(output, tf.float32) for output in outputs]

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        if not devices or len(devices) < 2:
            model = build_model()
        else:
            strategy = tf.distribute.MirroredStrategy(devices=list(devices))
            with strategy.scope():
                model = build_model()
    finally:
        keras.config.set_dtype_policy(previous)

    if not devices or len(devices) < 2:
        return tf.function(lambda pixels: forward(model, pixels), reduce_retracing=True)

    replicas = strategy.num_replicas_in_sync

    @tf.function(reduce_retracing=True)
    def step(distributed_pixels):
        return strategy.run(lambda pixels: forward(model, pixels), args=(distributed_pixels,))

    def infer(pixels):
        pixels = np.asarray(pixels)
        per_device = -(-len(pixels) // replicas)
        padded_pixels = full_batch(pixels, per_device * replicas)
        slices = [padded_pixels[r * per_device : (r + 1) * per_device] for r in range(replicas)]
        distributed_pixels = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(slices[context.replica_id_in_sync_group])
        )
        outputs = step(distributed_pixels)
        return [
            np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(output)])[: len(pixels)]
            for output in outputs
        ]

    return infer


def forward_for_config(config, *, batch_size: int, lock_timeout: float = 0.0):
    """Build the Keras feature model of ``config`` (a ``FeatureConfig``) and return its warm forward pass (traced on a
    blank batch). ``lock_timeout`` is unused: the model is built in this process, with nothing to wait for."""
    from .._quiet_tensorflow import quiet_tensorflow
    from ..backbones import build_feature_model_from_config

    quiet_tensorflow()
    infer = compiled_forward(
        lambda: build_feature_model_from_config(config), devices=gpu_devices(), policy=config.compute_precision
    )
    size = int(config.input_size)
    forward = padded(infer, batch_size)
    forward(np.zeros((batch_size, size, size, 3), np.uint8))  # trace and build now, not inside the timed loop
    return forward


register(
    Runtime(
        name="tensorflow",
        description="TensorFlow (Keras model under tf.function; GPUs, several GPUs, mixed precision)",
        forward=forward_for_config,
        reference=True,
        uses_gpus=True,
    )
)
