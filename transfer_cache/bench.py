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
* ``phone``: the same ``--photo-images`` photos at phone size (4032x3024, 12 MP) and at 500x375, whole extractions as
  a user runs them (the runtime extract picks, the default decoding), alternated in pairs: images per wall second of
  each and their ratio, and the input pipeline alone on each set (one worker thread per core, as extract runs it);
* ``first-run``: on ``--photo-images`` photos at 500x375, the first run on a new machine (an empty folder of converted
  models) against a warm run, alternated in pairs: wall seconds, the first run's extra seconds, and the seconds from
  process start to the first batch's vectors;
* ``seeds``, ``hvass``, ``io``, ``memory`` (not run by default): the seeds' frozen base trained end to end vs extract
  once + fit; one image per call; cache read MB/s; peak memory at 1x and ``--memory-scale``x the images.
* ``rows`` (not run by default): a synthetic cache of ``--rows`` rows shaped like a real one, and ``inspect``,
  ``neighbors`` and ``fit --classifier logreg`` on it as whole processes, each with its peak RSS (``_bench_rows``).

The test images are photo-like JPEGs of 500x375 (quality 90): seeded crops of the photographs that ship with
scikit-image and scikit-learn, resized, one class per photograph.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import _atomic, _cli
from ._bench_images import PHONE_SIZE, SMALL_SIZE, photo_set, resized_images, write_test_images
from ._bench_parts import (
    cache_read_rate,
    cached_head_seconds,
    compiled,
    decode_rates,
    extract_rate,
    feature_model,
    feature_shape,
    hvass_rate,
    runtime_rates,
    seeds_frozen_base_seconds,
    synthetic_cache,
    vector_agreement,
)
from ._bench_rows import rows_figures, rows_table
from ._bench_timing import (
    extraction_peak_rss,
    extraction_runs,
    first_run_pairs,
    median,
    median_dicts,
    memory_flatness,
    paired_rows,
    photo_size_runs,
)
from ._checks import whole_number
from ._errors import TransferCacheError

if TYPE_CHECKING:
    from .feature_config import FeatureConfig

__all__ = [  # the measurements live in _bench_images, _bench_timing and _bench_parts; this is their one address
    "DEFAULT_PARTS", "EPILOG", "PARTS", "build_parser", "cache_read_rate", "cached_head_seconds", "decode_rates",
    "extract_rate", "extraction_peak_rss", "extraction_runs", "first_run_pairs", "format_table", "hvass_rate", "main",
    "memory_flatness", "photo_size_runs", "run_bench", "runtime_rates", "seeds_frozen_base_seconds",
    "vector_agreement", "write_test_images",
]

PARTS = ("backbone", "extract", "peer", "decode", "phone", "first-run", "seeds", "hvass", "io", "memory", "rows")
DEFAULT_PARTS = ("backbone", "extract", "peer", "decode", "phone", "first-run")


# --------------------------------------------------------------------------- the parts, in the order they run


@dataclasses.dataclass
class _Bench:
    """What the parts of one benchmark share: its settings, the test images and, once made, their pixels and the
    feature model."""

    parts: tuple[str, ...]
    config: FeatureConfig
    options: dict
    runtimes: list[str]
    work: Path
    folder: Path
    repeats: int
    batch_size: int
    epochs: int
    images: int
    memory_scale: int
    hvass_images: int
    io_mb: float
    photo_images: int
    rows: int = 100_000
    pixels: np.ndarray | None = None
    files: list[Path] | None = None
    model: object = None
    infer: object = None


def _load_pixels(bench: _Bench, report: dict) -> int:
    bench.pixels, bench.files = resized_images(bench.folder, bench.config)
    return 0


def _backbone(bench: _Bench, report: dict) -> int:
    rates = runtime_rates(bench.config, bench.pixels, runtimes=bench.runtimes, batch_size=bench.batch_size,
                          repeats=bench.repeats)
    report["backbone_images_per_second"] = {name: {"median": median(v), "runs": v} for name, v in rates.items()}
    return 1


def _extract_and_peer(bench: _Bench, report: dict) -> int:
    chosen = bench.runtimes if "extract" in bench.parts else []
    report["extract"] = extraction_runs(bench.folder, runtimes=chosen, options=bench.options, repeats=bench.repeats,
                                        workdir=_fresh(bench.work / "extract"), peer="peer" in bench.parts)
    reference = bench.runtimes[-1]  # the reference runtime (TensorFlow): the others' vectors against its own
    if reference in chosen and len(chosen) > 1:
        report["extract"]["vectors_against_" + reference] = {
            name: vector_agreement(report["extract"][name]["runs"][0]["path"],
                                   report["extract"][reference]["runs"][0]["path"])
            for name in chosen if name != reference
        }
    if chosen and "backbone_images_per_second" in report:
        report["pipeline_efficiency"] = {
            name: report["extract"][name]["images_per_second"] / report["backbone_images_per_second"][name]["median"]
            for name in bench.runtimes
        }
    return ("extract" in bench.parts) + ("peer" in bench.parts)


def _decode(bench: _Bench, report: dict) -> int:
    report["decode"] = decode_rates(bench.folder, bench.config, batch_size=bench.batch_size, repeats=bench.repeats)
    return 1


def _fresh(folder: Path) -> Path:
    """A timed run's folder emptied first: a kept ``--workdir`` would otherwise hold its caches (cache hits)."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _photo_size(bench: _Bench, report: dict) -> int:
    sets = [photo_set(bench.work / "photo-size", bench.photo_images, size=size) for size in (PHONE_SIZE, SMALL_SIZE)]
    report["photo_size"] = photo_size_runs(*sets, options=bench.options, repeats=bench.repeats,
                                           workdir=_fresh(bench.work / "photo-size-runs"))
    for name, folder in zip(("phone", "small"), sets):  # where the time goes: the input pipeline alone
        report["photo_size"][name]["decode"] = decode_rates(folder, bench.config, batch_size=bench.batch_size,
                                                            repeats=bench.repeats, workers=(os.cpu_count() or 1,))
    return 1


def _first_run(bench: _Bench, report: dict) -> int:
    folder = photo_set(bench.work / "photo-size", bench.photo_images, size=SMALL_SIZE)
    report["first_run"] = first_run_pairs(folder, options=bench.options, repeats=bench.repeats,
                                          workdir=_fresh(bench.work / "first-run"))
    return 1


def _build_model(bench: _Bench, report: dict) -> int:
    bench.model = feature_model(bench.config)
    bench.infer = compiled(bench.model)
    return 0


def _seeds(bench: _Bench, report: dict) -> int:
    seeds_runs, ours_runs = [], []
    for r in range(bench.repeats):
        seeds_runs.append(seeds_frozen_base_seconds(bench.folder, bench.model, config=bench.config,
                                                    batch_size=bench.batch_size, epochs=bench.epochs))
        _, result = extract_rate(bench.folder, options=bench.options, batch_size=bench.batch_size,
                                 cache_dir=bench.work / f"cache-seeds-{r}")
        head = cached_head_seconds(result.path, batch_size=bench.batch_size, epochs=bench.epochs)
        ours_runs.append(result.compute_seconds + head)
    report["seeds_frozen_base"] = {
        "epochs": bench.epochs, "frozen_base_fit_seconds": median(seeds_runs),
        "extract_once_plus_head_seconds": median(ours_runs), "speedup": median(seeds_runs) / median(ours_runs),
        "runs": {"frozen_base": seeds_runs, "extract_plus_head": ours_runs},
    }
    return 1


def _hvass(bench: _Bench, report: dict) -> int:
    chosen = bench.files[: min(bench.hvass_images, len(bench.files))]
    hvass_runs = [hvass_rate(chosen, bench.infer, config=bench.config) for _ in range(bench.repeats)]
    batched = median([extract_rate(bench.folder, options=bench.options, batch_size=bench.batch_size,
                                   cache_dir=bench.work / f"cache-hv-{r}")[0] for r in range(bench.repeats)])
    report["hvass_one_per_call"] = {
        "images": len(chosen), "images_per_second": median(hvass_runs), "runs": hvass_runs,
        "batched_extract_images_per_second": batched, "speedup": batched / median(hvass_runs),
    }
    return 1


def _cache_io(bench: _Bench, report: dict) -> int:
    _, result = extract_rate(bench.folder, options=bench.options, batch_size=bench.batch_size,
                             cache_dir=bench.work / "cache-io")
    io = {"extracted_cache": median_dicts([cache_read_rate(result.path) for _ in range(bench.repeats)])}
    if bench.io_mb > 0:
        dim = int(np.prod(feature_shape(result.path)))
        synthetic = synthetic_cache(bench.work, config=bench.config, megabytes=bench.io_mb, dim=dim)
        io["synthetic_cache"] = median_dicts([cache_read_rate(synthetic) for _ in range(bench.repeats)])
        synthetic.unlink()
    report["cache_read"] = io
    return 1


def _memory(bench: _Bench, report: dict) -> int:
    report["memory"] = memory_flatness(options=bench.options, images=bench.images, scale=bench.memory_scale,
                                       workdir=bench.work / "memory")
    return 1


def _rows(bench: _Bench, report: dict) -> int:
    report["rows"] = rows_figures(bench.work / "rows", rows=bench.rows)
    return 1


@dataclasses.dataclass(frozen=True)
class _Step:
    """One step of the benchmark: it runs when any of ``parts`` is chosen, adds its figures to the report and
    returns how many chosen parts it completed (for the progress bar)."""

    parts: tuple[str, ...]
    run: Callable[[_Bench, dict], int]


# in this order: the pixels before the backbone; the backbone's rates before the pipeline efficiency of extract
_STEPS = (
    _Step(("backbone", "seeds", "hvass"), _load_pixels),
    _Step(("backbone",), _backbone),
    _Step(("extract", "peer"), _extract_and_peer),
    _Step(("decode",), _decode),
    _Step(("phone",), _photo_size),
    _Step(("first-run",), _first_run),
    _Step(("seeds", "hvass"), _build_model),
    _Step(("seeds",), _seeds),
    _Step(("hvass",), _hvass),
    _Step(("io",), _cache_io),
    _Step(("memory",), _memory),
    _Step(("rows",), _rows),
)


# --------------------------------------------------------------------------- the whole benchmark


def _validate(*, images, repeats, batch_size, epochs, memory_scale, hvass_images, io_mb, photo_images, parts,
              rows=100_000):
    for name, value, least in (
        ("images", images, 1), ("repeats", repeats, 1), ("batch size", batch_size, 1), ("epochs", epochs, 1),
        ("memory scale", memory_scale, 2), ("hvass images", hvass_images, 1), ("photo images", photo_images, 1),
        ("rows", rows, 10),
    ):
        whole_number(value, name, at_least=least)
    if not isinstance(io_mb, (int, float)) or io_mb < 0:
        raise TransferCacheError(f"io megabytes must be a number of at least 0; got {io_mb!r}")
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise TransferCacheError(
            f"parts must name parts among {', '.join(repr(p) for p in PARTS)}; got {(unknown or [''])[0]!r}"
        )
    if "memory" in parts:
        try:
            import psutil  # noqa: F401  (checked before any work)
        except ImportError:
            raise TransferCacheError(
                "the memory part needs psutil, which is not installed; pip install 'transfer_cache[bench]' "
                "(or pip install psutil), or leave memory out of --parts"
            ) from None


def _header(config: FeatureConfig, *, images: int, repeats: int, batch_size: int, parts, runtimes) -> dict:
    """The report's first keys: what was measured, and on what machine."""
    from ._versions import library_versions

    return {
        "backbone": config.backbone, "weights": config.weights, "input_size": config.input_size,
        "images": images, "image_size": [500, 375], "repeats": repeats, "batch_size": batch_size, "parts": list(parts),
        "runtimes": runtimes,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "versions": library_versions()},
    }


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
    photo_images: int = 192,
    rows: int = 100_000,
    workdir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run the chosen parts and return every figure as a JSON-ready dict (see the module docstring)."""
    from .extract_options import feature_config
    from .runtimes import get_runtime, list_runtimes

    parts = tuple(parts)
    _validate(images=images, repeats=repeats, batch_size=batch_size, epochs=epochs, memory_scale=memory_scale,
              hvass_images=hvass_images, io_mb=io_mb, photo_images=photo_images, parts=parts, rows=rows)
    config = feature_config(backbone=backbone, weights=weights, runtime="tensorflow")
    runtimes = [name for name in list_runtimes() if get_runtime(name).available()]
    runtimes.sort(key=lambda name: name == "tensorflow")  # the reference runtime last: ratios are over it
    from tqdm.auto import tqdm

    own_tmp = workdir is None
    work = Path(tempfile.mkdtemp(prefix="tc-bench-")) if own_tmp else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    report = _header(config, images=images, repeats=repeats, batch_size=batch_size, parts=parts, runtimes=runtimes)
    bar = tqdm(total=len(parts), desc="bench", unit="part", disable=not progress, file=sys.stderr, leave=False)
    try:
        bench = _Bench(
            parts=parts, config=config, options={"backbone": backbone, "weights": weights, "batch_size": batch_size},
            runtimes=runtimes, work=work, folder=write_test_images(work / "images", images), repeats=repeats,
            batch_size=batch_size, epochs=epochs, images=images, memory_scale=memory_scale, hvass_images=hvass_images,
            io_mb=io_mb, photo_images=photo_images, rows=rows,
        )
        for step in _STEPS:
            if set(step.parts) & set(parts):
                done = step.run(bench, report)
                if done:
                    bar.update(done)
    finally:
        bar.close()
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return report


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
    for name, value in paired_rows(report):
        row(name, value)
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
    for name, value in rows_table(report["rows"]) if "rows" in report else ():
        row(name, value)
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.bench --json bench.json
  python -m transfer_cache.bench --images 256 --repeats 5 --parts backbone,extract
  python -m transfer_cache.bench --parts seeds,hvass,io,memory --images 256
  python -m transfer_cache.bench --backbone tiny --weights none --images 64 --repeats 2
  python -m transfer_cache.bench --parts rows --rows 1000000 --images 1 --workdir /tmp/bench-rows

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
    parser.add_argument("--backbone", default="efficientnet_lite0",
                        help="backbone to measure (default efficientnet_lite0)")
    parser.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file (default imagenet)")
    parser.add_argument("--images", type=int, default=1024, help="number of 500x375 test JPEGs (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per figure; the median is reported (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma-separated parts to run, among {', '.join(PARTS)} "
                             f"(default {','.join(DEFAULT_PARTS)})")
    parser.add_argument("--epochs", type=int, default=5, help="epochs for the seeds comparison (default 5)")
    parser.add_argument("--memory-scale", type=int, default=10,
                        help="peak RSS at 1x and this many times the images (default 10)")
    parser.add_argument("--hvass-images", type=int, default=64,
                        help="images for the one-image-per-call run (default 64)")
    parser.add_argument("--io-mb", type=float, default=256.0,
                        help="size of the synthetic cache for read MB/s; 0 skips it (default 256)")
    parser.add_argument("--photo-images", type=int, default=192,
                        help="photos in the phone and first-run parts (default 192)")
    parser.add_argument("--rows", type=int, default=100_000,
                        help="rows of the synthetic cache of the rows part (default 100000)")
    parser.add_argument("--workdir", default=None,
                        help="keep the test images and caches here (default: a temporary folder, removed)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _main(args) -> int:
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if args.json:
        target = Path(args.json)
        if target.parent and not target.parent.exists():
            raise TransferCacheError(
                f"cannot write {target}: folder {target.parent} does not exist; create it or choose another --json path"
            )
    started = time.perf_counter()
    report = run_bench(
        backbone=args.backbone, weights=args.weights, images=args.images, repeats=args.repeats,
        batch_size=args.batch_size, parts=parts, epochs=args.epochs, memory_scale=args.memory_scale,
        hvass_images=args.hvass_images, io_mb=args.io_mb, photo_images=args.photo_images, rows=args.rows,
        workdir=args.workdir,
        progress=not args.quiet,
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
