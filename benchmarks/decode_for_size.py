"""What decoding for the size needed does: to the vectors, and to extraction's speed on phone-size photos.

``python benchmarks/decode_for_size.py [--work DIR] [--pairs 3] [--images 192]``

1. Vectors. The sample photographs of scikit-image and scikit-learn, each upscaled with Pillow's LANCZOS to 4032x3024
   (what a phone writes) and saved as JPEG quality 90 (DCT scaling: ``draft``) and as PNG (``Image.reduce``), go
   through the embedded ``efficientnet_lite0`` twice: decoded in full and reduced. Printed: the cosine of each
   image's two vectors, per resize policy (the backbone's center-crop, squash, pad), and the same for the 192 photo
   crops of part 2 at their default configuration. Target: >= 0.995 for every image.
2. Speed. ``python -m transfer_cache.extract`` on 192 phone-size JPEGs (seeded crops of the same photographs,
   ``_bench_images.write_test_images`` at 4032x3024) against the same crops at 500x375, in alternated pairs
   (A B A B ...), each run a fresh process with a fresh ``--cache-dir``, with ``TRANSFER_CACHE_MODELS`` a models
   folder warmed first (the conversion is not timed). Printed per pair: wall images/s of each (192 / the process's
   wall time) and extract's own images/s (its summary line), and the ratios; then the medians. Target: >= 0.70.
   ``--decoding full`` measures the same pairs with the old decoding.

Measured here (2 shared cores, other jobs running; Pillow 13 with libjpeg-turbo 3.2, OpenVINO runtime):
- vectors: lowest cosine of any image 0.99652 (the 192 crops: min 0.99652, 1st pct 0.99691, median 0.99892; the 8
  photos: center-crop jpg min 0.99678, png 0.99916; squash jpg 0.99863, png 0.99930; pad jpg 0.99923, png 0.99806).
- speed, reduced: pairs 0.94, 0.79, 0.76 (wall), median 0.79 wall and 0.79 extract's own; in the same hour with
  ``--decoding full``: pairs 0.26, 0.23, 0.26, median 0.26 wall and 0.17 extract's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHONE = (4032, 3024)
SMALL = (500, 375)
POLICIES = ("center-crop", "squash", "pad")


def phone_photos(folder: Path) -> dict[str, list[Path]]:
    """Every sample photograph upscaled to 4032x3024: ``{"jpg": [...], "png": [...]}``."""
    from PIL import Image

    from transfer_cache._bench_images import photographs

    files: dict[str, list[Path]] = {"jpg": [], "png": []}
    folder.mkdir(parents=True, exist_ok=True)
    for name, photo in sorted(photographs().items()):
        jpg, png = folder / f"{name}.jpg", folder / f"{name}.png"
        if not (jpg.exists() and png.exists()):
            big = Image.fromarray(np.ascontiguousarray(photo)).resize(PHONE, Image.Resampling.LANCZOS)
            big.save(jpg, format="JPEG", quality=90)
            big.save(png, format="PNG", compress_level=1)
        files["jpg"].append(jpg)
        files["png"].append(png)
    return files


def photo_sets(work: Path, count: int) -> tuple[Path, Path]:
    """The same ``count`` seeded crops at 4032x3024 and at 500x375 (written once, kept in ``work``)."""
    from transfer_cache._bench_images import write_test_images

    sets = []
    for size in (PHONE, SMALL):
        folder = work / f"crops-{size[0]}x{size[1]}-{count}"
        if not folder.exists():
            partial = folder.with_name(folder.name + ".partial")
            write_test_images(partial, count, size=size)
            partial.rename(folder)
        sets.append(folder)
    return sets[0], sets[1]


def vectors(files: list[Path], config, forward) -> np.ndarray:
    from transfer_cache.pipeline import prepare_image

    out = []
    for start in range(0, len(files), 32):
        pixels = np.stack([prepare_image(path.read_bytes(), config=config) for path in files[start:start + 32]])
        out.append(np.asarray(forward(pixels)[0], np.float64))
    return np.concatenate(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def vector_figures(work: Path, crops: Path) -> float:
    """Print the per-image cosines of reduced to full decoding; returns the lowest."""
    from transfer_cache.extract_options import feature_config
    from transfer_cache.runtimes import get_runtime

    photos = phone_photos(work / "phone-photos")
    worst = 1.0
    forward = None
    print(f"vectors: cosine of reduced to full decoding, efficientnet_lite0, {PHONE[0]}x{PHONE[1]} photos")
    for policy in POLICIES:
        full = feature_config(resize=policy, decoding="full")
        reduced = dataclasses.replace(full, decoding="reduced")
        forward = forward or get_runtime(full.runtime).forward(full, batch_size=32)
        for fmt, files in photos.items():
            values = cosines(vectors(files, full, forward), vectors(files, reduced, forward))
            worst = min(worst, float(values.min()))
            each = ", ".join(f"{path.stem} {value:.5f}" for path, value in zip(files, values))
            print(f"  {policy:<11} {fmt}: min {values.min():.5f} median {np.median(values):.5f}  ({each})")
    full = feature_config(decoding="full")
    files = sorted(crops.rglob("*.jpg"))
    values = cosines(vectors(files, full, forward), vectors(files, dataclasses.replace(full, decoding="reduced"),
                                                            forward))
    worst = min(worst, float(values.min()))
    print(f"  {len(files)} phone-size crops (default configuration, jpg): min {values.min():.5f} "
          f"1st pct {np.percentile(values, 1):.5f} median {np.median(values):.5f}")
    print(f"lowest cosine of any image: {worst:.5f} (target >= 0.995)")
    return worst


def extract_rate(folder: Path, env: dict, decoding: str | None) -> tuple[float, float]:
    """(wall images/s of the whole process, extract's own images/s) of one extraction into a fresh cache folder."""
    count = len(list(folder.rglob("*.jpg")))
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as caches:
        command = [sys.executable, "-m", "transfer_cache.extract", str(folder), "--cache-dir", caches, "--quiet"]
        if decoding:
            command += ["--decoding", decoding]
        begin = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
        wall = time.perf_counter() - begin
    if done.returncode != 0:
        raise SystemExit(f"extract failed: {done.stderr[-2000:]}")
    own = float(re.search(r"([\d.]+) images/s", done.stdout).group(1))
    return count / wall, own


def speed_figures(phone: Path, small: Path, *, pairs: int, models: Path, decoding: str | None) -> float:
    """Alternated pairs of whole extractions; prints each and the medians; returns the median wall ratio."""
    env = {**os.environ, "TRANSFER_CACHE_MODELS": str(models)}
    extract_rate(small, env, decoding)  # warms the models folder: the conversion is not timed
    print(f"speed: extract on {phone.name} against {small.name} (decoding {decoding or 'default'}), "
          f"alternated pairs, fresh cache folder each run, models in {models}")
    walls, owns = [], []
    for pair in range(1, pairs + 1):
        big_wall, big_own = extract_rate(phone, env, decoding)
        small_wall, small_own = extract_rate(small, env, decoding)
        walls.append(big_wall / small_wall)
        owns.append(big_own / small_own)
        print(f"  pair {pair}: phone {big_wall:.1f} images/s wall ({big_own:.1f} extract's), 500x375 "
              f"{small_wall:.1f} wall ({small_own:.1f}); ratio wall {walls[-1]:.2f}, extract's {owns[-1]:.2f}")
    print(f"median ratio phone / 500x375: wall {statistics.median(walls):.2f}, extract's "
          f"{statistics.median(owns):.2f} (target >= 0.70)")
    return statistics.median(walls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "decode_for_size"),
                        help="where the photo sets are written once and kept")
    parser.add_argument("--images", type=int, default=192, help="photos in each speed set (default 192)")
    parser.add_argument("--pairs", type=int, default=3, help="alternated pairs (default 3)")
    parser.add_argument("--models", default=None, help="models folder (default $TRANSFER_CACHE_MODELS or the usual)")
    parser.add_argument("--decoding", default=None, help="pass --decoding to extract (default: extract's default)")
    parser.add_argument("--skip-vectors", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.work)
    phone, small = photo_sets(work, args.images)
    if not args.skip_vectors:
        vector_figures(work, phone)
    if not args.skip_speed:
        from transfer_cache.runtimes.openvino import models_dir

        models = Path(args.models) if args.models else models_dir()
        speed_figures(phone, small, pairs=args.pairs, models=models, decoding=args.decoding)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
