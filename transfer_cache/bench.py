"""``python -m transfer_cache.bench``: what extraction costs on this machine, measured in one run.

Machines are shared and noisy, so every figure is a median of ``--repeats`` runs and the figures that matter are
ratios measured side by side in the same run:

1. the backbone's own images/s on tensors already in memory (the same feature model extraction builds, called
   through a ``tf.function`` on preloaded uint8 batches, cast to float inside, as extraction does);
2. end-to-end ``extract`` images/s on real JPEG files (model build excluded: ``ExtractResult.compute_seconds``),
   each repeat into a fresh cache folder; ``pipeline_efficiency`` = (2) / (1), goal >= 0.95;
3. the seeds' way on the same images: (a) a frozen base trained end to end with ``model.fit`` over the image files
   for E epochs vs extracting once and fitting the same dense head on the cached vectors for E epochs; (b) Hvass-style
   extraction, one image per call, vs batched extraction;
4. cache read MB/s, reading the whole features dataset in chunks (cold: the file's pages are dropped from the page
   cache first with ``posix_fadvise``; warm: read again);
5. peak RSS of a whole extraction at 1x and 10x the images, each in its own child process (``ru_maxrss``).

The test images are crops (256-500 px, random position, random flip, seeded) of the photographs bundled with
scikit-image and scikit-learn, saved as JPEG, one class per original photograph.
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

from . import _cli
from ._checks import whole_number
from ._errors import TransferCacheError

PARTS = ("backbone", "extract", "seeds", "hvass", "io", "memory")


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


def write_test_images(folder: str | os.PathLike, count: int, *, seed: int = 0, start: int = 0) -> Path:
    """``folder/<photo>/img_<i>.jpg``: ``count`` distinct seeded crops (256-500 px, random flip) of the sample photos."""
    from PIL import Image

    folder = Path(folder)
    photos = _photographs()
    names = sorted(photos)
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, i])
        name = names[i % len(names)]
        photo = photos[name]
        height, width = photo.shape[:2]
        h = int(rng.integers(min(256, height), min(500, height) + 1))
        w = int(rng.integers(min(256, width), min(500, width) + 1))
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        crop = photo[top : top + h, left : left + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        target = folder / name / f"img_{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(target, format="JPEG", quality=90)
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


def backbone_rate(infer, pixels: np.ndarray, batch_size: int) -> float:
    """Images/s of the compiled feature model on preloaded uint8 batches (the same batches extraction makes)."""
    import tensorflow as tf

    batches = [tf.constant(_pad(pixels[i : i + batch_size], batch_size)) for i in range(0, len(pixels), batch_size)]
    infer(batches[0])[0].numpy()  # traced and warm before the clock starts
    begin = time.perf_counter()
    for batch in batches:
        outputs = infer(batch)
        [np.asarray(o) for o in outputs]
    return len(pixels) / (time.perf_counter() - begin)


def _pad(batch: np.ndarray, batch_size: int) -> np.ndarray:
    if len(batch) == batch_size:
        return batch
    return np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)])


def extract_rate(folder: Path, *, options: dict, batch_size: int, cache_dir: Path) -> tuple[float, object]:
    from .extract import extract

    result = extract(str(folder), batch_size=batch_size, cache_dir=cache_dir, progress=False, **options)
    if result.computed == 0:
        raise RuntimeError("the benchmark extraction computed nothing (a cache hit): the cache folder was not fresh")
    return result.images_per_second, result


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


def _validate(*, images, repeats, batch_size, epochs, memory_scale, hvass_images, io_mb, skip):
    for name, value, least in (
        ("images", images, 1), ("repeats", repeats, 1), ("batch size", batch_size, 1), ("epochs", epochs, 1),
        ("memory scale", memory_scale, 2), ("hvass images", hvass_images, 1),
    ):
        whole_number(value, name, at_least=least)
    if not isinstance(io_mb, (int, float)) or io_mb < 0:
        raise TransferCacheError(f"io megabytes must be a number of at least 0; got {io_mb!r}")
    unknown = [part for part in skip if part not in PARTS]
    if unknown:
        raise TransferCacheError(f"skip must name parts among {', '.join(repr(p) for p in PARTS)}; got {unknown[0]!r}")
    if ("backbone" in skip) != ("extract" in skip):
        raise TransferCacheError("pipeline efficiency needs both 'backbone' and 'extract': skip both or neither")


def run_bench(
    *,
    backbone: str = "efficientnet_lite0",
    weights: str = "imagenet",
    images: int = 256,
    repeats: int = 3,
    batch_size: int = 32,
    epochs: int = 5,
    memory_scale: int = 10,
    hvass_images: int = 64,
    io_mb: float = 256.0,
    skip: tuple[str, ...] = (),
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run the benchmark and return every figure as a JSON-ready dict (``pipeline_efficiency`` at the top)."""
    from .extract import feature_config

    skip = tuple(skip)
    _validate(images=images, repeats=repeats, batch_size=batch_size, epochs=epochs, memory_scale=memory_scale,
              hvass_images=hvass_images, io_mb=io_mb, skip=skip)
    config = feature_config(backbone=backbone, weights=weights)
    options = {"backbone": backbone, "weights": weights}
    import tensorflow as tf

    from tqdm.auto import tqdm

    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="tc-bench-")) if own_tmp else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "pipeline_efficiency": None,
        "backbone": config["backbone"],
        "weights": config["weights"],
        "input_size": config["input_size"],
        "images": images,
        "repeats": repeats,
        "batch_size": batch_size,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU")),
        },
    }
    steps = sum(1 for p in ("backbone", "extract", "seeds", "hvass", "io", "memory") if p not in skip)
    bar = tqdm(total=steps, desc="bench", unit="part", disable=not progress, file=sys.stderr, leave=False)
    try:
        folder = write_test_images(work / "images", images)
        model = infer = pixels = files = None
        last_cache = None
        if "backbone" not in skip or "hvass" not in skip or "seeds" not in skip:
            model = _feature_model(config)
            infer = _compiled(model)
            pixels, files = _resized_images(folder, config)
        if "backbone" not in skip and "extract" not in skip:
            backbone_runs, extract_runs, build_runs = [], [], []
            for r in range(repeats):  # interleaved, so a load spike on the shared machine hits both alike
                backbone_runs.append(backbone_rate(infer, pixels, batch_size))
                rate, result = extract_rate(folder, options=options, batch_size=batch_size, cache_dir=work / f"cache-{r}")
                extract_runs.append(rate)
                build_runs.append(result.seconds - result.compute_seconds)
                last_cache = result.path
            backbone_ips, extract_ips = _median(backbone_runs), _median(extract_runs)
            report["backbone_images_per_second"] = {"median": backbone_ips, "runs": backbone_runs}
            report["extract_images_per_second"] = {"median": extract_ips, "runs": extract_runs,
                                                   "overhead_seconds_outside_compute": build_runs}
            report["pipeline_efficiency"] = extract_ips / backbone_ips
            bar.update(2)
        if "seeds" not in skip:
            if last_cache is None:
                _, result = extract_rate(folder, options=options, batch_size=batch_size, cache_dir=work / "cache-seeds")
                last_cache = result.path
            seeds_runs, ours_runs = [], []
            for r in range(repeats):
                seeds_runs.append(seeds_frozen_base_seconds(folder, model, config=config, batch_size=batch_size, epochs=epochs))
                _, result = extract_rate(folder, options=options, batch_size=batch_size, cache_dir=work / f"cache-seeds-{r}")
                ours_runs.append(result.compute_seconds + cached_head_seconds(result.path, batch_size=batch_size, epochs=epochs))
            report["seeds_frozen_base"] = {
                "epochs": epochs,
                "frozen_base_fit_seconds": _median(seeds_runs),
                "extract_once_plus_head_seconds": _median(ours_runs),
                "speedup": _median(seeds_runs) / _median(ours_runs),
                "runs": {"frozen_base": seeds_runs, "extract_plus_head": ours_runs},
            }
            bar.update(1)
        if "hvass" not in skip:
            chosen = files[: min(hvass_images, len(files))]
            hvass_runs = [hvass_rate(chosen, infer, config=config) for _ in range(repeats)]
            batched = report.get("extract_images_per_second", {}).get("median")
            if batched is None:
                batched = _median([extract_rate(folder, options=options, batch_size=batch_size, cache_dir=work / f"cache-hv-{r}")[0]
                                   for r in range(repeats)])
            report["hvass_one_per_call"] = {
                "images": len(chosen),
                "images_per_second": _median(hvass_runs),
                "runs": hvass_runs,
                "batched_extract_images_per_second": batched,
                "speedup": batched / _median(hvass_runs),
            }
            bar.update(1)
        if "io" not in skip:
            if last_cache is None:
                _, result = extract_rate(folder, options=options, batch_size=batch_size, cache_dir=work / "cache-io")
                last_cache = result.path
            io = {"extracted_cache": _median_dicts([cache_read_rate(last_cache) for _ in range(repeats)])}
            if io_mb > 0:
                dim = int(np.prod(_feature_dim(last_cache)))
                synthetic = _synthetic_cache(work, config=config, megabytes=io_mb, dim=dim)
                io["synthetic_cache"] = _median_dicts([cache_read_rate(synthetic) for _ in range(repeats)])
                synthetic.unlink()
            report["cache_read"] = io
            bar.update(1)
        if "memory" not in skip:
            mem_dir = work / "memory"
            report["memory"] = memory_flatness(options=dict(options, batch_size=batch_size), images=images,
                                               scale=memory_scale, workdir=mem_dir)
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
    """The human summary: one line per figure."""
    lines = [f"transfer_cache bench: {report['backbone']} ({report['weights']}) at {report['input_size']} px, "
             f"{report['images']} images, batch {report['batch_size']}, median of {report['repeats']}, "
             f"{report['machine']['cpu_count']} cores, {report['machine']['gpus']} GPUs"]

    def row(name, value):
        lines.append(f"  {name:<46s} {value}")

    if "backbone_images_per_second" in report:
        row("backbone on in-memory tensors (img/s)", f"{report['backbone_images_per_second']['median']:.1f}")
        row("extract end to end (img/s)", f"{report['extract_images_per_second']['median']:.1f}")
        row("pipeline efficiency (goal >= 0.95)", f"{report['pipeline_efficiency']:.3f}")
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
  python -m transfer_cache.bench --images 256 --repeats 3 --json bench.json
  python -m transfer_cache.bench --backbone tiny --weights none --images 64 --repeats 2 --skip memory
  python -m transfer_cache.bench --backbone mobilenet_v2 --weights mobilenet_v2_weights.h5

Figures are medians of --repeats runs; compare the ratios (pipeline_efficiency, speed-ups), which are measured side by
side in one run: absolute images/s move with the load of a shared machine.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.bench",
        "Measure the backbone, the extraction pipeline, the seeds' way, cache I/O and memory on this machine.",
        EPILOG,
    )
    parser.add_argument("--backbone", default="efficientnet_lite0", help="backbone to measure (default efficientnet_lite0)")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file (default imagenet)")
    parser.add_argument("--images", type=int, default=256, help="number of test images (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per figure; the median is reported (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for the seeds comparison (default 5)")
    parser.add_argument("--memory-scale", type=int, default=10, help="peak RSS at 1x and this many times the images (default 10)")
    parser.add_argument("--hvass-images", type=int, default=64, help="images for the one-image-per-call run (default 64)")
    parser.add_argument("--io-mb", type=float, default=256.0, help="size of the synthetic cache for read MB/s; 0 skips it (default 256)")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    parser.add_argument("--workdir", default=None, help="keep the test images and caches here (default: a temporary folder, removed)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _main(args) -> int:
    skip = tuple(part.strip() for part in args.skip.split(",") if part.strip())
    if args.json:
        target = Path(args.json)
        if target.parent and not target.parent.exists():
            raise TransferCacheError(f"cannot write {target}: folder {target.parent} does not exist; create it or choose another --json path")
    report = run_bench(
        backbone=args.backbone, weights=args.weights, images=args.images, repeats=args.repeats, batch_size=args.batch_size,
        epochs=args.epochs, memory_scale=args.memory_scale, hvass_images=args.hvass_images, io_mb=args.io_mb, skip=skip,
        workdir=args.workdir, progress=not args.quiet,
    )
    print(format_table(report))
    if args.json:
        temporary = Path(args.json).with_name(f".{Path(args.json).name}.tmp")
        temporary.write_text(json.dumps(report, indent=2, default=float) + "\n")
        os.replace(temporary, args.json)
    efficiency = report["pipeline_efficiency"]
    print(f"pipeline efficiency {efficiency:.3f}" if efficiency is not None else "pipeline efficiency not measured",
          f"(JSON: {args.json})" if args.json else "")
    return 0


def main(argv=None) -> int:
    _cli.quiet_tensorflow()
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
