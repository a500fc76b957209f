"""The benchmark's test images: photo-like JPEGs cut from the sample photographs that ship with scikit-image and
scikit-learn (no download), because tiny synthetic images decode for free and would flatter the pipeline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._errors import TransferCacheError

#: a typical camera photo after a web resize, and what a phone writes (12 MP): the same crops at both sizes
SMALL_SIZE = (500, 375)
PHONE_SIZE = (4032, 3024)

if TYPE_CHECKING:
    from .feature_config import FeatureConfig


def photographs() -> dict[str, np.ndarray]:
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
        raise TransferCacheError(
            "the benchmark needs the sample photographs of scikit-image or scikit-learn; pip install scikit-image"
        )
    return photos


def write_test_images(
    folder: str | os.PathLike, count: int, *, seed: int = 0, start: int = 0, size=SMALL_SIZE
) -> Path:
    """``folder/<photo>/img_<i>.jpg``: ``count`` distinct seeded crops of the sample photos, resized to ``size`` (a
    typical camera photo after a web resize: 500x375), random flip, JPEG quality 90."""
    from PIL import Image

    folder = Path(folder)
    photos = photographs()
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


def photo_set(work: str | os.PathLike, count: int, *, size=SMALL_SIZE) -> Path:
    """``work/photos-<W>x<H>-<count>``: the first ``count`` test images at ``size``, written once and kept (under a
    temporary name until complete), since 12 MP photos take a while to write."""
    folder = Path(work) / f"photos-{size[0]}x{size[1]}-{count}"
    if not folder.is_dir():
        partial = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        write_test_images(partial, count, size=size)
        partial.rename(folder)
    return folder


def resized_images(folder: Path, config: FeatureConfig) -> tuple[np.ndarray, list[Path]]:
    """Every test image of ``folder`` decoded and resized as extraction does for ``config``, so the backbone alone
    can be timed on pixels already in memory."""
    from .pipeline import prepare_image

    files = sorted(folder.rglob("*.jpg"))
    return np.stack([prepare_image(path.read_bytes(), config=config) for path in files]), files
