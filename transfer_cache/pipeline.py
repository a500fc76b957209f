"""The input pipeline: read, decode, colour handling and resize on a thread pool, in order, a few batches ahead.

Decoding goes through Pillow (EXIF orientation, alpha, palette, 16-bit and CMYK are handled the same way for
every source); Pillow releases the GIL while it decodes and resizes, so the threads really run side by side, and
nothing here needs TensorFlow. An image that cannot be read does not stop the pipeline: its slot carries
``ok=False`` and the reason, and extraction records it. Preprocessing is not done here: it is the first layer
of the feature model, so exported models carry it too.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _imaging
from ._errors import ImageError
from ._imaging import INTERPOLATIONS, RESIZE_POLICIES, validate_resize  # noqa: F401  (re-exported for callers)
from .feature_config import FeatureConfig


def prepare_image(image, *, config: FeatureConfig) -> np.ndarray:
    """Decode (bytes) or convert (array) one image and resize it exactly as extraction did for ``config``."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        array = _imaging.decode_image(bytes(image))
    else:
        array = _imaging.to_rgb_array(np.asarray(image))
    return _imaging.resize_image(
        array,
        size=int(config.input_size),
        policy=config.resize,
        crop_fraction=float(config.crop_fraction),
        interpolation=config.interpolation,
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
    workers: int | None = None,
    ahead: int = 3,
):
    """Batches ``(pixels uint8 (B,S,S,3), position int64 (B,), ok bool (B,), reasons list of str)``, in order.

    Item ``position`` is image ``indices[position]`` of ``source``; with ``views`` (a view number per item, 0 = the
    clean image) an item with view v > 0 is ``augment(image, index, v)`` before resizing. Images are read, decoded
    and resized by a pool of ``workers`` threads (default: one per core; Pillow releases the GIL while it decodes and
    resizes, so they run side by side), at most ``ahead`` batches in flight, so memory stays flat. TensorFlow is not
    needed: the forward pass may run in another runtime.
    """
    indices = np.asarray(indices, dtype=np.int64)
    views = np.zeros_like(indices) if views is None else np.asarray(views, dtype=np.int64)
    load = _item_loader(source, indices, views, augment=augment, size=input_size, resize=resize,
                        crop_fraction=crop_fraction, interpolation=interpolation)
    starts = iter(range(0, len(indices), batch_size))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                            thread_name_prefix="transfer_cache-decode") as pool:
        pending: deque = deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                positions = np.arange(start, min(start + batch_size, len(indices)), dtype=np.int64)
                pending.append((positions, [pool.submit(load, int(p)) for p in positions]))

        for _ in range(max(1, ahead)):
            submit_next()
        try:
            while pending:
                positions, futures = pending.popleft()
                submit_next()
                results = [future.result() for future in futures]
                yield (
                    np.stack([pixels for pixels, _, _ in results]),
                    positions,
                    np.asarray([ok for _, ok, _ in results], dtype=bool),
                    [reason for _, _, reason in results],
                )
        finally:
            for _, futures in pending:
                for future in futures:
                    future.cancel()


def _item_loader(source, indices, views, *, augment, size: int, resize: str, crop_fraction: float,
                 interpolation: str):
    """``load(position) -> (pixels, ok, reason)`` for one item: a bad image is a blank with its reason, never a
    crash of the batch."""
    blank = np.zeros((size, size, 3), np.uint8)
    fit = dict(size=size, policy=resize, crop_fraction=crop_fraction, interpolation=interpolation)

    def load(position: int):
        index, view = int(indices[position]), int(views[position])
        try:
            if view:
                pixels = _imaging.resize_image(augment(source.load(index), index, view), **fit)
            else:
                pixels = source.load_resized(index, **fit)
            return pixels, True, ""
        except ImageError as exc:
            return blank, False, str(exc)
        except Exception as exc:  # an unexpected decoder failure is still one bad image, never a crash
            return blank, False, f"cannot read image: {type(exc).__name__}: {exc}"

    return load
