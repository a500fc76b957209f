"""Augmentation that survives caching: K seeded views of each training image, computed once at extraction.

Caching transfer values usually means giving up data augmentation. Here each training image gets K augmented
views, each pushed through the backbone once and stored beside the clean vector; fit samples among them every
epoch. A view is a pure function of (image content, view number, recipe, seed), so a re-run, a resumed run or an
incremental run produces exactly the same views.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageEnhance

from ._checks import one_of


@dataclass(frozen=True)
class Recipe:
    """The random transformations of one augmentation preset (all ranges are symmetric unless stated)."""

    name: str
    horizontal_flip: bool = True
    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    crop_scale: tuple[float, float] = (1.0, 1.0)  # random resized crop: area fraction kept
    crop_ratio: tuple[float, float] = (1.0, 1.0)  # and aspect ratio range
    shift: float = 0.0  # fraction of width/height, uniform in [-shift, shift]
    zoom: float = 0.0  # scale uniform in [1 - zoom, 1 + zoom]
    shear: float = 0.0  # degrees
    brightness: float = 0.0  # factor uniform in [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    fill: str = "black"  # "black" or "nearest" (edge pixels, as Keras' fill_mode='nearest')

    def describe(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


RECIPES = {
    "standard": Recipe(
        name="standard",
        horizontal_flip=True,
        rotation=15.0,
        crop_scale=(0.5, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
    ),
    # the seeds' ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
    # zoom_range=0.2, shear_range=0.2, horizontal_flip=True, fill_mode='nearest')
    "imagedatagenerator": Recipe(
        name="imagedatagenerator",
        horizontal_flip=True,
        rotation=40.0,
        shift=0.2,
        zoom=0.2,
        shear=0.2,
        fill="nearest",
    ),
    "flip": Recipe(name="flip", horizontal_flip=True),
    # for images a mirror would change (digits, letters, text): small rotations and crops, no flip
    "mild": Recipe(
        name="mild",
        horizontal_flip=False,
        rotation=10.0,
        crop_scale=(0.75, 1.0),
        crop_ratio=(0.9, 1.1),
        brightness=0.1,
        contrast=0.1,
    ),
}


def get_recipe(name: str) -> Recipe:
    return RECIPES[one_of(name, RECIPES, "augmentation recipe")]


def view_rng(digest: str, view: int, seed: int) -> np.random.Generator:
    """The random stream of one view of one image: the same on every run and every machine."""
    key = hashlib.sha256(f"{digest}:{view}:{seed}".encode("ascii")).digest()
    return np.random.default_rng(int.from_bytes(key[:8], "little"))


def augment_image(image: np.ndarray, *, recipe: Recipe, rng: np.random.Generator,
                  work_size: int | None = None) -> np.ndarray:
    """One random view of a uint8 (H, W, 3) image, same shape class; resizing to the network input comes after.

    ``work_size`` shrinks large images first (short side to that many pixels) so augmenting stays cheap.
    """
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    if work_size and min(picture.size) > work_size:
        factor = work_size / min(picture.size)
        picture = picture.resize((max(1, round(picture.width * factor)), max(1, round(picture.height * factor))),
                                 Image.BILINEAR)

    # draw every random number in a fixed order, whatever the recipe, so views are stable
    flip = rng.random() < 0.5
    angle = rng.uniform(-1, 1) * recipe.rotation
    area = rng.uniform(*recipe.crop_scale)
    log_ratio = rng.uniform(math.log(recipe.crop_ratio[0]), math.log(recipe.crop_ratio[1]))
    crop_x, crop_y = rng.random(), rng.random()
    shift_x, shift_y = rng.uniform(-1, 1, size=2) * recipe.shift
    zoom = 1.0 + rng.uniform(-1, 1) * recipe.zoom
    shear = rng.uniform(-1, 1) * recipe.shear
    brightness = 1.0 + rng.uniform(-1, 1) * recipe.brightness
    contrast = 1.0 + rng.uniform(-1, 1) * recipe.contrast
    saturation = 1.0 + rng.uniform(-1, 1) * recipe.saturation

    width, height = picture.size
    if recipe.crop_scale != (1.0, 1.0) or recipe.crop_ratio != (1.0, 1.0):
        ratio = math.exp(log_ratio)
        crop_w = min(width, max(1, round(math.sqrt(area * width * height * ratio))))
        crop_h = min(height, max(1, round(math.sqrt(area * width * height / ratio))))
        left = int(crop_x * (width - crop_w))
        top = int(crop_y * (height - crop_h))
        picture = picture.crop((left, top, left + crop_w, top + crop_h))
        width, height = picture.size

    if angle or recipe.shift or recipe.zoom or recipe.shear:
        picture = _affine(picture, angle=angle, shift=(shift_x * width, shift_y * height), zoom=zoom, shear=shear,
                          fill=recipe.fill)

    if recipe.horizontal_flip and flip:
        picture = picture.transpose(Image.FLIP_LEFT_RIGHT)
    if recipe.brightness:
        picture = ImageEnhance.Brightness(picture).enhance(brightness)
    if recipe.contrast:
        picture = ImageEnhance.Contrast(picture).enhance(contrast)
    if recipe.saturation:
        picture = ImageEnhance.Color(picture).enhance(saturation)
    return np.asarray(picture, dtype=np.uint8)


def _affine(picture: Image.Image, *, angle: float, shift, zoom: float, shear: float, fill: str) -> Image.Image:
    """Rotate, shear, zoom and shift about the centre in one resampling, as Keras' ImageDataGenerator does."""
    width, height = picture.size
    margin = 0
    if fill == "nearest":  # replicate edge pixels beyond the border, then cut them away again
        margin = max(width, height) // 2
        padded = np.pad(np.asarray(picture), ((margin, margin), (margin, margin), (0, 0)), mode="edge")
        picture = Image.fromarray(padded, "RGB")
    theta, phi = math.radians(angle), math.radians(shear)
    # forward map (output <- input) about the image centre; PIL wants the inverse (input coordinates of each
    # output pixel)
    rotation = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    shearing = np.array([[1, -math.sin(phi), 0], [0, math.cos(phi), 0], [0, 0, 1]])
    scaling = np.array([[zoom, 0, 0], [0, zoom, 0], [0, 0, 1]])
    cx, cy = picture.size[0] / 2, picture.size[1] / 2
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx + shift[0]], [0, 1, cy + shift[1]], [0, 0, 1]])
    forward = back @ rotation @ shearing @ scaling @ to_centre
    inverse = np.linalg.inv(forward)
    transformed = picture.transform(picture.size, Image.AFFINE, data=tuple(inverse[:2].ravel()),
                                    resample=Image.BILINEAR)
    if margin:
        transformed = transformed.crop((margin, margin, margin + width, margin + height))
    return transformed
