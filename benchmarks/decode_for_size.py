"""What decoding for the size needed does: to the vectors, and to extraction's speed on phone-size photos.

``python benchmarks/decode_for_size.py [--work DIR] [--pairs 3] [--images 192]``

1. Vectors. The sample photographs of scikit-image and scikit-learn, each upscaled with Pillow's LANCZOS to 4032x3024
   (what a phone writes) and saved as JPEG quality 90 (DCT scaling: ``draft``) and as PNG (``Image.reduce``), go
   through the embedded ``efficientnet_lite0`` twice: decoded in full and reduced. Printed: the cosine of each
   image's two vectors, per resize policy (the backbone's center-crop, squash, pad), and the same for the 192 photo
   crops of part 2 at their default configuration. Target: >= 0.995 for every image.
2. Speed. ``python -m transfer_cache.extract`` on 192 phone-size JPEGs (seeded crops of the same photographs,
   ``_bench_images.write_test_images`` at 4032x3024) against the same crops at 500x375, in alternated pairs
   (A B, B A, ...), each run a fresh process with a fresh cache folder, with ``TRANSFER_CACHE_MODELS`` a models
   folder made first (the conversion is not timed): the bench's ``phone`` part (``python -m transfer_cache.bench
   --parts phone``), printed pair by pair. Printed per pair: wall images/s of each (192 / the process's
   wall time) and extract's own images/s (its summary line), and the ratios; then the medians. Target: >= 0.70.
   ``--decoding full`` measures the same pairs with the old decoding.
3. Augmented views (``--views N``, default 0: skipped). Extraction still decodes an image in full for its augmented
   views, which begin by shrinking it to a short side of twice the input size (``forward_pass._augmenter``). What a
   reduced decode would give: the first N phone-size crops DCT-scaled (``draft``, the image still >= 1.25x that short
   side) and shrunk to the same size with the same region (a float box), then the same 4 seeded views of each
   (``augment_image``, recipes standard and imagedatagenerator) against the views of the full decode. Printed: the
   views' shapes agree (the geometry is exact), their cosines, and the decode CPU per photo both ways. Nothing in
   the package decodes views this way yet: their vectors would change, so augmented "reduced" caches would need
   another fingerprint.

Measured here (2 shared cores, other jobs running; Pillow 13 with libjpeg-turbo 3.2, OpenVINO runtime):
- vectors: lowest cosine of any image 0.99652 (the 192 crops: min 0.99652, 1st pct 0.99691, median 0.99892; the 8
  photos: center-crop jpg min 0.99678, png 0.99916; squash jpg 0.99863, png 0.99930; pad jpg 0.99923, png 0.99806).
- speed, reduced: pairs 0.94, 0.79, 0.76 (wall), median 0.79 wall and 0.79 extract's own; in the same hour with
  ``--decoding full``: pairs 0.26, 0.23, 0.26, median 0.26 wall and 0.17 extract's.
- views (``--views 24``, later, heavier load): standard min 0.99871, 1st pct 0.99897, median 0.99966; imagedatagenerator
  min 0.99873, median 0.99962 (96 views each, DCT scale 1/4, same shapes); decode CPU per photo 180-213 ms full,
  25-29 ms reduced and shrunk.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
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
    """The same ``count`` seeded crops at 4032x3024 and at 500x375 (written once, kept in ``work``): the bench's."""
    from transfer_cache._bench_images import photo_set

    return photo_set(work, count, size=PHONE), photo_set(work, count, size=SMALL)


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


def speed_figures(phone: Path, small: Path, *, pairs: int, work: Path, decoding: str | None) -> float:
    """The bench's ``phone`` part (alternated pairs of whole extractions); prints each pair and the medians; returns
    the median wall ratio."""
    from transfer_cache._bench_timing import photo_size_runs

    options = {"decoding": decoding} if decoding else {}
    with tempfile.TemporaryDirectory(prefix="decode-bench-", dir=work) as runs:
        report = photo_size_runs(phone, small, options=options, repeats=pairs, workdir=Path(runs))
    images = report["images"]
    print(f"speed: extract on {phone.name} against {small.name} (decoding {decoding or 'default'}, "
          f"{report['runtime']}), alternated pairs, fresh cache folder each run, models made beforehand")
    for pair, (big, little) in enumerate(zip(report["phone"]["runs"], report["small"]["runs"]), 1):
        print(f"  pair {pair}: phone {images / big['wall_seconds']:.1f} images/s wall "
              f"({big['images_per_second']:.1f} extract's), 500x375 {images / little['wall_seconds']:.1f} wall "
              f"({little['images_per_second']:.1f}); ratio wall {little['wall_seconds'] / big['wall_seconds']:.2f}, "
              f"extract's {big['images_per_second'] / little['images_per_second']:.2f}")
    print(f"median ratio phone / 500x375: wall {report['ratio_wall']:.2f}, extract's {report['ratio_steady']:.2f} "
          "(target >= 0.70)")
    return report["ratio_wall"]


def _shrunk_reduced(data: bytes, short_side: int) -> tuple[np.ndarray, int]:
    """The JPEG ``data`` shrunk (BILINEAR) to ``short_side`` as ``augment_image`` shrinks a full decode: the same size,
    computed on the full image, from a DCT-scaled decode, the region scaled by the actual reduction."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    width, height = image.size
    factor = short_side / min(width, height)
    target = (max(1, round(width * factor)), max(1, round(height * factor)))
    scale = next((s for s in (8, 4, 2) if min(width, height) / s >= 1.25 * short_side), 1)
    if scale > 1:
        image.draft("RGB", (width // scale, height // scale))
        scale = round(width / image.size[0])
    image = image.convert("RGB")
    return np.asarray(image.resize(target, Image.Resampling.BILINEAR, box=(0, 0, width / scale, height / scale))), scale


def view_figures(crops: Path, count: int) -> None:
    """Print how close augmented views of a reduced decode are to those of a full decode (part 3)."""
    import time

    from transfer_cache import _imaging
    from transfer_cache.augment import augment_image, get_recipe, view_rng
    from transfer_cache.extract_options import feature_config
    from transfer_cache.runtimes import get_runtime

    config = feature_config()
    work_size = 2 * config.input_size  # forward_pass._augmenter's
    fit = dict(size=config.input_size, policy=config.resize, crop_fraction=config.crop_fraction,
               interpolation=config.interpolation)
    forward = get_runtime(config.runtime).forward(config, batch_size=32)
    files = sorted(crops.rglob("*.jpg"))[:count]
    for name in ("standard", "imagedatagenerator"):
        recipe = get_recipe(name)
        pixels: dict[str, list] = {"full": [], "reduced": []}
        cpu, scales = {"full": 0.0, "reduced": 0.0}, set()
        for path in files:
            data = path.read_bytes()
            begin = time.thread_time()
            full = _imaging.decode_image(data)
            cpu["full"] += time.thread_time() - begin
            begin = time.thread_time()
            reduced, scale = _shrunk_reduced(data, work_size)
            cpu["reduced"] += time.thread_time() - begin
            scales.add(scale)
            for view in (1, 2, 3, 4):
                rng = {kind: view_rng(path.name, view, 0) for kind in pixels}  # the same stream for both
                views = {kind: augment_image(image, recipe=recipe, rng=rng[kind], work_size=work_size)
                         for kind, image in (("full", full), ("reduced", reduced))}
                assert views["full"].shape == views["reduced"].shape, "the geometry differs"
                for kind, image in views.items():
                    pixels[kind].append(_imaging.resize_image(image, **fit))
        full_vectors, reduced_vectors = (
            np.concatenate([np.asarray(forward(np.stack(pixels[kind][i:i + 32]))[0], np.float64)
                            for i in range(0, len(pixels[kind]), 32)]) for kind in ("full", "reduced"))
        values = cosines(full_vectors, reduced_vectors)
        print(f"views, {name}: {len(values)} views of {len(files)} photos (DCT scale {sorted(scales)}), same shapes: "
              f"cosine min {values.min():.5f} 1st pct {np.percentile(values, 1):.5f} median {np.median(values):.5f}; "
              f"decode CPU per photo {1000 * cpu['full'] / len(files):.0f} ms full, "
              f"{1000 * cpu['reduced'] / len(files):.0f} ms reduced and shrunk")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "decode_for_size"),
                        help="where the photo sets are written once and kept")
    parser.add_argument("--images", type=int, default=192, help="photos in each speed set (default 192)")
    parser.add_argument("--pairs", type=int, default=3, help="alternated pairs (default 3)")
    parser.add_argument("--decoding", default=None, help="pass --decoding to extract (default: extract's default)")
    parser.add_argument("--skip-vectors", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--views", type=int, default=0, help="photos for part 3, augmented views (default 0: skip)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    phone, small = photo_sets(work, args.images)
    if not args.skip_vectors:
        vector_figures(work, phone)
    if not args.skip_speed:
        speed_figures(phone, small, pairs=args.pairs, work=work, decoding=args.decoding)
    if args.views:
        view_figures(phone, args.views)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
