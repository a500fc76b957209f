"""Computing what is new: decode the planned images (and their augmented views), push each batch through the
backbone on the chosen runtime, and make every batch's vectors durable as one part before the next one starts."""

from __future__ import annotations

import sys
import time

import numpy as np

from .feature_config import FeatureConfig
from .work_parts import WorkParts


def progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True, leave=False,
                file=sys.stderr)


class ReadAhead:
    """Iterate a dataset in a background thread, ``depth`` batches ahead, from the moment it is created.

    A pipeline only starts decoding when it is first asked for a batch; asking from a thread at once lets the first
    batches decode while the model is loaded (or built and traced), instead of after. Use it as a context manager, so
    the thread stops whatever happens in between.
    """

    _FINISHED = object()

    def __init__(self, dataset, depth: int = 2):
        import queue
        import threading

        self._buffer: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(dataset,), name="transfer_cache-read-ahead",
                                        daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, dataset) -> None:
        try:
            for item in dataset:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._FINISHED)

    def __iter__(self):
        while True:
            item = self._buffer.get()
            if item is self._FINISHED:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _augmenter(config: FeatureConfig, items):
    """``augment(image, position, view)`` for the configuration's recipe and seed; None without augmentation."""
    if not config.augment:
        return None
    from .augment import Recipe, augment_image, view_rng

    described = dict(config.augment["recipe"])
    recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in described.items()})
    seed = int(config.augment["seed"])
    work_size = 2 * int(config.input_size)
    digests = {item.index: item.digest for item in items}

    def augment(image, index, view):
        return augment_image(image, recipe=recipe, rng=view_rng(digests[index], view, seed), work_size=work_size)

    return augment


def compute(src, items, config: FeatureConfig, parts: WorkParts, *, batch_size: int, progress: bool,
            lock_timeout: float = 0.0):
    """Compute every work item into ``parts``; returns (seconds, per-layer shapes or None, clean images computed,
    the time the first batch was durable or None)."""
    from .pipeline import image_batches
    from .runtimes import get_runtime

    batches = image_batches(
        src,
        [item.index for item in items],
        views=[item.view for item in items],
        augment=_augmenter(config, items),
        input_size=config.input_size,
        resize=config.resize,
        crop_fraction=config.crop_fraction,
        interpolation=config.interpolation,
        decoding=config.decoding,
        batch_size=batch_size,
    )
    with ReadAhead(batches) as stream:  # images decode while the model is built
        # lock_timeout: how long to wait for another process converting the same model (OpenVINO)
        forward = get_runtime(config.runtime).forward(config, batch_size=batch_size, lock_timeout=lock_timeout)
        return _run_batches(stream, forward, items, config, parts, progress)


def _run_batches(stream, forward, items, config: FeatureConfig, parts: WorkParts, progress: bool):
    """Push each decoded batch through the backbone and make its vectors durable as one part."""
    shapes, computed, first_batch = None, 0, None
    begin = mark = time.perf_counter()
    with progress_bar(len(items), f"extracting ({config.backbone})", progress) as bar:
        for pixels, positions, ok, reasons in stream:
            batch = [items[int(p)] for p in positions]
            failed = [(item.key, reason) for item, good, reason in zip(batch, ok, reasons) if not good]
            good_keys = [item.key for item, good in zip(batch, ok) if good]
            if good_keys:
                arrays = [output.astype(config.dtype) for output in forward(pixels[ok])]
                shapes = [a.shape[1:] for a in arrays]
            else:  # a batch of only bad images: nothing to store but its failures
                arrays = [np.empty((0,), config.dtype) for _ in config.layers]
            clean = sum(1 for item, good in zip(batch, ok) if good and item.view == 0)
            now = time.perf_counter()
            parts.write(good_keys, arrays, failed, seconds=now - mark, computed=clean)
            mark = now
            first_batch = first_batch or time.perf_counter()
            computed += clean
            bar.update(len(positions))
    return time.perf_counter() - begin, shapes, computed, first_batch
