"""A small folder of real photos, as a user would have: varied crops of scikit-image's sample photographs.

``make_photo_folder(root)`` writes ``root/<class>/<class>_NN.jpg`` (3 classes x 10 crops of chelsea, coffee and
rocket by default, each a different seeded crop, scale and mirror, saved as JPEG at a photo-like size), plus one
truncated JPEG and one empty file, which extraction must skip and report. Used by the user-path tests and the
label-error checks; also runnable as a script to make the folder by hand:

    python tests/photos.py /tmp/photos
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_CLASSES = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket"}


def varied_crops(photo: np.ndarray, count: int, *, seed: int, size=(320, 240)) -> list[Image.Image]:
    """``count`` seeded crops of 55-95% of the photo's sides, some mirrored, resized to ``size``."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(photo).convert("RGB")
    width, height = image.size
    crops = []
    for _ in range(count):
        fraction = rng.uniform(0.55, 0.95)
        w, h = int(width * fraction), int(height * fraction)
        left = int(rng.integers(0, width - w + 1))
        top = int(rng.integers(0, height - h + 1))
        crop = image.crop((left, top, left + w, top + h)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(crop)
    return crops


def make_photo_folder(root, *, per_class: int = 10, classes: dict[str, str] | None = None, bad_files: bool = True,
                      seed: int = 0) -> Path:
    """Write the folder and return its root; ``bad_files`` adds ``cat/broken.jpg`` (truncated) and
    ``coffee/empty.jpg``."""
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("tests/photos.py needs scikit-image for its sample photos: pip install scikit-image "
                         "(the test extras, pip install -e \".[dev]\", include it)") from None

    root = Path(root)
    for index, (label, photo_name) in enumerate((classes or PHOTO_CLASSES).items()):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(varied_crops(getattr(data, photo_name)(), per_class, seed=seed * 100 + index)):
            crop.save(folder / f"{label}_{i:02d}.jpg", quality=90)
    if bad_files:
        good = (root / "cat" / "cat_00.jpg").read_bytes()
        (root / "cat" / "broken.jpg").write_bytes(good[: len(good) // 3])
        (root / "coffee" / "empty.jpg").write_bytes(b"")
    return root


if __name__ == "__main__":
    print(make_photo_folder(sys.argv[1] if len(sys.argv) > 1 else "photos"))
