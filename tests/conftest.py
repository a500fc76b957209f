"""Shared fixtures: small real image folders written with PIL, and quiet TensorFlow."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# converted OpenVINO models of this test session stay out of the user's cache (subprocesses inherit it)
os.environ.setdefault("TRANSFER_CACHE_MODELS", __import__("tempfile").mkdtemp(prefix="transfer-cache-test-models-"))

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


# --------------------------------------------------------------------------- synthetic caches (one builder for all)

SYNTHETIC_CONFIG = dict(
    backbone="tiny", weights="none", weights_sha256="random", layers=["conv3"], pooling="avg", input_size=32,
    resize="squash", crop_fraction=1.0, interpolation="bilinear", preprocessing="tf", dtype="float32", augment=0,
    compute_precision="float32", format_version=1,
)


def synthetic_attrs(*, class_names=("a", "b"), source="sklearn:digits", source_root="", **overrides) -> dict:
    """The root attributes of a tiny-backbone cache: every feature-config field, the source fields, ``overrides``.

    Built on the package's own declaration: a field added to ``FeatureConfig`` and missing here fails at once.
    """
    from transfer_cache.feature_config import FeatureConfig

    config = {**SYNTHETIC_CONFIG, **{k: v for k, v in overrides.items() if k in SYNTHETIC_CONFIG}}
    FeatureConfig(**config)  # exactly the declared fields
    extra = {k: v for k, v in overrides.items() if k not in SYNTHETIC_CONFIG}
    return {**config, "class_names": list(class_names), "source": source, "source_root": source_root, **extra}


def write_synthetic_cache(path, *, features, labels, ids=None, paths=None, split=None, failed=(), failed_ids=(),
                          **attrs):
    """A real cache file from in-memory arrays (``features``: one (N, ...) array, or a list with one per layer)."""
    from transfer_cache.cache import Rows, write_cache

    features = [np.asarray(f) for f in (features if isinstance(features, (list, tuple)) else [features])]
    n = len(features[0])
    rows = Rows(
        ids=list(ids) if ids is not None else [f"{i:064x}" for i in range(n)],
        paths=list(paths) if paths is not None else [f"img_{i:05d}.png" for i in range(n)],
        labels=[int(v) for v in labels],
        split=list(split) if split is not None else [""] * n,
        failed=list(failed),
    )
    return write_cache(path, attrs=synthetic_attrs(**attrs), rows=rows, features=features, failed_ids=failed_ids)


# --------------------------------------------------------------------------- real small disks (tmpfs, root only)


@contextlib.contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs at ``folder`` (``options``: size, ro); skips the test where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
