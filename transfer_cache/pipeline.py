"""The tf.data input pipeline: read, decode, colour handling and resize in parallel, then batch and prefetch.

Decoding goes through Pillow (EXIF orientation, alpha, palette, 16-bit and CMYK are handled the same way for
every source) inside parallel tf.data workers; Pillow releases the GIL while it decodes and resizes, so the
workers really run side by side. An image that cannot be read does not stop the pipeline: its slot carries
``ok=False`` and the reason, and extraction records it. Preprocessing is not done here: it is the first layer
of the feature model, so exported models carry it too.
"""

from __future__ import annotations

import numpy as np

from . import _imaging
from ._errors import ImageError
from ._imaging import INTERPOLATIONS, RESIZE_POLICIES, validate_resize  # noqa: F401  (re-exported for callers)


def prepare_image(image, *, config: dict) -> np.ndarray:
    """Decode (bytes) or convert (array) one image and resize it exactly as extraction did for ``config``."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        array = _imaging.decode_image(bytes(image))
    else:
        array = _imaging.to_rgb_array(np.asarray(image))
    return _imaging.resize_image(
        array,
        size=int(config["input_size"]),
        policy=config["resize"],
        crop_fraction=float(config["crop_fraction"]),
        interpolation=config["interpolation"],
    )


def image_batches(
    source,
    indices,
    *,
    input_size: int,
    resize: str,
    crop_fraction: float,
    interpolation: str,
    batch_size: int,
    views=None,
    augment=None,
    parallel_calls: int | None = None,
):
    """A tf.data.Dataset of batches ``(pixels uint8 (B,S,S,3), position int64 (B,), ok bool (B,), reason string (B,))``.

    Item ``position`` is image ``indices[position]`` of ``source``; with ``views`` (a view number per item, 0 = the
    clean image) an item with view v > 0 is ``augment(image, index, v)`` before resizing. Order is kept
    (deterministic), so batch k always holds the same items.
    """
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    views = np.zeros_like(indices) if views is None else np.asarray(views, dtype=np.int64)
    blank = np.zeros((input_size, input_size, 3), np.uint8)

    def load(position):
        index, view = int(indices[position]), int(views[position])
        try:
            image = source.load(index)
            if view:
                image = augment(image, index, view)
            pixels = _imaging.resize_image(
                image, size=input_size, policy=resize, crop_fraction=crop_fraction, interpolation=interpolation
            )
            return pixels, True, b""
        except ImageError as exc:
            return blank, False, str(exc).encode("utf-8")
        except Exception as exc:  # an unexpected decoder failure is still one bad image, never a crash
            return blank, False, f"cannot read image: {type(exc).__name__}: {exc}".encode("utf-8")

    def load_tf(position):
        pixels, ok, reason = tf.numpy_function(load, [position], [tf.uint8, tf.bool, tf.string], stateful=False)
        pixels.set_shape((input_size, input_size, 3))
        ok.set_shape(())
        reason.set_shape(())
        return pixels, position, ok, reason

    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.range(len(indices))
    dataset = dataset.map(load_tf, num_parallel_calls=parallel_calls or autotune, deterministic=True)
    dataset = dataset.batch(batch_size).prefetch(autotune)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)
