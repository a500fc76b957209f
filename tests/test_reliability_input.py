"""Bad input corpus: every kind of broken, odd or hostile image file goes through one real extraction.

Each file must be converted (its row is in the cache), or skipped and recorded in /failed with the exact reason,
or refused with a clear TransferCacheError before any work starts; and nothing else is lost: every good image of
the corpus has its row.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from transfer_cache import TransferCacheError
from transfer_cache._imaging import decode_image
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract

TINY = dict(backbone="tiny", weights="none", progress=False, batch_size=4)
_LONG = "x" * 251 + ".png"  # 255 bytes: the longest name ext4 allows
_LONG_UTF8 = "é" * 125 + "a.png"  # 255 bytes of UTF-8, 130 characters


def _pixels(seed: int, size=(48, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb() -> bytes:
    """A tiny, valid PNG header declaring 100000 x 100000 RGB pixels, with a minimal IDAT."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return _encode(Image.fromarray(_pixels(30, (64, 32))), "JPEG", exif=exif.tobytes(), quality=95)


def _animated_gif() -> bytes:
    frames = [Image.fromarray(_pixels(40 + k)).convert("P") for k in range(3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _palette_with_transparency() -> bytes:
    image = Image.fromarray(_pixels(50)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encode(image, "PNG", transparency=0)


def _png16() -> bytes:
    values = np.random.default_rng(60).integers(0, 65536, (40, 48), dtype=np.uint16)
    return _encode(Image.fromarray(values), "PNG")  # mode I;16


GOOD_JPEG = _encode(Image.fromarray(_pixels(1)), "JPEG")
GOOD_PNG = _encode(Image.fromarray(_pixels(2)), "PNG")

# (relative path, bytes, expected): expected is "row" (converted) or the exact /failed reason
CORPUS = [
    ("bad/truncated.jpg", GOOD_JPEG[: len(GOOD_JPEG) // 2], "truncated image: image file is truncated"),  # + (N bytes)
    ("bad/truncated.png", GOOD_PNG[: len(GOOD_PNG) // 2], "truncated image: image file is truncated"),
    ("bad/zero.png", b"", "empty file (0 bytes)"),
    ("bad/text.png", b"just some notes, not pixels\n", "not an image (cannot identify image format)"),
    ("bad/page.jpg", b"<!DOCTYPE html><html><body><img src=x></body></html>",
     "not an image (cannot identify image format)"),
    ("bad/vector.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
     "not an image (cannot identify image format)"),
    ("bad/bomb.png", decompression_bomb(),
     "image too large: 100000x100000 pixels exceeds the 89478485-pixel limit (decompression bomb?)"),
    ("odd/one_pixel.png", _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), "row"),
    ("odd/sixteen_bit.png", _png16(), "row"),
    ("odd/cmyk.jpg", _encode(Image.fromarray(_pixels(70)).convert("CMYK"), "JPEG"), "row"),
    ("odd/palette_alpha.png", _palette_with_transparency(), "row"),
    ("odd/animated.gif", _animated_gif(), "row"),
    ("odd/rotated.jpg", _exif_rotated_jpeg(), "row"),
    (f"odd/{_LONG}", _encode(Image.fromarray(_pixels(80)), "PNG"), "row"),
    (f"odd/{_LONG_UTF8}", _encode(Image.fromarray(_pixels(81)), "PNG"), "row"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One folder holding the whole corpus plus good images, links and names, extracted once."""
    root = tmp_path_factory.mktemp("corpus") / "images"
    good = []
    for k, name in enumerate(("bad", "good", "odd")):
        for j in range(3):
            path = root / name / f"good_{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_encode(Image.fromarray(_pixels(100 + 10 * k + j)), "PNG"))
            good.append(path.relative_to(root).as_posix())
    for rel, data, _ in CORPUS:
        (root / rel).write_bytes(data)
    (root / "odd" / "drawing.svg").write_bytes(CORPUS[5][1])  # not an image extension: ignored, not failed
    # the EXIF-rotated JPEG as it should be seen, stored losslessly: its vector must equal the rotated one's
    Image.fromarray(decode_image(CORPUS[12][1])).save(root / "odd" / "rotated_upright.png")
    good.append("odd/rotated_upright.png")
    os.symlink("self.png", root / "bad" / "self.png")  # a link to itself: ELOOP
    os.symlink("..", root / "bad" / "parent")  # a folder link back up the tree
    os.symlink("missing.png", root / "bad" / "dangling.png")
    os.symlink(root / "good" / "good_0.png", root / "odd" / "linked.png")  # a working link is an image like any other
    bad_name = os.fsencode(str(root / "bad")) + b"/caf\xe9.png"
    with open(bad_name, "wb") as handle:
        handle.write(GOOD_PNG)
    (root / "empty_class").mkdir()
    cache_dir = tmp_path_factory.mktemp("caches")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = extract(str(root), cache_dir=cache_dir, **TINY)
    return root, result, good, caught


def _failed(result) -> dict[str, str]:
    with open_cache(result.path) as cache:
        return dict(cache.failed)


@pytest.mark.parametrize("rel, data, expected", CORPUS, ids=[c[0][:24] for c in CORPUS])
def test_each_corpus_file_is_converted_or_recorded_with_its_reason(corpus, rel, data, expected):
    _, result, _, _ = corpus
    with open_cache(result.path) as cache:
        failed = dict(cache.failed)
        if expected == "row":
            assert rel in cache.paths and rel not in failed
        else:
            assert rel not in cache.paths
            assert failed[rel] == expected or failed[rel].startswith(expected + " (")


def test_nothing_else_is_lost_and_odd_entries_are_recorded(corpus):
    root, result, good, caught = corpus
    with open_cache(result.path) as cache:
        rows = set(cache.paths)
        failed = dict(cache.failed)
        assert set(good) <= rows
        assert "odd/linked.png" in rows
        assert rows == set(good) | {"odd/linked.png"} | {rel for rel, _, expected in CORPUS if expected == "row"}
        assert failed["bad/self.png"] == "broken symbolic link: Too many levels of symbolic links"
        assert failed["bad/parent"] == "symbolic link loop (points back to a parent folder)"
        assert failed["bad/dangling.png"] == "broken symbolic link"
        assert failed["bad/caf\\xe9.png"] == "file name is not valid UTF-8: rename it"
        assert "odd/drawing.svg" not in rows and "odd/drawing.svg" not in failed
        assert len(failed) == sum(1 for *_, e in CORPUS if e != "row") + 4
        # the empty class keeps its label index, with a warning naming it
        assert cache.class_names == ["bad", "empty_class", "good", "odd"]
        assert [str(w.message) for w in caught if "has no images" in str(w.message)] == [
            f"class folder 'empty_class' in '{root}' has no images; "
            "the class is kept so that label indices stay the same"
        ]
        assert result.failed and len(result.failed) == len(failed)


def test_odd_images_are_converted_faithfully(corpus):
    _, result, _, _ = corpus
    with open_cache(result.path) as cache:
        vectors = dict(zip(cache.paths, cache.features[:]))
    # EXIF orientation applied: the rotated JPEG gives exactly the vector of its upright pixels
    np.testing.assert_allclose(vectors["odd/rotated.jpg"], vectors["odd/rotated_upright.png"], rtol=1e-6, atol=1e-6)
    assert decode_image(CORPUS[12][1]).shape == (64, 32, 3)
    # a symlinked image is the same content as its target
    np.testing.assert_array_equal(vectors["odd/linked.png"], vectors["good/good_0.png"])
    # 16-bit: the full range maps onto 0..255; animated GIF: the first frame; alpha on white
    sixteen = decode_image(CORPUS[8][1])
    source = np.asarray(Image.open(io.BytesIO(CORPUS[8][1]))).astype(np.int64)
    np.testing.assert_array_equal(sixteen[..., 0], ((source + 128) // 257).astype(np.uint8))
    first = np.asarray(Image.open(io.BytesIO(CORPUS[11][1])).convert("RGB"))
    np.testing.assert_array_equal(decode_image(CORPUS[11][1]), first)
    palette = Image.open(io.BytesIO(CORPUS[10][1]))
    transparent = np.asarray(palette) == 0
    assert transparent.any() and (decode_image(CORPUS[10][1])[transparent] == 255).all()
    assert decode_image(CORPUS[7][1]).tolist() == [[[200, 10, 10]]]


def test_a_rerun_over_the_corpus_is_a_hit_and_retries_nothing(corpus, tmp_path):
    root, result, _, _ = corpus
    with pytest.warns(UserWarning, match="class folder 'empty_class'"):
        again = extract(str(root), cache_dir=result.path.parent, **TINY)
    assert again.hit and again.computed == 0 and again.path == result.path


# --------------------------------------------------------------------------- refused before any work


def test_a_folder_without_images_is_refused_before_work(tmp_path):
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    (tmp_path / "photos" / "cats" / "readme.txt").write_text("no pictures here")
    with pytest.raises(
        TransferCacheError, match=re.escape(f"folder '{tmp_path / 'photos'}' contains no images: expected")
    ):
        extract(str(tmp_path / "photos"), cache_dir=tmp_path / "caches", **TINY)
    assert not (tmp_path / "caches").exists()


def test_a_folder_whose_only_images_are_broken_is_an_error_not_an_empty_cache(tmp_path):
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    (tmp_path / "photos" / "cats" / "a.png").write_bytes(b"")
    with pytest.raises(
        TransferCacheError, match=re.escape("could be read (1 failed: cats/a.png: empty file (0 bytes))")
    ):
        extract(str(tmp_path / "photos"), cache_dir=tmp_path / "caches", **TINY)
    assert not list((tmp_path / "caches").glob("*.h5"))


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "file,class\na.png,cat\n",
            "must have a header row with columns path,label[,split]; got columns: file, class (missing path, label)",
        ),
        ("path\na.png\n", "must have a header row with columns path,label[,split]; got columns: path (missing label)"),
        ("path,label\n../outside.png,cat\n", "line 2: path '../outside.png' leads outside the manifest's folder"),
        ("path,label\n/etc/hostname,cat\n", "line 2: path '/etc/hostname' leads outside the manifest's folder"),
        ("path,label\nimages/a.png\n", "line 2: expected 2 columns (path, label); got 1: 'images/a.png'"),
    ],
)
def test_bad_manifests_are_refused_before_work(tmp_path, text, message):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "a.png").write_bytes(GOOD_PNG)
    (tmp_path / "outside.png").write_bytes(GOOD_PNG)
    (tmp_path / "data" / "m.csv").write_text(text)
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        extract(str(tmp_path / "data" / "m.csv"), cache_dir=tmp_path / "caches", **TINY)
    assert not (tmp_path / "caches").exists()


def test_manifest_outside_root_is_allowed_only_when_asked(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "outside.png").write_bytes(GOOD_PNG)
    (tmp_path / "data" / "in.png").write_bytes(GOOD_JPEG)
    (tmp_path / "data" / "m.csv").write_text("path,label\n../outside.png,cat\nin.png,dog\nmissing.png,dog\n")
    result = extract(str(tmp_path / "data" / "m.csv"), cache_dir=tmp_path / "caches", allow_outside_root=True, **TINY)
    with open_cache(result.path) as cache:
        assert cache.paths == ["../outside.png", "in.png"]
        assert cache.failed == [("missing.png", "file not found")]


# --------------------------------------------------------------------------- permissions (root drops its capabilities)


_UNPRIVILEGED_EXTRACT = textwrap.dedent(
    """
    import json, sys
    from transfer_cache.cache import open_cache
    from transfer_cache.extract import extract
    result = extract(sys.argv[1], cache_dir=sys.argv[2], backbone="tiny", weights="none", progress=False)
    with open_cache(result.path) as cache:
        print(json.dumps({"paths": cache.paths, "failed": cache.failed}))
    """
)


def test_unreadable_file_and_folder_are_recorded_by_a_process_that_obeys_permissions(tmp_path):
    root = tmp_path / "photos"
    for rel in ("cats/ok.png", "cats/locked.png", "cats/private/hidden.png", "dogs/ok.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_encode(Image.fromarray(_pixels(hash(rel) % 1000)), "PNG"))
    command = [sys.executable, "-c", _UNPRIVILEGED_EXTRACT, str(root), str(tmp_path / "caches")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be enforced")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", *command]
    (root / "cats" / "locked.png").chmod(0)
    (root / "cats" / "private").chmod(0)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    finally:
        (root / "cats" / "private").chmod(0o755)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "paths": ["cats/ok.png", "dogs/ok.png"],
        "failed": [["cats/private", "cannot list folder: permission denied"],
                   ["cats/locked.png", "cannot read file: permission denied"]],
    }
