"""Whole processes timed side by side: extractions per runtime alternated with the hand-written Keras loop (the
peer), and the peak memory of an extraction at 1x and Nx the images, each in a fresh child process.

Shared machines are noisy, so a figure is the median of its repeats and a ratio is taken repeat by repeat (paired)
before its median: a change of load during the run hits both sides of a pair alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

from ._bench_images import write_test_images
from .runtimes.openvino import MODELS_ENV


def median(values):
    """The median as a float; NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def median_dicts(items: list[dict]) -> dict:
    """Per key, the median of the numbers of ``items`` (the first value for anything else)."""
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        numeric = isinstance(values[0], (int, float)) and not isinstance(values[0], bool)
        out[key] = median(values) if numeric else values[0]
    return out


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
    from transfer_cache.extract_options import feature_config
    options = json.loads(sys.argv[1])
    config = feature_config(backbone=options["backbone"], weights=options["weights"], runtime="tensorflow")
    model = build_feature_model_from_config(config)
    size = config.input_size
    dataset = keras.utils.image_dataset_from_directory(
        sys.argv[2], labels=None, image_size=(size, size), batch_size=options["batch_size"], shuffle=False,
        verbose=False)
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


def _extract_process(folder: Path, options: dict, cache_dir: Path, models: Path | None = None) -> tuple[float, dict]:
    """One whole extraction process into ``cache_dir`` (fresh), with ``models`` as its folder of converted models when
    given: its wall seconds and figures."""
    wall, figures = _whole_process(_EXTRACT_CHILD, json.dumps(options), str(folder), str(cache_dir),
                                   env={MODELS_ENV: str(models)} if models is not None else None)
    if figures["computed"] == 0:
        raise RuntimeError("a benchmark extraction computed nothing: its cache folder was not fresh")
    return wall, figures


def _first_runs(folder: Path, *, runtimes, options: dict, workdir: Path) -> dict[str, float]:
    """Wall seconds of a first run on a new machine (an empty folder of converted models), per runtime; these runs
    also warm the page cache for the timed ones."""
    return {name: _extract_process(folder, {**options, "runtime": name}, workdir / f"warm-{name}",
                                   models=workdir / f"models-{name}")[0] for name in runtimes}


def _paired_ratios(report: dict, runs: dict[str, list[dict]], peers: list[float], runtimes) -> None:
    """The speed-ups over the peer and over the reference runtime (the last one), paired repeat by repeat."""
    if peers:
        report["peer_wall_seconds"] = {"median": median(peers), "runs": peers}
        report["speedup_over_peer"] = {
            name: median([p / item["wall_seconds"] for p, item in zip(peers, items)]) for name, items in runs.items()
        }
    if len(runtimes) > 1:
        reference = runtimes[-1]
        report["speedup_over_" + reference] = {
            name: median([ref["wall_seconds"] / item["wall_seconds"] for ref, item in zip(runs[reference], items)])
            for name, items in runs.items() if name != reference
        }


def extraction_runs(folder: Path, *, runtimes, options: dict, repeats: int, workdir: Path, peer: bool) -> dict:
    """Whole-process extractions, one per runtime per repeat (fresh cache folders), alternated with the peer."""
    report: dict = {"first_run_seconds": _first_runs(folder, runtimes=runtimes, options=options, workdir=workdir)}
    runs: dict[str, list[dict]] = {name: [] for name in runtimes}
    peers: list[float] = []
    for r in range(repeats):
        for name in runtimes:
            wall, figures = _extract_process(folder, {**options, "runtime": name}, workdir / f"cache-{name}-{r}")
            runs[name].append({**figures, "wall_seconds": wall})
        if peer:
            wall, _ = _whole_process(_PEER_CHILD, json.dumps(options), str(folder))
            peers.append(wall)
    for name, items in runs.items():
        report[name] = _medians(items)
    _paired_ratios(report, runs, peers, runtimes)
    return report


def _medians(items: list[dict]) -> dict:
    """The median figures of an extraction's runs, and the runs."""
    return {**{key: median([item[key] for item in items])
               for key in ("wall_seconds", "images_per_second", "first_batch_seconds")}, "runs": items}


def _alternated(sides: dict[str, Callable[[int], tuple[float, dict]]], repeats: int) -> dict[str, list[dict]]:
    """Each side's whole process once per repeat, the order reversed every other repeat (A B, B A, ...) so that
    neither side always runs first; each run's figures with its wall seconds."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(repeats):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            wall, figures = sides[name](r)
            runs[name].append({**figures, "wall_seconds": wall})
    return runs


def _runtime_of(cache_path: str) -> str:
    """The runtime that computed a cache (what "auto" chose)."""
    from .cache import open_cache

    with open_cache(cache_path) as cache:
        return cache.feature_config.runtime


def photo_size_runs(phone: Path, small: Path, *, options: dict, repeats: int, workdir: Path) -> dict:
    """The same photos at phone size and at 500x375: whole extractions (``options`` as a user gives them: the runtime
    extract picks), alternated in pairs, fresh cache folders, one models folder made beforehand (no conversion is
    timed). ``ratio_wall`` is phone images per wall second over 500x375 images per wall second, paired; ``ratio_steady``
    the same for extraction's steady images/s."""
    models = workdir / "models"
    folders = {"phone": phone, "small": small}
    for name, folder in sorted(folders.items(), reverse=True):  # makes the model; the files enter the page cache
        _extract_process(folder, options, workdir / f"warm-{name}", models=models)

    def side(name: str):
        return lambda r: _extract_process(folders[name], options, workdir / f"cache-{name}-{r}", models=models)

    runs = _alternated({name: side(name) for name in folders}, repeats)
    images = runs["phone"][0]["computed"]
    report: dict = {"images": images, "runtime": _runtime_of(runs["phone"][0]["path"])}
    for name, items in runs.items():
        report[name] = _medians(items)
        report[name]["wall_images_per_second"] = median([images / item["wall_seconds"] for item in items])
    pairs = list(zip(runs["phone"], runs["small"]))
    report["ratio_wall"] = median([small["wall_seconds"] / phone["wall_seconds"] for phone, small in pairs])
    report["ratio_steady"] = median([phone["images_per_second"] / small["images_per_second"] for phone, small in pairs])
    return report


def first_run_pairs(folder: Path, *, options: dict, repeats: int, workdir: Path) -> dict:
    """A first run on a new machine (an empty folder of converted models, so the model is built or converted in the
    run) against a warm run (the model already there), whole extractions alternated in pairs, fresh cache folders:
    wall seconds, seconds from the process start to the first batch's vectors, and the first run's extra seconds,
    paired."""
    warm = workdir / "models-warm"
    _extract_process(folder, options, workdir / "prime", models=warm)  # makes the warm model; warms the page cache
    runs = _alternated({
        "first": lambda r: _extract_process(folder, options, workdir / f"cache-first-{r}",
                                            models=workdir / f"models-empty-{r}"),
        "warm": lambda r: _extract_process(folder, options, workdir / f"cache-warm-{r}", models=warm),
    }, repeats)
    return {"images": runs["first"][0]["computed"], "runtime": _runtime_of(runs["first"][0]["path"]),
            "first": _medians(runs["first"]), "warm": _medians(runs["warm"]),
            "extra_seconds": median([first["wall_seconds"] - warm["wall_seconds"]
                                     for first, warm in zip(runs["first"], runs["warm"])])}


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


def paired_rows(report: dict) -> list[tuple[str, str]]:
    """The table's rows for the figures of photo size, the first run and the runtimes' vectors against the
    reference's: (what, value)."""
    rows = []
    for key, agreement in report.get("extract", {}).items():
        if key.startswith("vectors_against_"):
            for name, figures in agreement.items():
                rows.append((f"  {name} vectors vs {key[len('vectors_against_'):]}'s: min cosine",
                             f"{figures['min_cosine']:.8f} (largest difference {figures['max_abs_difference']:.1e})"))
    if "photo_size" in report:
        p = report["photo_size"]
        rows.append((f"phone size / 500x375, {p['images']} photos, {p['runtime']} (wall img/s)",
                     f"{p['phone']['wall_images_per_second']:.1f} / {p['small']['wall_images_per_second']:.1f}"))
        rows.append(("  phone size over 500x375, paired: wall (steady state)",
                     f"{p['ratio_wall']:.2f} ({p['ratio_steady']:.2f})"))
        if "decode" in p["phone"]:
            (key, phone), = p["phone"]["decode"].items()
            rows.append((f"  decode only, phone size / 500x375, {key.split('_')[-1]} threads (img/s)",
                         f"{phone['median']:.0f} / {p['small']['decode'][key]['median']:.0f}"))
    if "first_run" in report:
        f = report["first_run"]
        rows.append((f"first run / warm run, {f['images']} photos, {f['runtime']} (s)",
                     f"{f['first']['wall_seconds']:.1f} / {f['warm']['wall_seconds']:.1f} "
                     f"({f['extra_seconds']:+.2f} paired)"))
        rows.append(("  first batch after process start, first / warm run (s)",
                     f"{f['first']['first_batch_seconds']:.2f} / {f['warm']['first_batch_seconds']:.2f}"))
    return rows
