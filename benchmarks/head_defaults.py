"""Every registered head at its default parameters: test accuracy and fit seconds on real caches of three sizes.

Why: the defaults are what most users run (``fit CACHE --classifier logreg,knn,...``), so they must be accurate and
fast on cached transfer vectors (about 1,000-2,000 dimensions, a few thousand rows). Each (cache, head) pair is fitted
by ``transfer_cache.fit.fit`` itself (stratified 80/20 split, seed 0, one job) in its own child process with a time
limit, one at a time; the seconds are fit's ``fit_seconds`` (training only: Keras is imported beforehand). The
machine is shared, so read the numbers as orders of magnitude, not to the decimal.

Make the three caches (everything stays under /tmp/heads):

    python -m transfer_cache.extract sklearn:digits --cache-dir /tmp/heads/caches            # (a) 1,797 rows
    python benchmarks/head_defaults.py photos /tmp/heads/photos                               # (b) 2,200 JPEGs
    python -m transfer_cache.extract /tmp/heads/photos --cache-dir /tmp/heads/caches
    python benchmarks/head_defaults.py tile /tmp/heads/caches/photos-*.h5 /tmp/heads/caches/tiled-22000.h5 --rows 22000

Measure (``--json`` keeps the results; ``table`` prints BEFORE/AFTER side by side):

    python benchmarks/head_defaults.py measure CACHE [CACHE ...] --json /tmp/heads/after.json
    PYTHONPATH=/tmp/heads/before python benchmarks/head_defaults.py measure CACHE ... --json /tmp/heads/before.json
    python benchmarks/head_defaults.py table /tmp/heads/before.json /tmp/heads/after.json

``pixels`` re-reads the images through the cache's source, so it is skipped on the tiled cache (its paths are not
files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# ten classes of real photographs: scikit-image's samples and scikit-learn's two (textures share one class)
PHOTO_CLASSES = {
    "astronaut": ["astronaut"], "coffee": ["coffee"], "cat": ["chelsea"], "rocket": ["rocket"],
    "galaxies": ["hubble_deep_field"], "tissue": ["immunohistochemistry"], "retina": ["retina"],
    "china": ["china.jpg"], "flower": ["flower.jpg"], "texture": ["brick", "grass", "gravel", "coins", "camera"],
}


def _photo(name: str) -> np.ndarray:
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    from skimage import data

    image = getattr(data, name)()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]


def make_photos(root: Path, *, per_class: int, seed: int) -> None:
    """Seeded crops of 25-85% of a photo's sides, mirrored half the time, brightness jittered, saved as JPEG."""
    from PIL import Image, ImageEnhance

    rng = np.random.default_rng(seed)
    for label, sources in PHOTO_CLASSES.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        photos = [Image.fromarray(_photo(name)).convert("RGB") for name in sources]
        for i in range(per_class):
            image = photos[i % len(photos)]
            width, height = image.size
            fraction = rng.uniform(0.25, 0.85)
            w, h = int(width * fraction), int(height * fraction * rng.uniform(0.8, 1.2))
            h = min(h, height)
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            crop = image.crop((left, top, left + w, top + h)).resize((256, 256), Image.BICUBIC)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3))
            crop.save(folder / f"{label}_{i:04d}.jpg", quality=int(rng.integers(70, 95)))
    print(f"{per_class * len(PHOTO_CLASSES)} photos in {len(PHOTO_CLASSES)} classes -> {root}")


def tile(source: Path, out: Path, *, rows: int, noise: float, seed: int) -> None:
    """A large cache from a real one: its rows repeated, each copy times (1 + noise * N(0, 1)), elementwise."""
    from transfer_cache.cache import Rows, open_cache, write_cache

    cache = open_cache(source)
    features = np.asarray(cache.features, dtype=np.float32)
    labels = np.asarray(cache.labels)
    rng = np.random.default_rng(seed)
    take = np.resize(np.arange(len(labels)), rows)
    tiled = features[take] * (1.0 + noise * rng.standard_normal((rows, features.shape[1]))).astype(np.float32)
    computed = {"format", "format_version", "fingerprint", "feature_dim", "rows", "created"}
    attrs = {key: value for key, value in cache.config.items() if key not in computed}
    write_cache(
        out, attrs=attrs, features=[tiled],
        rows=Rows(ids=[f"{i:064x}" for i in range(rows)], paths=[f"tiled/{i:06d}" for i in range(rows)],
                  labels=[int(v) for v in labels[take]], split=[""] * rows),
    )
    cache.close()
    print(f"{rows} rows ({features.shape[1]}-d, noise {noise}) -> {out}")


def measure_one(cache: str, head: str, params: list[str]) -> dict:
    """One head on one cache (at its defaults unless ``params`` are given), through fit() as a user runs it."""
    import warnings

    from transfer_cache.classifiers import CLASSIFIERS
    from transfer_cache.fit import fit

    warnings.simplefilter("ignore")
    if CLASSIFIERS[head].is_keras:  # importing Keras costs seconds once per process: keep it out of the fit time
        import keras  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="head-defaults-") as runs:
        (result,) = fit([cache], classifier=head, params=params, runs_dir=runs, seed=0, progress=False)
        return {"accuracy": result.accuracy, "fit_seconds": result.fit_seconds, "n_train": result.metrics["n_train"],
                "params": result.params}


def measure(caches: list[str], heads: list[str] | None, *, timeout: float, out: Path | None) -> list[dict]:
    from transfer_cache.cache import open_cache
    from transfer_cache.classifiers import CLASSIFIERS

    results = []
    for cache in caches:
        opened = open_cache(cache)
        shape = (len(opened.labels), int(np.prod(opened.features.shape[1:])))
        has_images = not str(opened.paths[0]).startswith("tiled/")
        for head in heads or list(CLASSIFIERS):
            row = {"cache": Path(cache).name.split(".")[0], "rows": shape[0], "dim": shape[1], "head": head}
            if CLASSIFIERS[head].input_kind == "pixels" and not has_images:
                row["status"] = "skipped (no images)"
            else:
                start = time.perf_counter()
                try:
                    done = subprocess.run(
                        [sys.executable, __file__, "one", cache, head], capture_output=True, text=True, timeout=timeout
                    )
                    if done.returncode == 0:
                        row.update(json.loads(done.stdout.strip().splitlines()[-1]), status="ok")
                    else:
                        row["status"] = "error: " + ((done.stderr.strip().splitlines() or ["?"])[-1])[:120]
                except subprocess.TimeoutExpired:
                    row["status"] = f"over {timeout:.0f} s"
                row["wall_seconds"] = round(time.perf_counter() - start, 1)
            results.append(row)
            print(_line(row), flush=True)
            if out is not None:
                out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return row.get("status", "-")
    return f"{row['accuracy']:.3f} / {row['fit_seconds']:.1f} s"


def _line(row: dict) -> str:
    return f"{row['cache']:<12} {row['rows']:>6} x {row['dim']:<5} {row['head']:<14} {_cell(row)}"


def table(before: Path, after: Path) -> str:
    """Markdown: one line per (cache, head), accuracy / fit seconds before and after."""
    old = {(r["cache"], r["head"]): r for r in json.loads(before.read_text())}
    new = {(r["cache"], r["head"]): r for r in json.loads(after.read_text())}
    keys = list(dict.fromkeys(list(old) + list(new)))
    lines = ["| cache (rows x dim) | head | before: accuracy / fit s | after: accuracy / fit s |", "|---|---|---|---|"]
    for key in keys:
        some = new.get(key) or old.get(key)
        lines.append(f"| {key[0]} ({some['rows']} x {some['dim']}) | {key[1]} | {_cell(old.get(key))} | {_cell(new.get(key))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    photos = commands.add_parser("photos", help="write the folder of real photos (b)")
    photos.add_argument("root", type=Path)
    photos.add_argument("--per-class", type=int, default=220)
    photos.add_argument("--seed", type=int, default=0)
    tiles = commands.add_parser("tile", help="write a large cache by tiling a real one with multiplicative noise (c)")
    tiles.add_argument("source", type=Path)
    tiles.add_argument("out", type=Path)
    tiles.add_argument("--rows", type=int, default=22000)
    tiles.add_argument("--noise", type=float, default=0.05)
    tiles.add_argument("--seed", type=int, default=0)
    runs = commands.add_parser("measure", help="every head (or --heads) at its defaults on each cache")
    runs.add_argument("caches", nargs="+")
    runs.add_argument("--heads", default=None, help="comma-separated (default: every registered head)")
    runs.add_argument("--timeout", type=float, default=300.0, help="seconds per (cache, head) before giving up")
    runs.add_argument("--json", type=Path, default=None)
    one = commands.add_parser("one", help=argparse.SUPPRESS)
    one.add_argument("cache")
    one.add_argument("head")
    one.add_argument("params", nargs="*", metavar="KEY=VALUE", help="instead of the defaults, to compare candidates")
    show = commands.add_parser("table", help="BEFORE and AFTER results side by side (markdown)")
    show.add_argument("before", type=Path)
    show.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "photos":
        make_photos(args.root, per_class=args.per_class, seed=args.seed)
    elif args.command == "tile":
        tile(args.source, args.out, rows=args.rows, noise=args.noise, seed=args.seed)
    elif args.command == "measure":
        measure(args.caches, args.heads.split(",") if args.heads else None, timeout=args.timeout, out=args.json)
    elif args.command == "one":
        print(json.dumps(measure_one(args.cache, args.head, args.params)))
    else:
        print(table(args.before, args.after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
