"""``python -m transfer_cache.bench``: what extraction costs on this machine, as users feel it, measured in one run.

Machines are shared and noisy, so every figure is a median of ``--repeats`` runs, and the figures that matter are
ratios of runs made side by side, alternated (A B A B ...) so that a change of load hits both alike. The parts
(``--parts``):

* ``backbone``: each available runtime's own images/s on pixels already in memory (steady state, batches of
  ``--batch-size``, after a warm-up batch), alternated between runtimes;
* ``extract``: ``python -m transfer_cache.extract``-equivalent whole processes, one per runtime per repeat, each into a
  fresh cache folder: wall seconds (the process, start-up included), the steady-state images/s of the extraction
  phase, and the time to the first batch's vectors (from the process start); the converted OpenVINO model is made
  once beforehand (its conversion time is reported apart). ``pipeline efficiency`` = steady extract images/s over the
  backbone's own images/s, per runtime;
* ``peer``: what a user writes by hand, as its own whole process alternated with the extractions:
  ``keras.utils.image_dataset_from_directory`` + ``model.predict`` with the same feature model;
* ``decode``: the input pipeline alone (read, decode, resize) with 1 and with 2 worker threads;
* ``seeds``, ``hvass``, ``io``, ``memory`` (not run by default): the seeds' frozen base trained end to end vs extract
  once + fit; one image per call; cache read MB/s; peak memory at 1x and ``--memory-scale``x the images.

The test images are photo-like JPEGs of 500x375 (quality 90): seeded crops of the photographs that ship with
scikit-image and scikit-learn, resized, one class per photograph.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from . import _atomic, _cli
from ._checks import whole_number
from ._errors import TransferCacheError
from .runtimes.openvino import MODELS_ENV

PARTS = ("backbone", "extract", "peer", "decode", "seeds", "hvass", "io", "memory")
DEFAULT_PARTS = ("backbone", "extract", "peer", "decode")


# --------------------------------------------------------------------------- test images


def _photographs() -> dict[str, np.ndarray]:
    """Real photographs that ship with scikit-image and scikit-learn (no download)."""
    photos: dict[str, np.ndarray] = {}
    try:
        import skimage.data as data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera"):
            try:
                image = getattr(data, name)()
            except Exception:  # a data file missing from this scikit-image install: use the others
                continue
            photos[name] = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for filename, image in zip(bunch.filenames, bunch.images):
            photos[Path(filename).stem] = image
    except Exception:
        pass
    if len(photos) < 2:
        raise TransferCacheError("the benchmark needs the sample photographs of scikit-image or scikit-learn; pip install scikit-image")
    return photos


def write_test_images(folder: str | os.PathLike, count: int, *, seed: int = 0, start: int = 0, size=(500, 375)) -> Path:
    """``folder/<photo>/img_<i>.jpg``: ``count`` distinct seeded crops of the sample photos, resized to ``size`` (a
    typical camera photo after a web resize: 500x375), random flip, JPEG quality 90."""
    from PIL import Image

    folder = Path(folder)
    photos = _photographs()
    names = sorted(photos)
    aspect = size[0] / size[1]
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        name = names[i % len(names)]
        photo = photos[name]
        height, width = photo.shape[:2]
        h = int(rng.integers(int(0.5 * min(height, width / aspect)), int(min(height, width / aspect)) + 1))
        w = min(width, int(round(h * aspect)))
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        crop = photo[top : top + h, left : left + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        target = folder / name / f"img_{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.Resampling.LANCZOS)
        picture.save(target, format="JPEG", quality=90)
    return folder


# --------------------------------------------------------------------------- measurements


def _median(values):
    return float(statistics.median(values)) if values else float("nan")


def _feature_model(config):
    from .backbones import build_feature_model_from_config

    return build_feature_model_from_config(config)


def _compiled(model):
    """The very forward pass extraction runs (the TensorFlow runtime's), so the two rates compare like with like."""
    from .runtimes.tensorflow import compiled_forward

    return compiled_forward(lambda: model)


def _resized_images(folder: Path, config) -> tuple[np.ndarray, list[Path]]:
    from .pipeline import prepare_image

    files = sorted(folder.rglob("*.jpg"))
    return np.stack([prepare_image(path.read_bytes(), config=config) for path in files]), files


def extract_rate(folder: Path, *, options: dict, batch_size: int, cache_dir: Path) -> tuple[float, object]:
    from .extract import extract

    result = extract(str(folder), cache_dir=cache_dir, progress=False, **{**options, "batch_size": batch_size})
    if result.computed == 0:
        raise RuntimeError("the benchmark extraction computed nothing (a cache hit): the cache folder was not fresh")
    return result.images_per_second, result


def runtime_rates(config: dict, pixels: np.ndarray, *, runtimes, batch_size: int, repeats: int) -> dict[str, list[float]]:
    """Each runtime's own images/s on preloaded uint8 pixels (the batches extraction makes), alternated between
    runtimes within each repeat; every forward pass is built and warmed before any clock starts."""
    from .runtimes import get_runtime

    forwards = {name: get_runtime(name).forward({**config, "runtime": name}, batch_size=batch_size) for name in runtimes}
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


_EXTRACT_CHILD = textwrap.dedent(
    """
    import time
    started = time.perf_counter()
    import json, sys
    from transfer_cache.extract import extract
    options = json.loads(sys.argv[1])
    called = time.perf_counter()
    result = extract(sys.argv[2], cache_dir=sys.argv[3], progress=False, **options)
    print(json.dumps({"computed": result.computed, "images_per_second": result.images_per_second,
                      "first_batch_seconds": called - started + (result.first_batch_seconds or float("nan")),
                      "path": str(result.path)}))
    """
)

# what a user writes by hand: Keras' own directory reader and model.predict, on the same feature model
_PEER_CHILD = textwrap.dedent(
    """
    import json, sys
    import keras
    from transfer_cache.backbones import build_feature_model_from_config
    from transfer_cache.feature_config import feature_config
    options = json.loads(sys.argv[1])
    config = feature_config(backbone=options["backbone"], weights=options["weights"], runtime="tensorflow")
    model = build_feature_model_from_config(config)
    size = config["input_size"]
    dataset = keras.utils.image_dataset_from_directory(
        sys.argv[2], labels=None, image_size=(size, size), batch_size=options["batch_size"], shuffle=False, verbose=False)
    features = model.predict(dataset, verbose=0)
    print(json.dumps({"rows": len(features)}))
    """
)


def _whole_process(script: str, *args: str, env: dict | None = None) -> tuple[float, dict]:
    """Wall seconds of a child Python process (start-up included, ``env`` added to this one's environment) and the
    JSON it printed last."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    begin = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - begin
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def extraction_runs(folder: Path, *, runtimes, options: dict, repeats: int, workdir: Path, peer: bool) -> dict:
    """Whole-process extractions, one per runtime per repeat (fresh cache folders), alternated with the peer."""
    report: dict = {"first_run_seconds": {}}
    for name in runtimes:  # a first run on a new machine: an empty folder of converted models; warms the page cache
        wall, _ = _whole_process(_EXTRACT_CHILD, json.dumps({**options, "runtime": name}), str(folder),
                                 str(workdir / f"warm-{name}"), env={MODELS_ENV: str(workdir / f"models-{name}")})
        report["first_run_seconds"][name] = wall
    runs: dict[str, list[dict]] = {name: [] for name in runtimes}
    peers: list[float] = []
    for r in range(repeats):
        for name in runtimes:
            wall, figures = _whole_process(_EXTRACT_CHILD, json.dumps({**options, "runtime": name}), str(folder),
                                           str(workdir / f"cache-{name}-{r}"))
            if figures["computed"] == 0:
                raise RuntimeError("a benchmark extraction computed nothing: its cache folder was not fresh")
            runs[name].append({**figures, "wall_seconds": wall})
        if peer:
            wall, _ = _whole_process(_PEER_CHILD, json.dumps(options), str(folder))
            peers.append(wall)
    for name, items in runs.items():
        report[name] = {key: _median([item[key] for item in items])
                        for key in ("wall_seconds", "images_per_second", "first_batch_seconds")}
        report[name]["runs"] = items
    if peer:
        report["peer_wall_seconds"] = {"median": _median(peers), "runs": peers}
        report["speedup_over_peer"] = {  # paired repeat by repeat, then the median
            name: _median([p / item["wall_seconds"] for p, item in zip(peers, items)]) for name, items in runs.items()
        }
    if len(runtimes) > 1:
        reference = runtimes[-1]
        report["speedup_over_" + reference] = {
            name: _median([ref["wall_seconds"] / item["wall_seconds"] for ref, item in zip(runs[reference], items)])
            for name, items in runs.items() if name != reference
        }
    return report


def decode_rates(folder: Path, config: dict, *, batch_size: int, repeats: int, workers=(1, 2)) -> dict:
    """Images/s of the input pipeline alone (read, decode, resize), with each number of worker threads, alternated."""
    from .pipeline import image_batches
    from .sources import open_source

    source = open_source(str(folder))
    indices = list(range(len(source)))
    rates: dict[int, list[float]] = {n: [] for n in workers}
    for _ in range(repeats):
        for n in workers:
            begin = time.perf_counter()
            for _batch in image_batches(source, indices, input_size=int(config["input_size"]), resize=config["resize"],
                                        crop_fraction=float(config["crop_fraction"]), interpolation=config["interpolation"],
                                        batch_size=batch_size, workers=n):
                pass
            rates[n].append(len(indices) / (time.perf_counter() - begin))
    out = {f"workers_{n}": {"median": _median(values), "runs": values} for n, values in rates.items()}
    if 1 in rates and len(rates) > 1:
        top = max(rates)
        out[f"scaling_{top}_over_1"] = _median([b / a for a, b in zip(rates[1], rates[top])])
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


def seeds_frozen_base_seconds(folder: Path, model, *, config, batch_size: int, epochs: int) -> float:
    """A frozen base + dense head trained with model.fit over the image files: the backbone runs every epoch."""
    import keras
    import tensorflow as tf

    size = int(config["input_size"])
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


def hvass_rate(files: list[Path], infer, *, config) -> float:
    """Hvass-style transfer values: read, decode, resize and run the network one image per call."""
    from .pipeline import prepare_image

    infer(np.zeros((1, config["input_size"], config["input_size"], 3), np.uint8))  # traced before the clock
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


def _synthetic_cache(folder: Path, *, config: dict, megabytes: float, dim: int) -> Path:
    """A cache of ``megabytes`` of features, written block by block (nothing of that size is held in memory)."""
    from .cache import Rows, write_cache

    rows = max(1, int(megabytes * 1e6 // (4 * dim)))
    rng = np.random.default_rng(0)
    block = rng.normal(size=(4096, dim)).astype("float32")
    attrs = dict(config, dtype="float32", class_names=["a"], source="bench:synthetic", source_root="")
    return write_cache(
        folder / "synthetic-io.h5",
        attrs=attrs,
        rows=Rows(ids=[f"{i:064x}" for i in range(rows)], paths=[str(i) for i in range(rows)], labels=[0] * rows, split=[""] * rows),
        feature_rows=lambda a, b: [np.resize(block, (b - a, dim))],
        feature_shapes=[(dim,)],
    )


_MEMORY_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from transfer_cache.extract import extract
    options = json.loads(sys.argv[1])
    result = extract(sys.argv[2], cache_dir=sys.argv[3], progress=False, **options)
    import psutil  # the resident size at the end shows growth that the start-up peak would hide
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "end_rss_mb": psutil.Process().memory_info().rss / 2**20,
                      "rows": result.rows, "computed": result.computed, "images_per_second": result.images_per_second}))
    """
)


def extraction_peak_rss(folder: Path, *, options: dict, cache_dir: Path) -> dict:
    """Run one whole extraction in a fresh child process and return its peak RSS (MB) and figures."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, json.dumps(options), str(folder), str(cache_dir)],
        capture_output=True, text=True, env=env,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"memory child failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def memory_flatness(*, options: dict, images: int, scale: int, workdir: Path, seed: int = 0) -> dict:
    """Peak RSS of extracting ``images`` and ``images * scale`` distinct images, each in its own process."""
    small = write_test_images(workdir / "mem-1x", images, seed=seed)
    large = write_test_images(workdir / f"mem-{scale}x", images * scale, seed=seed)
    one = extraction_peak_rss(small, options=options, cache_dir=workdir / "mem-cache-1x")
    many = extraction_peak_rss(large, options=options, cache_dir=workdir / f"mem-cache-{scale}x")
    return {
        "images_1x": images,
        "images_scaled": images * scale,
        "scale": scale,
        "peak_rss_mb_1x": one["peak_rss_mb"],
        "peak_rss_mb_scaled": many["peak_rss_mb"],
        "ratio": many["peak_rss_mb"] / one["peak_rss_mb"],
        "end_rss_mb_1x": one["end_rss_mb"],
        "end_rss_mb_scaled": many["end_rss_mb"],
        "extra_mb_per_1000_images": (many["peak_rss_mb"] - one["peak_rss_mb"]) / (images * (scale - 1)) * 1000,
    }


# --------------------------------------------------------------------------- the whole benchmark


def _validate(*, images, repeats, batch_size, epochs, memory_scale, hvass_images, io_mb, parts):
    for name, value, least in (
        ("images", images, 1), ("repeats", repeats, 1), ("batch size", batch_size, 1), ("epochs", epochs, 1),
        ("memory scale", memory_scale, 2), ("hvass images", hvass_images, 1),
    ):
        whole_number(value, name, at_least=least)
    if not isinstance(io_mb, (int, float)) or io_mb < 0:
        raise TransferCacheError(f"io megabytes must be a number of at least 0; got {io_mb!r}")
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise TransferCacheError(f"parts must name parts among {', '.join(repr(p) for p in PARTS)}; got {(unknown or [''])[0]!r}")
    if "memory" in parts:
        try:
            import psutil  # noqa: F401  (checked before any work)
        except ImportError:
            raise TransferCacheError(
                "the memory part needs psutil, which is not installed; pip install 'transfer_cache[bench]' "
                "(or pip install psutil), or leave memory out of --parts"
            ) from None


def run_bench(
    *,
    backbone: str = "efficientnet_lite0",
    weights: str = "imagenet",
    images: int = 1024,
    repeats: int = 3,
    batch_size: int = 32,
    parts: tuple[str, ...] = DEFAULT_PARTS,
    epochs: int = 5,
    memory_scale: int = 10,
    hvass_images: int = 64,
    io_mb: float = 256.0,
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run the chosen parts and return every figure as a JSON-ready dict (see the module docstring)."""
    from ._versions import library_versions
    from .feature_config import feature_config
    from .runtimes import get_runtime, list_runtimes

    parts = tuple(parts)
    _validate(images=images, repeats=repeats, batch_size=batch_size, epochs=epochs, memory_scale=memory_scale,
              hvass_images=hvass_images, io_mb=io_mb, parts=parts)
    config = feature_config(backbone=backbone, weights=weights, runtime="tensorflow")
    options = {"backbone": backbone, "weights": weights, "batch_size": batch_size}
    runtimes = [name for name in list_runtimes() if get_runtime(name).available()]
    runtimes.sort(key=lambda name: name == "tensorflow")  # the reference runtime last: ratios are over it
    from tqdm.auto import tqdm

    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="tc-bench-")) if own_tmp else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "backbone": config["backbone"], "weights": config["weights"], "input_size": config["input_size"],
        "images": images, "image_size": [500, 375], "repeats": repeats, "batch_size": batch_size, "parts": list(parts),
        "runtimes": runtimes,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "versions": library_versions()},
    }
    bar = tqdm(total=len(parts), desc="bench", unit="part", disable=not progress, file=sys.stderr, leave=False)
    try:
        folder = write_test_images(work / "images", images)
        pixels = files = model = infer = None
        if {"backbone", "seeds", "hvass"} & set(parts):
            pixels, files = _resized_images(folder, config)
        if "backbone" in parts:
            rates = runtime_rates(config, pixels, runtimes=runtimes, batch_size=batch_size, repeats=repeats)
            report["backbone_images_per_second"] = {name: {"median": _median(v), "runs": v} for name, v in rates.items()}
            bar.update(1)
        if "extract" in parts or "peer" in parts:
            chosen = runtimes if "extract" in parts else []
            report["extract"] = extraction_runs(folder, runtimes=chosen, options=options, repeats=repeats,
                                                workdir=work / "extract", peer="peer" in parts)
            bar.update(("extract" in parts) + ("peer" in parts))
        if "backbone" in parts and "extract" in parts:
            report["pipeline_efficiency"] = {
                name: report["extract"][name]["images_per_second"] / report["backbone_images_per_second"][name]["median"]
                for name in runtimes
            }
        if "decode" in parts:
            report["decode"] = decode_rates(folder, config, batch_size=batch_size, repeats=repeats)
            bar.update(1)
        if {"seeds", "hvass"} & set(parts):
            model = _feature_model(config)
            infer = _compiled(model)
        if "seeds" in parts:
            seeds_runs, ours_runs = [], []
            for r in range(repeats):
                seeds_runs.append(seeds_frozen_base_seconds(folder, model, config=config, batch_size=batch_size, epochs=epochs))
                _, result = extract_rate(folder, options=options, batch_size=batch_size, cache_dir=work / f"cache-seeds-{r}")
                ours_runs.append(result.compute_seconds + cached_head_seconds(result.path, batch_size=batch_size, epochs=epochs))
            report["seeds_frozen_base"] = {
                "epochs": epochs, "frozen_base_fit_seconds": _median(seeds_runs),
                "extract_once_plus_head_seconds": _median(ours_runs), "speedup": _median(seeds_runs) / _median(ours_runs),
                "runs": {"frozen_base": seeds_runs, "extract_plus_head": ours_runs},
            }
            bar.update(1)
        if "hvass" in parts:
            chosen = files[: min(hvass_images, len(files))]
            hvass_runs = [hvass_rate(chosen, infer, config=config) for _ in range(repeats)]
            batched = _median([extract_rate(folder, options=options, batch_size=batch_size,
                                            cache_dir=work / f"cache-hv-{r}")[0] for r in range(repeats)])
            report["hvass_one_per_call"] = {
                "images": len(chosen), "images_per_second": _median(hvass_runs), "runs": hvass_runs,
                "batched_extract_images_per_second": batched, "speedup": batched / _median(hvass_runs),
            }
            bar.update(1)
        if "io" in parts:
            _, result = extract_rate(folder, options=options, batch_size=batch_size, cache_dir=work / "cache-io")
            io = {"extracted_cache": _median_dicts([cache_read_rate(result.path) for _ in range(repeats)])}
            if io_mb > 0:
                dim = int(np.prod(_feature_dim(result.path)))
                synthetic = _synthetic_cache(work, config=config, megabytes=io_mb, dim=dim)
                io["synthetic_cache"] = _median_dicts([cache_read_rate(synthetic) for _ in range(repeats)])
                synthetic.unlink()
            report["cache_read"] = io
            bar.update(1)
        if "memory" in parts:
            report["memory"] = memory_flatness(options=options, images=images, scale=memory_scale, workdir=work / "memory")
            bar.update(1)
    finally:
        bar.close()
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _feature_dim(cache_path: Path):
    from .cache import open_cache

    with open_cache(cache_path) as cache:
        return cache.features.shape[1:]


def _median_dicts(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = _median(values) if isinstance(values[0], (int, float)) and not isinstance(values[0], bool) else values[0]
    return out


def format_table(report: dict) -> str:
    """The human summary: one line per figure (medians; ratios are paired repeat by repeat)."""
    lines = [f"transfer_cache bench: {report['backbone']} ({report['weights']}) at {report['input_size']} px, "
             f"{report['images']} JPEGs of {report['image_size'][0]}x{report['image_size'][1]}, batch "
             f"{report['batch_size']}, median of {report['repeats']}, {report['machine']['cpu_count']} cores"]

    def row(name, value):
        lines.append(f"  {name:<58s} {value}")

    for name, figures in report.get("backbone_images_per_second", {}).items():
        row(f"backbone alone, {name} (img/s)", f"{figures['median']:.1f}")
    extract = report.get("extract", {})
    for name in report["runtimes"]:
        if name in extract:
            e = extract[name]
            row(f"extract, {name}: whole process (s)", f"{e['wall_seconds']:.1f}")
            row(f"extract, {name}: steady state (img/s)", f"{e['images_per_second']:.1f}")
            row(f"extract, {name}: first batch after process start (s)", f"{e['first_batch_seconds']:.2f}")
            row(f"extract, {name}: first run on a new machine (s)", f"{extract['first_run_seconds'][name]:.1f}")
            if name in report.get("pipeline_efficiency", {}):
                row(f"extract, {name}: pipeline efficiency", f"{report['pipeline_efficiency'][name]:.2f}")
    if "peer_wall_seconds" in extract:
        row("hand-written Keras loop: whole process (s)", f"{extract['peer_wall_seconds']['median']:.1f}")
        for name, ratio in extract.get("speedup_over_peer", {}).items():
            row(f"  {name} extract vs the hand-written loop (wall)", f"{ratio:.2f}x")
    for key, value in extract.items():
        if key.startswith("speedup_over_") and key != "speedup_over_peer":
            for name, ratio in value.items():
                row(f"  {name} extract vs {key[len('speedup_over_'):]} extract (wall)", f"{ratio:.2f}x")
    if "decode" in report:
        d = report["decode"]
        row("decode only, 1 / 2 workers (img/s)", f"{d['workers_1']['median']:.0f} / {d['workers_2']['median']:.0f} "
            f"({d['scaling_2_over_1']:.2f}x)")
    if "seeds_frozen_base" in report:
        s = report["seeds_frozen_base"]
        row(f"frozen base, model.fit {s['epochs']} epochs (s)", f"{s['frozen_base_fit_seconds']:.1f}")
        row(f"extract once + head {s['epochs']} epochs (s)", f"{s['extract_once_plus_head_seconds']:.1f}")
        row("  speed-up over the seeds' frozen base", f"{s['speedup']:.2f}x")
    if "hvass_one_per_call" in report:
        h = report["hvass_one_per_call"]
        row("Hvass-style, one image per call (img/s)", f"{h['images_per_second']:.1f}")
        row("  speed-up of batched extraction", f"{h['speedup']:.2f}x")
    if "cache_read" in report:
        for name, figures in report["cache_read"].items():
            row(f"cache read, {name.replace('_', ' ')} {figures['megabytes']:.0f} MB (MB/s)",
                f"cold {figures['cold_mb_per_second']:.0f}, warm {figures['warm_mb_per_second']:.0f}")
    if "memory" in report:
        m = report["memory"]
        row(f"peak RSS extracting {m['images_1x']} / {m['images_scaled']} images (MB)",
            f"{m['peak_rss_mb_1x']:.0f} / {m['peak_rss_mb_scaled']:.0f} (x{m['ratio']:.2f}, "
            f"+{m['extra_mb_per_1000_images']:.1f} MB per 1000 images)")
        row("  resident at the end of the extraction (MB)", f"{m['end_rss_mb_1x']:.0f} / {m['end_rss_mb_scaled']:.0f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.bench --json bench.json
  python -m transfer_cache.bench --images 256 --repeats 5 --parts backbone,extract
  python -m transfer_cache.bench --parts seeds,hvass,io,memory --images 256
  python -m transfer_cache.bench --backbone tiny --weights none --images 64 --repeats 2

Figures are medians of --repeats runs; compare the ratios (speed-ups, efficiency), measured side by side and
alternated in one run: absolute images/s move with the load of a shared machine.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.bench",
        "Measure extraction as users feel it on this machine: each runtime, whole processes against a hand-written "
        "Keras loop, the input pipeline, and optionally the seeds' way, cache I/O and memory.",
        EPILOG,
    )
    parser.add_argument("--backbone", default="efficientnet_lite0", help="backbone to measure (default efficientnet_lite0)")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file (default imagenet)")
    parser.add_argument("--images", type=int, default=1024, help="number of 500x375 test JPEGs (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per figure; the median is reported (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma-separated parts to run, among {', '.join(PARTS)} (default {','.join(DEFAULT_PARTS)})")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for the seeds comparison (default 5)")
    parser.add_argument("--memory-scale", type=int, default=10, help="peak RSS at 1x and this many times the images (default 10)")
    parser.add_argument("--hvass-images", type=int, default=64, help="images for the one-image-per-call run (default 64)")
    parser.add_argument("--io-mb", type=float, default=256.0, help="size of the synthetic cache for read MB/s; 0 skips it (default 256)")
    parser.add_argument("--workdir", default=None, help="keep the test images and caches here (default: a temporary folder, removed)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _main(args) -> int:
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if args.json:
        target = Path(args.json)
        if target.parent and not target.parent.exists():
            raise TransferCacheError(f"cannot write {target}: folder {target.parent} does not exist; create it or choose another --json path")
    started = time.perf_counter()
    report = run_bench(
        backbone=args.backbone, weights=args.weights, images=args.images, repeats=args.repeats, batch_size=args.batch_size,
        parts=parts, epochs=args.epochs, memory_scale=args.memory_scale, hvass_images=args.hvass_images, io_mb=args.io_mb,
        workdir=args.workdir, progress=not args.quiet,
    )
    print(format_table(report))
    if args.json:
        _atomic.write_json(args.json, report, default=float, where="choose a --json path on another disk")
    print(f"bench: {len(parts)} part{'s' if len(parts) != 1 else ''} measured in {time.perf_counter() - started:.0f} s"
          + (f" (JSON: {args.json})" if args.json else ""))
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
