"""Shared fixtures: small real image folders written with PIL, and quiet TensorFlow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


def write_image(path, *, seed: int, size=(40, 32), mode="RGB", fmt=None):
    """Write one seeded random image; the class decides the mean colour so classes are separable."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def make_class_folder(root, *, classes=("cat", "dog", "fox"), per_class=4, splits=None, seed=0, size=(40, 32)):
    """root/<class>/<i>.png, or root/<split>/<class>/<i>.png when ``splits`` is given; returns the root."""
    counter = seed
    for split in splits or [None]:
        for label, name in enumerate(classes):
            for i in range(per_class):
                folder = root / split / name if split else root / name
                rng = np.random.default_rng(counter)
                tint = np.zeros(3)
                tint[label % 3] = 120
                array = np.clip(rng.normal(100, 40, size=(size[1], size[0], 3)) + tint, 0, 255).astype(np.uint8)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / f"{name}_{i:03d}.png")
                counter += 1
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_class_folder(tmp_path / "images")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "caches"
