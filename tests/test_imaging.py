"""Decoding real encoded files of every format and mode, array conversion and the resize policies."""

import io
import re
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from transfer_cache._errors import ImageError, TransferCacheError
from transfer_cache._imaging import (
    INTERPOLATIONS,
    MAX_PIXELS,
    RESIZE_POLICIES,
    decode_image,
    decode_resized,
    resize_image,
    to_rgb_array,
    validate_resize,
)


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def rgb_pattern(width=12, height=8) -> np.ndarray:
    """Four flat colour quadrants: survives GIF quantisation exactly and JPEG approximately."""
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, : width // 2] = (255, 0, 0)
    a[: height // 2, width // 2 :] = (0, 255, 0)
    a[height // 2 :, : width // 2] = (0, 0, 255)
    a[height // 2 :, width // 2 :] = (255, 255, 0)
    return a


def png_with_size(width: int, height: int) -> bytes:
    """A valid PNG header for a huge grayscale image with almost no pixel data (a decompression bomb)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- formats and modes


@pytest.mark.parametrize(
    "fmt, kwargs, exact",
    [
        ("PNG", {}, True),
        ("BMP", {}, True),
        ("TIFF", {}, True),
        ("GIF", {}, True),
        ("WEBP", {"lossless": True}, True),
        ("JPEG", {"quality": 95, "subsampling": 0}, False),
    ],
)
def test_decode_formats(fmt, kwargs, exact):
    expected = rgb_pattern(48, 32)
    out = decode_image(encode(Image.fromarray(expected), fmt, **kwargs))
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    if exact:
        np.testing.assert_array_equal(out, expected)
    else:  # lossy: every pixel close, each quadrant's colour right
        assert np.abs(out.astype(int) - expected).max() < 40
        assert np.abs(out.astype(int) - expected).mean() < 4


def test_grayscale_and_bilevel_become_rgb():
    gray = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    out = decode_image(encode(Image.fromarray(gray), "PNG"))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=2))
    bilevel = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    out = decode_image(encode(bilevel, "PNG"))
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [255, 0]])


def test_rgba_composited_on_white():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (200, 100, 0, 255)  # opaque: unchanged
    rgba[0, 1] = (200, 100, 0, 0)  # transparent: white
    rgba[0, 2] = (0, 0, 0, 128)  # half: mid grey
    rgba[1] = (10, 20, 30, 64)
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0].tolist() == [200, 100, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[0, 2].tolist() == [127, 127, 127]  # 255 * (255 - 128) / 255 = 127
    expected = np.rint((np.array([10, 20, 30]) * 64 + 255 * (255 - 64)) / 255)
    assert out[1, 0].tolist() == expected.astype(int).tolist()


def test_la_composited_on_white():
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (40, 255))
    la.putpixel((1, 0), (40, 0))
    out = decode_image(encode(la, "PNG"))
    assert out[0].tolist() == [[40, 40, 40], [255, 255, 255]]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(fmt):
    im = Image.new("P", (3, 1), 0)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putpixel((1, 0), 1)
    im.putpixel((2, 0), 2)
    data = encode(im, fmt, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = decode_image(data)
    assert out[0].tolist() == [[255, 255, 255], [255, 0, 0], [0, 0, 255]]


def test_palette_without_transparency():
    im = Image.new("P", (2, 1), 0)
    im.putpalette([10, 20, 30, 40, 50, 60] + [0] * (256 * 3 - 6))
    im.putpixel((1, 0), 1)
    assert decode_image(encode(im, "PNG"))[0].tolist() == [[10, 20, 30], [40, 50, 60]]


@pytest.mark.parametrize(
    "fmt, dtype, mode", [("PNG", "<u2", "I;16"), ("TIFF", "<u2", "I;16"), ("TIFF", ">u2", "I;16B")]
)
def test_sixteen_bit_scaled_by_type_range(fmt, dtype, mode):
    values = np.array([[0, 257 * 100, 65535, 128]], dtype)
    data = encode(Image.fromarray(values), fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    out = decode_image(data)
    assert out[0, :, 0].tolist() == [0, 100, 255, 0]
    assert (out[..., 0] == out[..., 2]).all()


def test_32bit_integer_clipped_to_16bit_range():
    values = np.array([[-5, 257 * 7, 70000]], np.int32)
    data = encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert decode_image(data)[0, :, 0].tolist() == [0, 7, 255]


@pytest.mark.parametrize(
    "values, expected",
    [
        ([[0.0, 0.5, 1.0]], [0, 128, 255]),  # all in [0, 1]: read as [0, 1]
        ([[0.0, 100.0, 300.0]], [0, 100, 255]),  # otherwise [0, 255], clipped
        ([[np.nan, 1.0, 0.25]], [0, 255, 64]),  # NaN -> 0
    ],
)
def test_float_images(values, expected):
    data = encode(Image.fromarray(np.array(values, np.float32)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert decode_image(data)[0, :, 0].tolist() == expected


def test_cmyk_jpeg():
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_image(data)
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - [255, 0, 0]).max() <= 3


def test_exif_orientation_applied():
    # Stored 32 wide x 16 tall: left half red, right half blue. Orientation 6 means "rotate 90
    # degrees clockwise to display", so the displayed image is 16 wide x 32 tall, red on top.
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = (255, 0, 0)
    stored[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (32, 16)
    out = decode_image(data).astype(int)
    assert out.shape == (32, 16, 3)
    assert np.abs(out[2:14].mean(axis=(0, 1)) - [255, 0, 0]).max() < 10
    assert np.abs(out[18:30].mean(axis=(0, 1)) - [0, 0, 255]).max() < 10


@pytest.mark.parametrize("fmt, kwargs", [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_animated_first_frame(fmt, kwargs):
    frames = [Image.new("RGB", (6, 4), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decode_image(data)
    assert out.shape == (4, 6, 3)
    assert (out == [255, 0, 0]).all()


# --------------------------------------------------------------------------- undecodable input


def _truncated(fmt):
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file (0 bytes)"),
        (b"this is a text file, saved as cat.jpg\n", "not an image (cannot identify image format)"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "not an image (cannot identify image format)"),
        (_truncated("PNG"), "truncated image: image file is truncated"),
        (
            png_with_size(20000, 20000),
            "image too large: 20000x20000 pixels exceeds the 89478485-pixel limit (decompression bomb?)",
        ),
        (
            png_with_size(10000, 9000),  # between 1x and 2x PIL's limit: PIL would only warn
            "image too large: 10000x9000 pixels exceeds the 89478485-pixel limit (decompression bomb?)",
        ),
    ],
    ids=["empty", "text", "bad-png-header", "truncated-png", "bomb-2x", "bomb-1x"],
)
def test_undecodable_reasons(data, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never a warning, always the error
        with pytest.raises(ImageError) as info:
            decode_image(data, name="cats/broken.jpg")
    # pytest's match= also sees the notes; the message itself is exactly the short reason
    assert str(info.value) == reason
    assert info.value.__notes__ == ["while decoding cats/broken.jpg"]


def _photo_bytes(fmt: str, mode: str, exif_orientation: int | None = None) -> bytes:
    """scikit-learn's china.jpg, cut to 150x100, in the given colour mode and format."""
    from sklearn.datasets import load_sample_images

    im = Image.fromarray(load_sample_images().images[0][100:200, 200:350]).convert(mode)
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    return encode(im, fmt, **kwargs)


@pytest.mark.parametrize("policy, crop_fraction", [("squash", 1.0), ("center-crop", 0.875), ("pad", 1.0)])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize(
    "fmt, mode, orientation",
    [("JPEG", "RGB", None), ("JPEG", "RGB", 6), ("PNG", "RGBA", None), ("PNG", "L", None), ("JPEG", "CMYK", None),
     ("PNG", "P", None)],
)
def test_decode_resized_equals_decode_then_resize(fmt, mode, orientation, policy, crop_fraction, interpolation):
    """The fast path for extraction (no numpy round trip for RGB) gives exactly the pixels of the two steps."""
    data = _photo_bytes(fmt, mode, orientation)
    options = dict(size=37, policy=policy, crop_fraction=crop_fraction, interpolation=interpolation)
    expected = resize_image(decode_image(data), **options)
    got = decode_resized(data, **options)
    assert got.dtype == np.uint8 and got.shape == (37, 37, 3) and got.flags.writeable
    np.testing.assert_array_equal(got, expected)


def test_decode_resized_reports_like_decode_image():
    with pytest.raises(ImageError) as info:
        decode_resized(b"", size=8, policy="squash", crop_fraction=1.0, interpolation="bilinear", name="a/b.jpg")
    assert str(info.value) == "empty file (0 bytes)" and info.value.__notes__ == ["while decoding a/b.jpg"]
    with pytest.raises(TransferCacheError, match=re.escape("resize policy must be one of")):
        decode_resized(
            _photo_bytes("PNG", "RGB"), size=8, policy="stretch", crop_fraction=1.0, interpolation="bilinear"
        )


def test_truncated_jpeg():
    with pytest.raises(ImageError, match=re.escape("truncated image: image file is truncated")):
        decode_image(_truncated("JPEG"))


def test_pixel_limit_is_pil_default():
    assert MAX_PIXELS == 89_478_485
    side = int(MAX_PIXELS**0.5)  # just under the limit: accepted (header only, no decode needed)
    with pytest.raises(ImageError, match="^truncated image: |^corrupt image: "):
        decode_image(png_with_size(side, side))


def test_decode_is_thread_safe():
    images = [rgb_pattern(8 + k, 6 + k) for k in range(8)]
    blobs = [encode(Image.fromarray(a), "PNG") for a in images] * 4
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(decode_image, blobs))
    for k, out in enumerate(outs):
        np.testing.assert_array_equal(out, images[k % 8])


# --------------------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[0, 128]], np.uint8), [[0, 0, 0], [128, 128, 128]]),
        (np.array([[[7], [9]]], np.uint8), [[7, 7, 7], [9, 9, 9]]),
        (np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8), [[1, 2, 3], [4, 5, 6]]),
        (np.array([[[1, 2, 3, 255], [1, 2, 3, 0]]], np.uint8), [[1, 2, 3], [255, 255, 255]]),
        (np.array([[0, 65535, 257 * 3]], np.uint16), [[0, 0, 0], [255, 255, 255], [3, 3, 3]]),
        (np.array([[0.0, 1.0, 0.5]], np.float32), [[0, 0, 0], [255, 255, 255], [128, 128, 128]]),
        (np.array([[0.0, 255.0, 2.0]], np.float64), [[0, 0, 0], [255, 255, 255], [2, 2, 2]]),
        (np.array([[0, 16, 255]], np.int64), [[0, 0, 0], [16, 16, 16], [255, 255, 255]]),
        (np.array([[True, False]]), [[255, 255, 255], [0, 0, 0]]),
    ],
    ids=["HW", "HW1", "HW3", "HW4", "uint16", "float01", "float255", "int64", "bool"],
)
def test_to_rgb_array(array, expected):
    out = to_rgb_array(array)
    assert out.dtype == np.uint8 and out.shape == array.shape[:2] + (3,)
    assert out[0].tolist() == expected
    assert not np.shares_memory(out, array)


def test_to_rgb_array_float_range_forced():
    dark = np.array([[0.0, 1.0]], np.float32)
    assert to_rgb_array(dark, float_range="0-255")[0, :, 0].tolist() == [0, 1]
    assert to_rgb_array(dark, float_range="0-1")[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize(
    "array, kwargs, message",
    [
        (
            np.zeros((4, 4, 2), np.uint8),
            {},
            "image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got (4, 4, 2)",
        ),
        (
            np.zeros((2, 4, 4, 3), np.uint8),
            {},
            "image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got (2, 4, 4, 3)",
        ),
        (
            np.zeros((0, 4), np.uint8),
            {},
            "image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got (0, 4)",
        ),
        (
            np.array([[-1, 300]], np.int32),
            {},
            "integer image values must lie in 0..255; got values in -1..300: use uint16 for 16-bit "
            "images, or rescale the array",
        ),
        (
            np.array([[-0.5, 3.0]], np.float32),
            {},
            "float image values must lie in [0, 255] (or all of them in [0, 1]); got values in "
            "[-0.5, 3]: rescale the array, or convert it to uint8 yourself",
        ),
        (
            np.array([[0.5, 3.0]], np.float32),
            {"float_range": "0-1"},
            "float image values must lie in [0, 1] (float_range='0-1'); got values in [0.5, 3]: "
            "rescale the array, or convert it to uint8 yourself",
        ),
        (np.array([[np.nan, 0.5]]), {}, "float image contains NaN or infinite values"),
        (np.array([["a"]]), {}, "image array must hold integers, booleans or floats; got dtype <U1"),
    ],
)
def test_to_rgb_array_errors(array, kwargs, message):
    with pytest.raises(ImageError, match=f"^{re.escape(message)}$"):
        to_rgb_array(array, **kwargs)


def test_to_rgb_array_bad_float_range_is_a_usage_error():
    with pytest.raises(
        TransferCacheError, match=re.escape("float_range must be one of 'auto', '0-1', '0-255'; got '0..1'")
    ) as info:
        to_rgb_array(np.zeros((2, 2)), float_range="0..1")
    assert not isinstance(info.value, ImageError)


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize("policy", RESIZE_POLICIES)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (7, 7), (1, 40)])
def test_resize_shapes(policy, interpolation, shape):
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), np.uint8)
    out = resize_image(image, size=16, policy=policy, interpolation=interpolation)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_squash_ignores_aspect():
    image = np.zeros((10, 40, 3), np.uint8)
    image[:, 20:] = 255  # right half white
    out = resize_image(image, size=8, policy="squash", interpolation="nearest")
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()


def test_center_crop():
    # 60 tall x 100 wide: a centred 60x60 green square between red margins, with a centred
    # 30x30 blue square inside it.
    image = np.zeros((60, 100, 3), np.uint8)
    image[:] = (255, 0, 0)
    image[:, 20:80] = (0, 255, 0)
    image[15:45, 35:65] = (0, 0, 255)
    full = resize_image(image, size=60, policy="center-crop", interpolation="nearest")
    np.testing.assert_array_equal(full, image[:, 20:80])
    inner = resize_image(image, size=10, policy="center-crop", crop_fraction=0.5, interpolation="nearest")
    assert (inner == [0, 0, 255]).all()


def test_center_crop_follows_tensorflow_offset():
    # side = int(0.875 * 9) = 7, offset (9 - 7 + 1) // 2 = 1 on both axes
    image = np.arange(81, dtype=np.uint8).reshape(9, 9, 1).repeat(3, axis=2)
    out = resize_image(image, size=7, policy="center-crop", crop_fraction=0.875, interpolation="nearest")
    np.testing.assert_array_equal(out, image[1:8, 1:8])


def test_pad_letterboxes_with_black():
    image = np.full((50, 100, 3), 255, np.uint8)
    out = resize_image(image, size=20, policy="pad", interpolation="nearest")
    assert (out[:5] == 0).all() and (out[15:] == 0).all()
    assert (out[5:15] == 255).all()
    tall = resize_image(np.full((100, 50, 3), 255, np.uint8), size=20, policy="pad")
    assert (tall[:, :5] == 0).all() and (tall[:, 5:15] == 255).all() and (tall[:, 15:] == 0).all()


def test_area_interpolation_averages():
    checker = (np.indices((4, 4)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = resize_image(np.stack([checker] * 3, axis=2), size=2, interpolation="area")
    assert set(np.unique(out).tolist()) <= {127, 128}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 8, "policy": "crop"}, "resize policy must be one of 'squash', 'center-crop', 'pad'; got 'crop'"),
        (
            {"size": 8, "interpolation": "lanczos"},
            "interpolation must be one of 'bilinear', 'bicubic', 'nearest', 'area'; got 'lanczos'",
        ),
        ({"size": 0}, "size must be a whole number of at least 1; got 0"),
        ({"size": 8.0}, "size must be a whole number of at least 1; got 8.0"),
        ({"size": True}, "size must be a whole number of at least 1; got True"),
        (
            {"size": 8, "policy": "center-crop", "crop_fraction": 1.5},
            "crop_fraction must be a number in (0, 1]; got 1.5",
        ),
        (
            {"size": 8, "policy": "center-crop", "crop_fraction": 0},
            "crop_fraction must be a number in (0, 1]; got 0",
        ),
        (
            {"size": 8, "crop_fraction": 0.875},
            "crop_fraction only applies to resize policy 'center-crop'; got crop_fraction=0.875 with "
            "policy 'squash': drop crop_fraction or use 'center-crop'",
        ),
    ],
)
def test_resize_validation(kwargs, message):
    # a usage error, not an ImageError: the pipeline must not skip every image over it
    with pytest.raises(TransferCacheError, match=f"^{re.escape(message)}$") as info:
        resize_image(np.zeros((4, 4, 3), np.uint8), **kwargs)
    assert not isinstance(info.value, ImageError)
    options = {"policy": "squash", "crop_fraction": 1.0, "interpolation": "bilinear", **kwargs}
    with pytest.raises(TransferCacheError, match=f"^{re.escape(message)}$"):
        validate_resize(**options)


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_resize_requires_rgb_uint8(image):
    message = (
        f"resize_image expects a uint8 array of shape (H, W, 3); got {image.dtype} {image.shape}: "
        "convert it with to_rgb_array first"
    )
    with pytest.raises(ImageError, match=f"^{re.escape(message)}$"):
        resize_image(image, size=4)
