"""The benchmark's measurements made in this process: each runtime's forward pass on pixels in memory, the input
pipeline alone, the seeds' frozen base against extract once + head, one image per call, and cache reads."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._bench_timing import median

if TYPE_CHECKING:
    from .feature_config import FeatureConfig


def feature_model(config: FeatureConfig):
    """The Keras feature model of ``config``, built in this process."""
    from .backbones import build_feature_model_from_config

    return build_feature_model_from_config(config)


def compiled(model):
    """The very forward pass extraction runs (the TensorFlow runtime's), so the two rates compare like with like."""
    from .runtimes.tensorflow import compiled_forward

    return compiled_forward(lambda: model)


def extract_rate(folder: Path, *, options: dict, batch_size: int, cache_dir: Path) -> tuple[float, object]:
    """The steady images/s of an extraction in this process into a fresh ``cache_dir``, and its result."""
    from .extract import extract

    result = extract(str(folder), cache_dir=cache_dir, progress=False, **{**options, "batch_size": batch_size})
    if result.computed == 0:
        raise RuntimeError("the benchmark extraction computed nothing (a cache hit): the cache folder was not fresh")
    return result.images_per_second, result


def runtime_rates(
    config: FeatureConfig, pixels: np.ndarray, *, runtimes, batch_size: int, repeats: int
) -> dict[str, list[float]]:
    """Each runtime's own images/s on preloaded uint8 pixels (the batches extraction makes), alternated between
    runtimes within each repeat; every forward pass is built and warmed before any clock starts."""
    from .runtimes import get_runtime

    forwards = {
        name: get_runtime(name).forward(dataclasses.replace(config, runtime=name), batch_size=batch_size)
        for name in runtimes
    }
    batches = [pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(repeats):
        for name, forward in forwards.items():
            forward(batches[0])
            begin = time.perf_counter()
            for batch in batches:
                forward(batch)
            rates[name].append(len(pixels) / (time.perf_counter() - begin))
    return rates


def decode_rates(folder: Path, config: FeatureConfig, *, batch_size: int, repeats: int, workers=(1, 2)) -> dict:
    """Images/s of the input pipeline alone (read, decode, resize), with each number of worker threads, alternated."""
    from .pipeline import image_batches
    from .sources import open_source

    source = open_source(str(folder))
    indices = list(range(len(source)))
    rates: dict[int, list[float]] = {n: [] for n in workers}
    for _ in range(repeats):
        for n in workers:
            begin = time.perf_counter()
            for _batch in image_batches(source, indices, input_size=config.input_size, resize=config.resize,
                                        crop_fraction=config.crop_fraction, interpolation=config.interpolation,
                                        decoding=config.decoding, batch_size=batch_size, workers=n):
                pass
            rates[n].append(len(indices) / (time.perf_counter() - begin))
    out = {f"workers_{n}": {"median": median(values), "runs": values} for n, values in rates.items()}
    if 1 in rates and len(rates) > 1:
        top = max(rates)
        out[f"scaling_{top}_over_1"] = median([b / a for a, b in zip(rates[1], rates[top])])
    return out


def _dense_head(n_features: int, n_classes: int):
    """The seeds' head: Dense(1024, relu) -> Dropout(0.5) -> softmax."""
    import keras

    return keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )


def seeds_frozen_base_seconds(folder: Path, model, *, config: FeatureConfig, batch_size: int, epochs: int) -> float:
    """A frozen base + dense head trained with model.fit over the image files: the backbone runs every epoch."""
    import keras
    import tensorflow as tf

    size = config.input_size
    dataset = keras.utils.image_dataset_from_directory(
        str(folder), image_size=(size, size), batch_size=batch_size, shuffle=True, seed=0, verbose=False
    ).prefetch(tf.data.AUTOTUNE)
    n_classes = len([p for p in folder.iterdir() if p.is_dir()])
    head = _dense_head(int(model.outputs[0].shape[-1]), n_classes)
    inputs = keras.Input((size, size, 3))
    full = keras.Model(inputs, head(model(inputs, training=False)))
    full.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    begin = time.perf_counter()
    full.fit(dataset, epochs=epochs, verbose=0, shuffle=False)  # the dataset shuffles itself
    return time.perf_counter() - begin


def cached_head_seconds(cache_path: Path, *, batch_size: int, epochs: int) -> float:
    """The same head fitted for the same epochs on the cached vectors (read from the cache file)."""
    from .cache import open_cache

    begin = time.perf_counter()
    with open_cache(cache_path) as cache:
        features, labels = cache.features[:], cache.labels
        n_classes = len(cache.class_names)
    head = _dense_head(features.shape[1], n_classes)
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    head.fit(features, labels, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    return time.perf_counter() - begin


def hvass_rate(files: list[Path], infer, *, config: FeatureConfig) -> float:
    """Hvass-style transfer values: read, decode, resize and run the network one image per call."""
    from .pipeline import prepare_image

    infer(np.zeros((1, config.input_size, config.input_size, 3), np.uint8))  # traced before the clock
    begin = time.perf_counter()
    for path in files:
        pixels = prepare_image(path.read_bytes(), config=config)
        [np.asarray(o) for o in infer(pixels[None])]
    return len(files) / (time.perf_counter() - begin)


def _drop_from_page_cache(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except (AttributeError, OSError):
        return False
    finally:
        os.close(fd)


def cache_read_rate(cache_path: Path) -> dict:
    """MB/s reading the whole features dataset chunk by chunk: cold (pages dropped first) and warm."""
    import h5py

    out = {}
    for label in ("cold", "warm"):
        dropped = _drop_from_page_cache(cache_path) if label == "cold" else False
        begin = time.perf_counter()
        with h5py.File(cache_path, "r") as handle:
            dataset = handle["features"]
            step = dataset.chunks[0] if dataset.chunks else 4096
            total = 0
            for start in range(0, dataset.shape[0], step):
                total += dataset[start : start + step].nbytes
        seconds = time.perf_counter() - begin
        out[f"{label}_mb_per_second"] = total / 1e6 / seconds
        if label == "cold":
            out["cold_pages_dropped"] = dropped
        out["megabytes"] = total / 1e6
    return out


def feature_shape(cache_path: Path):
    """The shape of one vector in the cache at ``cache_path``."""
    from .cache import open_cache

    with open_cache(cache_path) as cache:
        return cache.features.shape[1:]


def synthetic_cache(folder: Path, *, config: FeatureConfig, megabytes: float, dim: int) -> Path:
    """A cache of ``megabytes`` of features, written block by block (nothing of that size is held in memory)."""
    from .cache import Rows, write_cache

    rows = max(1, int(megabytes * 1e6 // (4 * dim)))
    rng = np.random.default_rng(0)
    block = rng.normal(size=(4096, dim)).astype("float32")
    attrs = dict(config.as_dict(), dtype="float32", class_names=["a"], source="bench:synthetic", source_root="")
    return write_cache(
        folder / "synthetic-io.h5",
        attrs=attrs,
        rows=Rows(ids=[f"{i:064x}" for i in range(rows)], paths=[str(i) for i in range(rows)], labels=[0] * rows,
                  split=[""] * rows),
        feature_rows=lambda a, b: [np.resize(block, (b - a, dim))],
        feature_shapes=[(dim,)],
    )


def vector_agreement(cache_path: str | Path, reference_path: str | Path) -> dict:
    """How close the vectors of one cache are to another's of the same images (rows matched by image digest): the
    lowest and the median cosine of an image's two vectors, and the largest absolute difference of any value."""
    from .cache import open_cache

    with open_cache(cache_path) as cache, open_cache(reference_path) as reference:
        where = {digest: row for row, digest in enumerate(reference.ids)}
        rows = [where[digest] for digest in cache.ids]
        ours = np.asarray(cache.features[:], np.float64).reshape(len(rows), -1)
        theirs = np.asarray(reference.features[:], np.float64).reshape(len(where), -1)[rows]
    cosines = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    return {"images": len(rows), "min_cosine": float(cosines.min()), "median_cosine": float(np.median(cosines)),
            "max_abs_difference": float(np.abs(ours - theirs).max())}
