"""Image decoding, colour normalisation and resizing with PIL and numpy only (no TensorFlow).

Every image that reaches a backbone goes through here, so that a PNG, a 16-bit TIFF, a CMYK JPEG,
an EXIF-rotated phone photo and a float array all arrive as the same thing: a uint8 (H, W, 3) RGB
array. Anything that cannot be decoded raises :class:`ImageError` with a short human reason, which
the extraction records against the file and skips. Functions are pure and thread-safe (no shared
file handles, no global PIL or warnings state is changed), so the decode threads of ``pipeline`` call
them in parallel.

Colour rules (the same for files and arrays):

- grayscale (PIL "1", "L"; arrays (H, W) or (H, W, 1)) is replicated to three channels;
- alpha (RGBA, LA, PA, premultiplied variants, palette images with transparency; arrays
  (H, W, 4)) is composited on white, the usual background of product and document photos;
- 16-bit values (PIL "I;16*", arrays of uint16) are divided by 257, which maps 0..65535 exactly
  onto 0..255 (the full range of the type, never the range of the particular image, so that
  two images with the same pixel values always give the same result);
- PIL "I" (32-bit integer) images in practice hold 16-bit samples (that is how older Pillow and
  some TIFF writers store them): values are clipped to 0..65535 and divided by 257;
- float images (PIL "F", float arrays) are read as [0, 1] when every value lies in [0, 1] and as
  [0, 255] otherwise (see :func:`to_rgb_array` for the array rules and how to fix the range);
- CMYK, YCbCr and other colour modes are converted by PIL to RGB;
- EXIF orientation is applied (a malformed EXIF block leaves the pixels as stored);
- animated GIF/WebP/APNG: the first frame.

Decoding for the size needed (``decoding="reduced"``): when the region a resize policy uses is at least twice what
the policy needs (``_DRAFT_GAP`` times the output size for a JPEG, ``_REDUCING_GAP`` for others; more for "area",
never for "nearest"), a JPEG is decoded at 1/2, 1/4 or 1/8 scale (DCT scaling, Pillow's ``draft``) and any other
image is box-reduced by an integer factor (``Image.reduce``) before the resize, so that the image stays at least that
many times the output size. The policy's geometry is computed on the original image and scaled by the actual
reduction (a float box), so the same region of the photo is used; ``"full"`` decodes every pixel (what 0.1.0 and 0.2.0
did).
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ._checks import one_of, whole_number
from ._errors import ImageError, TransferCacheError

#: The largest image (width x height) that is decoded; PIL's default limit, but always an error.
MAX_PIXELS = 89_478_485

RESIZE_POLICIES = ("squash", "center-crop", "pad")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}

FLOAT_RANGES = ("auto", "0-1", "0-255")

DECODINGS = ("reduced", "full")
#: After a reduced decode the policy's region is still at least this many times the output size (Pillow's
#: ``reducing_gap`` idea: the final resize keeps its antialiasing filter over real pixels). The box filter ("area")
#: counts whole pixels, so it keeps more of them; "nearest" picks single pixels, which a reduced image has averaged
#: away: it always decodes in full.
_REDUCING_GAP = 2.0
_REDUCING_GAPS = {Image.Resampling.BOX: 4.0, Image.Resampling.NEAREST: math.inf}
#: DCT scaling is itself a low-pass filter (the IDCT of each block's low frequencies), so a JPEG may be drafted closer
#: to the output size: 1/8 rather than 1/4 of a 12 MP photo for a 224 centre crop (4 ms less per photo; the vectors
#: stay at cosine >= 0.996 to a full decode's: benchmarks/decode_for_size.py)
_DRAFT_GAP = 1.25
_JPEG_SCALES = (8, 4, 2)


# --------------------------------------------------------------------------- decoding


def _identify(data: bytes) -> Image.Image:
    """Open ``data`` lazily with the first PIL plugin that accepts it, without PIL's size check.

    ``PIL.Image.open`` warns for images between 1x and 2x its pixel limit and changing that means
    touching process-wide state (``warnings`` filters or ``Image.MAX_IMAGE_PIXELS``), which is not
    thread-safe. Walking PIL's public plugin registry (``Image.ID``/``Image.OPEN``, filled by
    ``Image.register_open``) gives the image size before any pixel is decoded, so the limit is
    checked here, always as an error.
    """
    fp = io.BytesIO(data)
    prefix = data[:16]
    not_installed: list[str] = []
    tried: set[str] = set()
    for loader in (Image.preinit, Image.init):
        loader()
        for fmt in list(Image.ID):
            if fmt in tried:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            result = accept(prefix) if accept else True
            if isinstance(result, str):  # recognised, but the codec is not installed
                not_installed.append(result)
                continue
            if not result:
                continue
            fp.seek(0)
            try:
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # as in PIL: this plugin rejects the header, let the next one try
            except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure means "cannot decode"
                raise _decoder_error(exc) from None
    if not_installed:
        raise ImageError(f"unsupported image format: {not_installed[0]}")
    raise ImageError("not an image (cannot identify image format)")


def _decoder_error(exc: Exception) -> ImageError:
    """Turn a PIL decoder exception into a short reason: truncated or corrupt."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, (OSError, EOFError)) and "truncat" in message.lower():
        return ImageError(f"truncated image: {message}")
    return ImageError(f"corrupt image: {message}")


def decode_image(data: bytes, *, name: str = "") -> np.ndarray:
    """Decode encoded image bytes to a uint8 (H, W, 3) RGB array, following the module's colour rules.

    ``name`` (the file's path) is only used for context: it is attached to a raised
    :class:`ImageError` as a note, while the message itself stays the short reason that the cache
    records (e.g. "empty file (0 bytes)", "truncated image: image file is truncated").
    """
    return _with_name(name, lambda: _pil_to_rgb_checked(_open_decoded(_as_bytes(data, "decode_image"))))


def decode_resized(
    data: bytes, *, size: int, policy: str, crop_fraction: float, interpolation: str, decoding: str = "full",
    name: str = "",
) -> np.ndarray:
    """``resize_image(decode_image(data), ...)`` for ``decoding="full"``, pixel for pixel, without the round trip
    through numpy between the two for RGB images (most photographs): less work holding the GIL, so decoding threads
    scale with cores. ``decoding="reduced"`` decodes a large image at the size the policy needs (see the module)."""
    validate_resize(size=size, policy=policy, crop_fraction=crop_fraction, interpolation=interpolation)
    one_of(decoding, DECODINGS, "decoding")
    fit = _Fit(size=int(size), policy=policy, crop_fraction=float(crop_fraction), resample=_RESAMPLE[interpolation])

    def run() -> np.ndarray:
        raw = _as_bytes(data, "decode_resized")
        if decoding == "reduced":
            rgb, factor, original, start = _decode_reduced(raw, fit)
            return _resize_policy(rgb, fit, factor, original, start)
        return _resize_policy(_rgb(_open_decoded(raw)), fit)

    return _with_name(name, run)


def _as_bytes(data, caller: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{caller} expects bytes; got {type(data).__name__}")
    return bytes(data)


def _with_name(name: str, run):
    """Run a decode; an ImageError it raises carries the file's name as a note (its message stays the short reason)."""
    try:
        return run()
    except ImageError as exc:
        if name:
            exc.add_note(f"while decoding {name}")
        raise


def _open_decoded(data: bytes) -> Image.Image:
    """The decoded, EXIF-oriented Pillow image of ``data``, or an ImageError saying why it cannot be."""
    im = _open_checked(data)
    _load(im)
    return _oriented(im)


def _open_checked(data: bytes) -> Image.Image:
    """``data`` opened lazily (nothing decoded yet), its size checked against the pixel limit."""
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    im = _identify(data)
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(f"corrupt image: size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image too large: {width}x{height} pixels exceeds the {MAX_PIXELS}-pixel limit "
            "(decompression bomb?)"
        )
    return im


def _load(im: Image.Image) -> None:
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes means "cannot decode"
        raise _decoder_error(exc) from None


def _oriented(im: Image.Image) -> Image.Image:
    try:
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy for the usual unrotated image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose a readable image
        pass
    return im


def _pil_to_rgb_checked(im: Image.Image) -> np.ndarray:
    try:
        return _pil_to_rgb(im)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _decoder_error(exc) from None


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend uint8 RGB over a white background with uint8 alpha, rounding to nearest."""
    a = alpha.astype(np.uint32)[..., None]
    out = (rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if mode in ("1", "L"):
        return _gray_to_rgb(np.array(im.convert("L"), dtype=np.uint8))
    if mode == "P" and not im.has_transparency_data:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa"):
        rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
        return _composite_on_white(rgba[..., :3], rgba[..., 3])
    if mode.startswith("I;16"):
        values = np.asarray(im).astype(np.uint32)
        return _gray_to_rgb(((values + 128) // 257).astype(np.uint8))
    if mode == "I":
        values = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return _gray_to_rgb(((values + 128) // 257).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        return _float_to_uint8(values, "auto", clip=True)[..., None].repeat(3, axis=2)
    try:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as exc:
        raise ImageError(f"unsupported colour mode {mode!r}: {exc}") from None


# --------------------------------------------------------------------------- arrays


def _float_to_uint8(values: np.ndarray, float_range: str, *, clip: bool = False) -> np.ndarray:
    """Scale float samples to uint8 by the rule in :func:`to_rgb_array`; ``clip`` for decoded files."""
    if values.size == 0:
        return values.astype(np.uint8)
    if not clip and not np.all(np.isfinite(values)):
        raise ImageError("float image contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if float_range == "auto":
        float_range = "0-1" if low >= 0.0 and high <= 1.0 else "0-255"
    limit = 1.0 if float_range == "0-1" else 255.0
    if not clip and (low < 0.0 or high > limit):
        if float_range == "0-1":
            expected = "[0, 1] (float_range='0-1')"
        else:
            expected = "[0, 255] (or all of them in [0, 1])"
        raise ImageError(
            f"float image values must lie in {expected}; got values in [{low:g}, {high:g}]: "
            "rescale the array, or convert it to uint8 yourself"
        )
    scaled = np.clip(values, 0.0, limit) * (255.0 / limit)
    return np.rint(scaled).astype(np.uint8)


def to_rgb_array(array: np.ndarray, *, float_range: str = "auto") -> np.ndarray:
    """Convert an in-memory image to a new uint8 (H, W, 3) RGB array.

    Shapes: (H, W) and (H, W, 1) are grayscale, (H, W, 3) RGB, (H, W, 4) RGBA (alpha composited on
    white); anything else raises :class:`ImageError`. Values by dtype:

    - uint8: as is; bool: False -> 0, True -> 255;
    - uint16: divided by 257 (0..65535 -> 0..255);
    - other integers: must lie in 0..255, else :class:`ImageError` (cast to uint16 for 16-bit data);
    - float: ``float_range="auto"`` reads [0, 1] when every value lies in [0, 1] and [0, 255]
      otherwise; "0-1" and "0-255" force one reading. Values outside the range, NaN and infinity
      raise :class:`ImageError`. A whole dataset should use one range: sources decide it once per
      array (an all-dark [0, 255] image would otherwise be read as [0, 1]).
    """
    one_of(float_range, FLOAT_RANGES, "float_range")
    array = np.asarray(array)
    shape = array.shape
    if not (
        (array.ndim == 2 or (array.ndim == 3 and shape[2] in (1, 3, 4)))
        and shape[0] > 0
        and shape[1] > 0
    ):
        raise ImageError(
            f"image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {shape}"
        )
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        values = np.array(array, dtype=np.uint8, copy=True)
    elif kind == "b":
        values = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.uint16:
        values = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"integer image values must lie in 0..255; got values in {low}..{high}: "
                "use uint16 for 16-bit images, or rescale the array"
            )
        values = array.astype(np.uint8)
    elif kind == "f":
        values = _float_to_uint8(array.astype(np.float64), float_range)
    else:
        raise ImageError(
            f"image array must hold integers, booleans or floats; got dtype {array.dtype}"
        )
    if values.ndim == 2:
        return _gray_to_rgb(values)
    channels = values.shape[2]
    if channels == 1:
        return np.repeat(values, 3, axis=2)
    if channels == 4:
        return _composite_on_white(values[..., :3], values[..., 3])
    return np.ascontiguousarray(values)


# --------------------------------------------------------------------------- resizing


def validate_resize(*, size: int, policy: str, crop_fraction: float, interpolation: str) -> None:
    """Check resize options up front; a mistake is a TransferCacheError (not an ImageError, which
    means "skip this image"), so callers can validate once before any image is read."""
    one_of(policy, RESIZE_POLICIES, "resize policy")
    one_of(interpolation, INTERPOLATIONS, "interpolation")
    whole_number(size, "size")
    if (
        isinstance(crop_fraction, bool)
        or not isinstance(crop_fraction, (int, float, np.floating, np.integer))
        or not 0.0 < float(crop_fraction) <= 1.0
    ):
        raise TransferCacheError(f"crop_fraction must be a number in (0, 1]; got {crop_fraction!r}")
    if policy != "center-crop" and float(crop_fraction) != 1.0:
        raise TransferCacheError(
            f"crop_fraction only applies to resize policy 'center-crop'; got crop_fraction="
            f"{crop_fraction!r} with policy {policy!r}: drop crop_fraction or use 'center-crop'"
        )


def resize_image(
    image: np.ndarray,
    *,
    size: int,
    policy: str = "squash",
    crop_fraction: float = 1.0,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image to uint8 (size, size, 3) by one of three policies.

    - "squash": resize to size x size, ignoring the aspect ratio (Keras ``image_dataset_from_directory``);
    - "center-crop": crop a centred square whose side is ``int(crop_fraction * short_side)``, offset
      ``(H - side + 1) // 2`` as in TensorFlow's EfficientNet evaluation code (224/256 = 0.875 there),
      then resize it;
    - "pad": letterbox: scale the long side to ``size`` keeping the aspect ratio, pad with black, centred.

    ``interpolation`` is PIL's filter: "bilinear", "bicubic", "nearest" or "area" (PIL's BOX).
    PIL antialiases when shrinking with bilinear/bicubic, unlike ``tf.image.resize``. Bad options
    raise TransferCacheError (see :func:`validate_resize`); an image that is not uint8 (H, W, 3)
    raises ImageError.
    """
    validate_resize(size=size, policy=policy, crop_fraction=crop_fraction, interpolation=interpolation)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ImageError(
            f"resize_image expects a uint8 array of shape (H, W, 3); got {image.dtype} {image.shape}: "
            "convert it with to_rgb_array first"
        )
    fit = _Fit(size=int(size), policy=policy, crop_fraction=float(crop_fraction), resample=_RESAMPLE[interpolation])
    return _resize_policy(Image.fromarray(np.ascontiguousarray(image)), fit)


@dataclass(frozen=True)
class _Fit:
    """A resize policy with its (validated) options."""

    size: int
    policy: str
    crop_fraction: float
    resample: Any

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int, int, int], tuple[int, int], tuple[int, int]]:
        """The policy on a ``width`` x ``height`` image: (the region it uses, the size that region is resized to, where
        the result is pasted on the size x size output)."""
        size = self.size
        if self.policy == "squash":
            return (0, 0, width, height), (size, size), (0, 0)
        if self.policy == "center-crop":
            side = max(1, int(self.crop_fraction * min(height, width)))
            top = (height - side + 1) // 2
            left = (width - side + 1) // 2
            return (left, top, left + side, top + side), (size, size), (0, 0)
        scale = size / max(height, width)  # pad
        new_w = min(size, max(1, round(width * scale)))
        new_h = min(size, max(1, round(height * scale)))
        return (0, 0, width, height), (new_w, new_h), ((size - new_w) // 2, (size - new_h) // 2)

    def reduction(self, width: int, height: int, gap: float = _REDUCING_GAP) -> int:
        """The largest whole factor that keeps the policy's region at least ``gap`` times its output size (more for
        "area", never for "nearest"); 1 when the image is not at least twice that."""
        (left, top, right, bottom), (out_w, out_h), _ = self.geometry(width, height)
        gap = max(gap, _REDUCING_GAPS.get(self.resample, gap))
        factor = int(min((right - left) / out_w, (bottom - top) / out_h) / gap)
        return factor if factor >= 2 else 1


def _decode_reduced(data: bytes, fit: _Fit) -> tuple[Image.Image, int, tuple[int, int], tuple[int, int]]:
    """(the RGB image decoded at 1/factor of its size, factor, the oriented size of the full image, where the full
    image starts in the reduced one, in full-size pixels: not at 0 along an axis EXIF orientation reversed, since a
    DCT-scaled image's partial last block is then first)."""
    im = _open_checked(data)
    width, height = im.size
    wanted = fit.reduction(width, height)  # the same for both orientations: the stored one gives it
    scale = fit.reduction(width, height, _DRAFT_GAP) if im.format == "JPEG" else 1
    if scale > 1:
        scale = next(s for s in (*_JPEG_SCALES, 1) if s <= scale)
        drafted = im.draft(None, (width // scale, height // scale))  # DCT scaling: 1/scale of every side
        scale = round(width / drafted[1][2]) if drafted is not None else 1
    _load(im)  # before reading EXIF: a PNG reads it by decoding, whose failure must be the decoder's error
    orientation = _orientation(im)
    _oriented(im)
    turned = orientation in _REVERSED and _orientation(im) != orientation  # the orientation was applied
    original = (height, width) if turned and orientation >= 5 else (width, height)
    start = (0, 0)
    if turned and scale > 1:
        start = tuple(im.size[i] * scale - original[i] if _REVERSED[orientation][i] else 0 for i in (0, 1))
    rgb, factor = _rgb(im), scale
    more = wanted // scale
    if more >= 2:  # what DCT scaling did not do (or any other format): average more x more blocks
        rgb, factor = rgb.reduce(more), scale * more
    return rgb, factor, original, start


# EXIF orientation -> whether the upright image's x and y axes run against the stored image's (ImageOps.exif_transpose
# flips, rotates or transposes; 5-8 also swap the axes)
_REVERSED = {2: (True, False), 3: (True, True), 4: (False, True), 5: (False, False), 6: (True, False),
             7: (True, True), 8: (False, True)}


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the image is shown as stored
        return 1


def _rgb(im: Image.Image) -> Image.Image:
    """An RGB Pillow image by the colour rules of :func:`decode_image` (no copy for an RGB image)."""
    return im if im.mode == "RGB" else Image.fromarray(_pil_to_rgb_checked(im))


def _resize_policy(pil: Image.Image, fit: _Fit, factor: int = 1, original: tuple[int, int] | None = None,
                   start: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The policy of :func:`resize_image` on an RGB Pillow image that is the ``original``-sized image reduced by
    ``factor`` (the original starting at ``start``): the region is computed on the original and scaled by the factor,
    so the same part of the photo is used; the enclosing whole pixels are cropped first, so filtering never reaches
    past the region."""
    (left, top, right, bottom), out_size, offset = fit.geometry(*(original or pil.size))
    box = tuple((value + start[i % 2]) / factor for i, value in enumerate((left, top, right, bottom)))
    width, height = pil.size
    whole = (math.floor(box[0]), math.floor(box[1]), min(width, math.ceil(box[2])), min(height, math.ceil(box[3])))
    part = pil if whole == (0, 0, width, height) else pil.crop(whole)
    inside = (box[0] - whole[0], box[1] - whole[1], box[2] - whole[0], box[3] - whole[1])
    out = part.resize(out_size, fit.resample, box=None if inside == (0, 0, *part.size) else inside)
    if out_size != (fit.size, fit.size):
        canvas = Image.new("RGB", (fit.size, fit.size), (0, 0, 0))
        canvas.paste(out, offset)
        out = canvas
    return np.asarray(out, dtype=np.uint8).copy()
