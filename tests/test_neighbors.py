"""neighbors: a table with a header, and every query it cannot use refused in one line that names it (exit 2)."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from transfer_cache import neighbors as neighbors_module
from transfer_cache._errors import TransferCacheError
from transfer_cache.neighbors import neighbors

from conftest import write_synthetic_cache

PROG = "python -m transfer_cache.neighbors: error: "


@pytest.fixture
def cache(tmp_path):
    """Six rows of two classes; row i's nearest other row is i^1 (pairs of almost equal vectors)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    features = np.repeat(centres, 2, axis=0) + rng.normal(scale=0.01, size=(6, 8))
    return write_synthetic_cache(tmp_path / "six.h5", features=features.astype(np.float32), labels=[0, 0, 1, 1, 0, 1],
                                 paths=[f"img_{i}.png" for i in range(6)], runtime="tensorflow")


def _run(argv, capsys) -> tuple[int, list[str], list[str]]:
    code = neighbors_module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), [line for line in captured.err.splitlines() if line.strip()]


def test_the_table_has_a_header_and_the_query_row_first(cache, capsys):
    code, out, err = _run([cache, "2", "-k", "3"], capsys)
    assert code == 0 and err == []
    assert out[0].split() == ["rank", "cosine", "row", "path", "label"]
    assert out[1].split()[:4] == ["1", "1.0000", "2", "img_2.png"] and out[2].split()[2:4] == ["3", "img_3.png"]
    assert out[-1].startswith("neighbors: 3 nearest to 2 in ")
    # the header's columns line up with the rows'
    assert out[0].index("path") == out[1].index("img_2.png") and out[0].index("label") == out[1].index("b")


@pytest.mark.parametrize("query", ["²", "٣", "-1", "½"])
def test_numbers_that_are_not_ascii_row_numbers_are_refused(cache, capsys, query):
    """str.isdigit accepts '²' and '٣': int('²') raised ValueError, and '٣' was taken as row 3."""
    code, out, err = _run([cache, query], capsys)
    assert code == 2 and out == []
    assert err == [f"{PROG}{query!r} is not a row number: the rows of {cache} are 0..5, written in the digits 0-9"]
    with pytest.raises(TransferCacheError, match=re.escape(f"{query!r} is not a row number")):
        neighbors(cache, query)


def test_a_row_past_the_end_says_how_many_rows_there_are(cache, capsys):
    code, _, err = _run([cache, "6"], capsys)
    assert code == 2
    assert err == [f"{PROG}row 6 is not in {cache}: it has rows 0..5; "
                   f"give a row number, a path as cached, or an image file"]


def test_a_missing_image_file_is_said_not_to_exist(cache, tmp_path, capsys):
    missing = tmp_path / "holiday" / "rose.jpg"
    code, _, err = _run([cache, missing], capsys)
    assert code == 2
    assert err == [f"{PROG}{missing} does not exist: no such image file, and no row of {cache} has that path; give a "
                   "row number, a path as cached, or an image file"]


def test_a_folder_is_not_an_image(cache, tmp_path, capsys):
    code, _, err = _run([cache, tmp_path], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"{PROG}{tmp_path} is a folder, not an image file")


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("damage, reason", [("truncated", "truncated image"), ("empty", "empty file (0 bytes)")])
def test_an_unreadable_query_image_is_named(cache, tmp_path, capsys, damage, reason):
    """The decoder's reason alone ("truncated image: ...") did not say which file."""
    data = _jpeg_bytes()
    image = tmp_path / f"{damage}.jpg"
    image.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    code, _, err = _run([cache, image], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"{PROG}cannot read the image {image}: {reason}"), err


def test_the_command_itself_prints_one_line_and_exits_2(cache):
    """The real process: one line on stderr (no traceback), nothing on stdout."""
    done = subprocess.run([sys.executable, "-m", "transfer_cache.neighbors", str(cache), "²"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"{PROG}'²' is not a row number: the rows of {cache} are 0..5, written in the "
                                        "digits 0-9"]


def test_an_image_file_is_computed_through_the_caches_feature_config(tmp_path):
    """image_vector takes the cache's FeatureConfig (its runtime, resize, layers and dtype): an extracted image comes
    back as its own cached vector, and as its own nearest neighbour."""
    from transfer_cache.cache import open_cache
    from transfer_cache.extract import extract
    from transfer_cache.feature_config import FeatureConfig
    from transfer_cache.neighbors import image_vector

    from conftest import make_class_folder

    root = make_class_folder(tmp_path / "images", per_class=2)
    made = extract(str(root), cache_dir=tmp_path / "c", backbone="tiny", weights="none", layer="conv3,conv1",
                   dtype="float16", runtime="tensorflow", progress=False)
    image = sorted(root.rglob("*.png"))[3]
    with open_cache(made.path) as cache:
        config = FeatureConfig.from_attrs(cache.config)
        row = next(i for i, path in enumerate(cache.paths) if path.endswith(image.name))
        cached = cache.read_rows(np.array([row]), layer="conv1").reshape(-1)
    vector = image_vector(config, image, layer="conv1")
    assert vector.shape == cached.shape == (8,)
    np.testing.assert_allclose(vector, cached, rtol=1e-3, atol=1e-3)
    nearest = neighbors(made.path, str(image), k=1, layer="conv1")
    assert nearest[0]["row"] == row and nearest[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
