"""Image sources on real files: folders, CSV manifests, npz/npy, CIFAR batches, sklearn digits, keras offline."""

import hashlib
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from transfer_cache._errors import ImageError, TransferCacheError
from transfer_cache.sources import (
    CIFAR10_CLASSES,
    SOURCE_HELP,
    ArraySource,
    CifarSource,
    CsvSource,
    FolderSource,
    Record,
    open_source,
)


def write_image(path: pathlib.Path, color=(255, 0, 0), size=(6, 4), fmt=None) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt)
    return path


def raises(message: str):
    return pytest.raises(TransferCacheError, match=f"^{re.escape(message)}$")


# --------------------------------------------------------------------------- folders


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "pets"
    write_image(root / "cats" / "b.png", (255, 0, 0))
    write_image(root / "cats" / "a.JPG", (250, 0, 0), fmt="JPEG")
    write_image(root / "cats" / "more" / "c.webp", (255, 0, 0), fmt="WEBP")
    write_image(root / "dogs" / "d.bmp", (0, 0, 255))
    write_image(root / "dogs" / "e.tiff", (0, 0, 255))
    write_image(root / "dogs" / ".hidden.png")
    write_image(root / ".thumbs" / "x.png")
    write_image(root / "__MACOSX" / "dogs" / "y.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "README").write_text("about the pets")
    return root


def test_folder_layout(class_folder):
    source = open_source(str(class_folder))
    assert isinstance(source, FolderSource)
    assert source.kind == "folder"
    assert source.description == f"folder:{class_folder.resolve()}"
    assert source.name == "pets"
    assert source.root == class_folder.resolve()
    assert source.class_names == ["cats", "dogs"]
    assert source.records == [
        Record("cats/a.JPG", 0, ""),
        Record("cats/b.png", 0, ""),
        Record("cats/more/c.webp", 0, ""),
        Record("dogs/d.bmp", 1, ""),
        Record("dogs/e.tiff", 1, ""),
    ]
    assert source.failed == []
    assert len(source) == 5
    for i, record in enumerate(source.records):
        data = (class_folder / record.path).read_bytes()
        assert source.read_bytes(i) == data
        assert source.digest(i) == hashlib.sha256(data).hexdigest()
        image = source.load(i)
        assert image.shape == (4, 6, 3) and image.dtype == np.uint8
        expected = [255, 0, 0] if record.label == 0 else [0, 0, 255]
        assert np.abs(image.astype(int) - expected).max() <= 8


def test_folder_with_splits(tmp_path):
    root = tmp_path / "flowers"
    write_image(root / "train" / "daisy" / "1.png")
    write_image(root / "train" / "rose" / "2.png")
    write_image(root / "Validation" / "rose" / "3.png")
    write_image(root / "test" / "tulip" / "4.jpg", fmt="JPEG")
    source = open_source(root)
    assert source.class_names == ["daisy", "rose", "tulip"]  # union over splits
    assert source.records == [
        Record("Validation/rose/3.png", 1, "val"),
        Record("test/tulip/4.jpg", 2, "test"),
        Record("train/daisy/1.png", 0, "train"),
        Record("train/rose/2.png", 1, "train"),
    ]


def test_folder_mixing_splits_and_classes(tmp_path):
    write_image(tmp_path / "train" / "cats" / "1.png")
    write_image(tmp_path / "dogs" / "2.png")
    with raises(
        f"folder '{tmp_path.resolve()}' mixes split folders (train) with other folders (dogs): use "
        "either root/<class>/<image> or root/<split>/<class>/<image> with splits train, val (or "
        "valid, validation) and test, and move the other folders out"
    ):
        open_source(tmp_path)


def test_folder_two_folders_for_one_split(tmp_path):
    write_image(tmp_path / "val" / "cats" / "1.png")
    write_image(tmp_path / "valid" / "cats" / "2.png")
    with raises(
        f"folder '{tmp_path.resolve()}' has two folders for the 'val' split: 'val' and 'valid': "
        "merge them into one"
    ):
        open_source(tmp_path)


@pytest.mark.parametrize("content", ["nothing", "only-text", "empty-classes"])
def test_folder_without_images(tmp_path, content):
    if content == "only-text":
        (tmp_path / "cats").mkdir()
        (tmp_path / "cats" / "readme.txt").write_text("x")
    elif content == "empty-classes":
        (tmp_path / "cats").mkdir()
        (tmp_path / "dogs").mkdir()
    with raises(
        f"folder '{tmp_path.resolve()}' contains no images: expected root/<class>/<image> or "
        "root/<split>/<class>/<image> with extensions .jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp"
    ):
        open_source(tmp_path)


def test_folder_only_loose_images(tmp_path):
    write_image(tmp_path / "a.png")
    with raises(
        f"folder '{tmp_path.resolve()}' contains no images (1 entries could not be used, e.g. a.png: "
        "image outside a class folder (expected root/<class>/<image>)): expected root/<class>/<image> "
        "or root/<split>/<class>/<image> with extensions .jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp"
    ):
        open_source(tmp_path)


def test_empty_class_kept_with_warning(tmp_path):
    write_image(tmp_path / "cats" / "1.png")
    (tmp_path / "dogs").mkdir()
    write_image(tmp_path / "zebras" / "2.png")
    message = (
        f"class folder 'dogs' in '{tmp_path.resolve()}' has no images; the class is kept so that "
        "label indices stay the same"
    )
    with pytest.warns(UserWarning, match=f"^{re.escape(message)}$"):
        source = open_source(tmp_path)
    assert source.class_names == ["cats", "dogs", "zebras"]
    assert [r.label for r in source.records] == [0, 2]
    assert source.failed == []


def test_loose_images_recorded(tmp_path):
    write_image(tmp_path / "train" / "cats" / "1.png")
    write_image(tmp_path / "train" / "stray.png")
    write_image(tmp_path / "top.jpg", fmt="JPEG")
    source = open_source(tmp_path)
    assert [r.path for r in source.records] == ["train/cats/1.png"]
    assert sorted(source.failed) == [
        ("top.jpg", "image outside a class folder (expected root/<split>/<class>/<image>)"),
        ("train/stray.png", "image outside a class folder (expected root/<split>/<class>/<image>)"),
    ]


def test_symlink_loop_and_broken_link(tmp_path):
    write_image(tmp_path / "cats" / "1.png")
    os.symlink("..", tmp_path / "cats" / "up")  # cats/up -> root: a loop through the root
    os.symlink(".", tmp_path / "cats" / "self")
    os.symlink("missing.png", tmp_path / "cats" / "gone.png")
    os.symlink("me.png", tmp_path / "cats" / "me.png")  # points at itself
    write_image(tmp_path / "elsewhere" / "x.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "cats" / "linked")  # a real folder, followed
    source = open_source(tmp_path)
    assert [r.path for r in source.records] == [
        "cats/1.png",
        "cats/linked/x.png",
        "elsewhere/x.png",
    ]
    assert sorted(source.failed) == [
        ("cats/gone.png", "broken symbolic link"),
        ("cats/me.png", "broken symbolic link: Too many levels of symbolic links"),
        ("cats/self", "symbolic link loop (points back to a parent folder)"),
        ("cats/up", "symbolic link loop (points back to a parent folder)"),
    ]


def test_non_utf8_names(tmp_path):
    write_image(tmp_path / "cats" / "ok.png")
    bad_file = os.path.join(os.fsencode(tmp_path), b"cats", b"caf\xe9.png")
    bad_class = os.path.join(os.fsencode(tmp_path), b"d\xf6gs")
    try:
        Image.new("RGB", (2, 2)).save(bad_file, "PNG")
        os.mkdir(bad_class)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    Image.new("RGB", (2, 2)).save(os.path.join(bad_class, b"x.png"), "PNG")
    source = open_source(tmp_path)
    assert [r.path for r in source.records] == ["cats/ok.png"]
    assert source.class_names == ["cats"]
    assert sorted(source.failed) == [
        ("cats/caf\\xe9.png", "file name is not valid UTF-8: rename it"),
        ("d\\xf6gs", "file name is not valid UTF-8: rename it"),
    ]


_LIST_AND_LOAD = """
import json, sys
from transfer_cache.sources import open_source
source = open_source(sys.argv[1])
errors = []
for i in range(len(source)):
    try:
        source.load(i)
    except Exception as exc:
        errors.append([source.records[i].path, str(exc)])
print(json.dumps({"paths": [r.path for r in source.records], "failed": source.failed, "errors": errors}))
"""


def _run_without_root_file_access(root):
    """List and load ``root`` as a process that obeys file permissions (root: drop the DAC capabilities)."""
    command = [sys.executable, "-c", _LIST_AND_LOAD, str(root)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_unreadable_folder_and_file(tmp_path):
    write_image(tmp_path / "cats" / "1.png")
    write_image(tmp_path / "cats" / "private" / "2.png")
    write_image(tmp_path / "cats" / "locked.png")
    (tmp_path / "cats" / "private").chmod(0)
    (tmp_path / "cats" / "locked.png").chmod(0)
    try:
        result = _run_without_root_file_access(tmp_path)
    finally:
        (tmp_path / "cats" / "private").chmod(0o755)
    assert result == {
        "paths": ["cats/1.png", "cats/locked.png"],
        "failed": [["cats/private", "cannot list folder: permission denied"]],
        "errors": [["cats/locked.png", "cannot read file: permission denied"]],
    }


def test_bad_files_are_listed_and_fail_on_load(tmp_path):
    write_image(tmp_path / "cats" / "good.png")
    (tmp_path / "cats" / "empty.png").write_bytes(b"")
    (tmp_path / "cats" / "text.jpg").write_text("hello, I am not a JPEG")
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(noisy, "PNG")
    (tmp_path / "cats" / "truncated.png").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) // 2])
    source = open_source(tmp_path)
    reasons = {}
    for i, record in enumerate(source.records):
        try:
            source.load(i)
        except ImageError as exc:
            reasons[record.path] = str(exc)
    assert reasons == {
        "cats/empty.png": "empty file (0 bytes)",
        "cats/text.jpg": "not an image (cannot identify image format)",
        "cats/truncated.png": "truncated image: image file is truncated",
    }
    (tmp_path / "cats" / "good.png").unlink()
    i = [r.path for r in source.records].index("cats/good.png")
    with pytest.raises(ImageError, match="^file not found$"):
        source.load(i)


def test_load_from_threads(class_folder):
    source = open_source(class_folder)
    expected = [source.load(i) for i in range(len(source))]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(source.load, list(range(len(source))) * 8))
    for k, image in enumerate(results):
        np.testing.assert_array_equal(image, expected[k % len(source)])


# --------------------------------------------------------------------------- CSV manifests


def write_csv(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_manifest(tmp_path):
    write_image(tmp_path / "data" / "img" / "a.png", (255, 0, 0))
    write_image(tmp_path / "data" / "img" / "b.png", (0, 255, 0))
    write_image(tmp_path / "data" / "c.png", (0, 0, 255))
    write_image(tmp_path / "data" / "d.png")
    manifest = write_csv(
        tmp_path / "data" / "labels.csv",
        "Path, Label ,split,notes\n"
        "img/b.png,dog,train,x\n"
        "./img/a.png,cat,validation,\n"
        "\n"
        "c.png,,Test,\n"
        f"{tmp_path / 'data' / 'd.png'},cat,,\n"  # absolute, but inside the folder
        "img/missing.png,cat,train,\n"
        "img/a.png,dog,train,\n",
    )
    source = open_source(str(manifest))
    assert isinstance(source, CsvSource)
    assert source.kind == "csv"
    assert source.description == f"csv:{manifest.resolve()}"
    assert source.name == "labels"
    assert source.root == manifest.parent.resolve()
    assert source.class_names == ["cat", "dog"]
    assert source.records == [
        Record("c.png", -1, "test"),
        Record("d.png", 0, ""),
        Record("img/a.png", 0, "val"),
        Record("img/b.png", 1, "train"),
    ]
    assert source.failed == [
        ("img/missing.png", "file not found"),
        ("img/a.png", "duplicate row (line 8 repeats line 3)"),
    ]
    assert source.load(0)[0, 0].tolist() == [0, 0, 255]
    assert source.digest(2) == hashlib.sha256((tmp_path / "data" / "img" / "a.png").read_bytes()).hexdigest()


def test_csv_numeric_class_names_sort_numerically(tmp_path):
    for k in range(3):
        write_image(tmp_path / f"{k}.png")
    manifest = write_csv(tmp_path / "m.csv", "path,label\n0.png,10\n1.png,2\n2.png,1\n")
    source = open_source(manifest)
    assert source.class_names == ["1", "2", "10"]
    assert [r.label for r in source.records] == [2, 1, 0]


@pytest.mark.parametrize("written", ["../outside.png", "sub/../../outside.png", "ABS"])
def test_csv_paths_escaping_the_folder(tmp_path, written):
    outside = write_image(tmp_path / "outside.png")
    write_image(tmp_path / "data" / "in.png")
    if written == "ABS":
        written = str(outside)
    manifest = write_csv(tmp_path / "data" / "m.csv", f"path,label\nin.png,a\n{written},b\n")
    with raises(
        f"manifest '{manifest}' line 3: path {written!r} leads outside the manifest's folder "
        f"'{manifest.parent}': move the images below that folder, or pass allow_outside_root=True "
        "(--allow-outside-root) if you trust the manifest"
    ):
        open_source(manifest)
    source = open_source(manifest, allow_outside_root=True)
    assert [r.path for r in source.records] == ["../outside.png", "in.png"]
    assert source.read_bytes(0) == outside.read_bytes()


@pytest.mark.parametrize(
    "header, missing",
    [("file,label", "path"), ("path,class", "label"), ("image;target", "path, label")],
)
def test_csv_missing_columns(tmp_path, header, missing):
    manifest = write_csv(tmp_path / "m.csv", f"{header}\na.png,x\n")
    with raises(
        f"manifest '{manifest}' must have a header row with columns path,label[,split]; "
        f"got columns: {', '.join(header.split(','))} (missing {missing})"
    ):
        open_source(manifest)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "manifest '{m}' is empty: expected a header row with columns path,label[,split]"),
        ("path,label\n", "manifest '{m}' lists no images: add rows under the header"),
        (
            "path,label,split\na.png,x,dev\n",
            "manifest '{m}' line 2: split must be one of 'train', 'val', 'test' (or 'valid', "
            "'validation', or empty); got 'dev'",
        ),
        ("path,label\na.png\n", "manifest '{m}' line 2: expected 2 columns (path, label); got 1: 'a.png'"),
        ("path,label\n ,x\n", "manifest '{m}' line 2: the path is empty"),
        (
            "path,label\nnope.png,x\n",
            "manifest '{m}': none of its 1 images can be used (e.g. nope.png: file not found): paths "
            "are relative to the manifest's folder",
        ),
    ],
)
def test_csv_errors(tmp_path, text, message):
    write_image(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", text)
    with raises(message.format(m=manifest)):
        open_source(manifest)


# --------------------------------------------------------------------------- arrays


def test_npz_with_everything(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 3, 3), np.uint8)
    path = tmp_path / "set.npz"
    np.savez(
        path,
        images=images,
        labels=np.array([0, 1, 2, 1, -1]),
        class_names=np.array(["ant", "bee", "cow"]),
        split=np.array(["train", "train", "valid", "test", ""]),
    )
    source = open_source(str(path))
    assert isinstance(source, ArraySource)
    assert (source.kind, source.name, source.description) == ("arrays", "set", f"arrays:{path.resolve()}")
    assert source.root is None and source.failed == []
    assert source.class_names == ["ant", "bee", "cow"]
    assert source.records[2] == Record("2", 2, "val")
    assert source.records[4] == Record("4", -1, "")
    assert source.read_bytes(0) is None
    np.testing.assert_array_equal(source.load(3), images[3])


def test_npz_x_y_keys_grayscale_and_default_class_names(tmp_path):
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    path = tmp_path / "xy.npz"
    np.savez_compressed(path, x=images, y=np.array([[0], [2], [1]]))
    source = open_source(path)
    assert source.class_names == ["0", "1", "2"]
    assert [r.label for r in source.records] == [0, 2, 1]
    assert source.load(1).tolist() == np.stack([images[1]] * 3, axis=2).tolist()


def test_npy_unlabelled_and_digest_is_content(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 5, 5, 3), np.uint8)
    np.save(tmp_path / "imgs.npy", images)
    np.savez(tmp_path / "same.npz", images=images[::-1].copy())
    a, b = open_source(tmp_path / "imgs.npy"), open_source(tmp_path / "same.npz")
    assert a.class_names == [] and all(r.label == -1 and r.split == "" for r in a.records)
    assert a.digest(0) == b.digest(3) != a.digest(1)
    expected = hashlib.sha256(
        images[0].tobytes() + repr((5, 5, 3)).encode() + images.dtype.str.encode()
    ).hexdigest()
    assert a.digest(0) == expected


def test_float_arrays_use_one_range_per_file(tmp_path):
    images = np.zeros((2, 1, 2), np.float32)
    images[0] = [[0.0, 1.0]]  # dark image: alone it would look like [0, 1] data
    images[1] = [[0.0, 200.0]]
    np.save(tmp_path / "f.npy", images)
    source = open_source(tmp_path / "f.npy")
    assert source.load(0)[0, :, 0].tolist() == [0, 1]
    assert source.load(1)[0, :, 0].tolist() == [0, 200]


IMG1 = np.zeros((1, 2, 2), np.uint8)
IMG2 = np.zeros((2, 2, 2), np.uint8)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"pixels": IMG1},
            "{w} has no 'images' (or 'x') array; got keys: pixels: save it with "
            "np.savez(path, images=..., labels=...)",
        ),
        (
            {"images": np.zeros((2, 2, 2, 2), np.uint8)},
            "{w}: images must be an array of shape (N, H, W), (N, H, W, 1), (N, H, W, 3) or "
            "(N, H, W, 4); got (2, 2, 2, 2)",
        ),
        ({"images": np.zeros((0, 2, 2), np.uint8)}, "{w} holds no images"),
        (
            {"images": IMG2, "labels": np.array([0.0, 1.0])},
            "{w}: labels must be integers of shape (2,) (one per image); got float64 (2,)",
        ),
        (
            {"images": IMG2, "labels": np.array([0, 3]), "class_names": np.array(["a", "b"])},
            "{w}: label 3 has no class name (2 class_names given): add the missing names",
        ),
        (
            {"images": IMG1, "split": np.array(["dev"])},
            "{w}: split values must be 'train', 'val', 'test' (or 'valid', 'validation', or empty); "
            "got 'dev'",
        ),
        (
            {"images": IMG1, "class_names": np.array(["a", None], dtype=object)},
            "{w} stores Python objects, which are never unpickled (unsafe): save images and labels as "
            "numeric arrays and class_names/split as string arrays (np.array(names, dtype=str))",
        ),
    ],
    ids=["no-images", "bad-shape", "empty", "float-labels", "label-without-name", "bad-split", "pickled-object"],
)
def test_array_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with raises(message.format(w=f"array file '{path}'")):
        open_source(path)


def test_npy_of_objects_is_never_unpickled(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TransferCacheError, match=re.escape("stores Python objects, which are never unpickled")):
        open_source(tmp_path / "o.npy")


# --------------------------------------------------------------------------- CIFAR batches


class _Py2Pickler(pickle._Pickler):
    """Writes pickles the way the original CIFAR batches were written by Python 2's cPickle:
    protocol 2, every str/bytes as a byte string, numpy arrays via numpy.core.multiarray._reconstruct."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_bytestring(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_bytestring
    dispatch[str] = _save_bytestring


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_images(n, seed):
    """(N, 32, 32, 3) images and their CIFAR rows (N, 3072): red plane, green plane, blue plane."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), np.uint8)
    return images, images.transpose(0, 3, 1, 2).reshape(n, 3072)


@pytest.fixture
def cifar10_folder(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    meta = {b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_cases_per_batch": 4, b"num_vis": 3072}
    (root / "batches.meta").write_bytes(py2_pickle(meta))
    expected = {}
    for batch, seed, n in [("data_batch_1", 1, 4), ("data_batch_2", 2, 3), ("test_batch", 3, 2)]:
        images, rows = cifar_images(n, seed)
        labels = [(seed + k) % 10 for k in range(n)]
        content = {
            b"batch_label": f"{batch} of 2".encode(),
            b"labels": labels,
            b"data": rows,
            b"filenames": [f"img_{k}.png".encode() for k in range(n)],
        }
        (root / batch).write_bytes(py2_pickle(content))
        expected[batch] = (images, labels)
    (root / "readme.html").write_text("<html></html>")
    return root, expected


def test_cifar10_batches(cifar10_folder):
    root, expected = cifar10_folder
    assert b"cnumpy.core.multiarray\n_reconstruct" in (root / "data_batch_1").read_bytes()
    source = open_source(str(root))
    assert isinstance(source, CifarSource)
    assert (source.kind, source.name, source.description) == ("cifar", "cifar10", f"cifar:{root.resolve()}")
    assert source.class_names == CIFAR10_CLASSES
    assert len(source) == 9
    assert [r.path for r in source.records[:5]] == [
        "data_batch_1/0", "data_batch_1/1", "data_batch_1/2", "data_batch_1/3", "data_batch_2/0",
    ]
    assert source.records[-1] == Record("test_batch/1", 4, "test")
    assert {r.split for r in source.records[:7]} == {"train"}
    for i, record in enumerate(source.records):
        batch, j = record.path.split("/")
        images, labels = expected[batch]
        assert record.label == labels[int(j)]
        np.testing.assert_array_equal(source.load(i), images[int(j)])
    assert source.read_bytes(0) is None
    assert source.digest(0) == hashlib.sha256(
        expected["data_batch_1"][0][0].tobytes() + b"(32, 32, 3)" + b"|u1"
    ).hexdigest()


def test_cifar100_batches(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    names = [f"class_{k:02d}" for k in range(100)]
    (root / "meta").write_bytes(
        py2_pickle({b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": [b"x"] * 20})
    )
    images, rows = cifar_images(3, 7)
    content = {b"data": rows, b"fine_labels": [5, 99, 0], b"coarse_labels": [1, 2, 3], b"filenames": [b"a", b"b", b"c"]}
    (root / "train").write_bytes(py2_pickle(content))
    # the test batch re-saved by modern Python and numpy (protocol 5, numpy._core names)
    (root / "test").write_bytes(pickle.dumps({"data": rows[:1], "fine_labels": [42]}, protocol=5))
    source = open_source(root)
    assert (source.kind, source.name) == ("cifar", "cifar100")
    assert source.class_names == names
    assert source.records == [
        Record("train/0", 5, "train"), Record("train/1", 99, "train"), Record("train/2", 0, "train"),
        Record("test/0", 42, "test"),
    ]
    np.testing.assert_array_equal(source.load(1), images[1])
    np.testing.assert_array_equal(source.load(3), images[0])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


def test_cifar_pickle_with_other_globals_is_refused(cifar10_folder, tmp_path):
    root, _ = cifar10_folder
    marker = tmp_path / "pwned"
    (root / "data_batch_2").write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=4))
    with raises(
        f"refusing to read CIFAR batch '{(root / 'data_batch_2').resolve()}': global 'builtins.eval' "
        "is not allowed; a CIFAR python batch holds only dicts, lists, bytes and numpy arrays, so "
        "this file is not one (or was tampered with)"
    ):
        open_source(root)
    assert not marker.exists()


def test_cifar_truncated_batch(cifar10_folder):
    root, _ = cifar10_folder
    data = (root / "test_batch").read_bytes()
    (root / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        TransferCacheError, match=re.escape(f"cannot read CIFAR batch '{(root / 'test_batch').resolve()}': ")
    ):
        open_source(root)


# --------------------------------------------------------------------------- bundled datasets and dispatch


def test_sklearn_digits():
    from sklearn.datasets import load_digits

    source = open_source("sklearn:digits")
    assert (source.kind, source.name, source.description) == ("sklearn", "digits", "sklearn:digits")
    assert len(source) == 1797 and source.root is None and source.failed == []
    assert source.class_names == [str(k) for k in range(10)]
    digits = load_digits()
    assert [r.label for r in source.records] == digits.target.tolist()
    assert source.records[5] == Record("5", int(digits.target[5]), "")
    image = source.load(0)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], np.rint(digits.images[0] * 255 / 16))
    assert max(int(source.load(i).max()) for i in range(20)) == 255


def test_keras_dataset_offline():
    if (pathlib.Path.home() / ".keras" / "datasets" / "cifar-10-batches-py").exists():
        pytest.skip("a local Keras copy of CIFAR-10 exists, so the offline error cannot occur")
    with pytest.raises(
        TransferCacheError,
        match="^" + re.escape(
            "could not download the keras dataset 'cifar10' (no network?): download it on a "
            "connected machine, or point SOURCE at a local copy (a CIFAR batch folder or an image "
            "folder) ["
        ),
    ):
        open_source("keras:cifar10")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("keras:imagenet",
         "keras dataset must be one of 'cifar10', 'cifar100', 'mnist', 'fashion_mnist'; got 'imagenet'"),
        ("sklearn:iris", "scikit-learn dataset must be one of 'digits'; got 'iris'"),
        ("", f"SOURCE is empty: {SOURCE_HELP}"),
        ("{tmp}/nowhere", "SOURCE '{tmp}/nowhere' does not exist: " + SOURCE_HELP),
        ("{tmp}/photo.png", "SOURCE '{tmp}/photo.png' is a file but not .csv, .npz or .npy: " + SOURCE_HELP),
    ],
)
def test_open_source_errors(tmp_path, spec, message):
    write_image(tmp_path / "photo.png")
    with raises(message.format(tmp=tmp_path)):
        open_source(spec.format(tmp=tmp_path))


def test_source_help_names_every_kind():
    for kind in (
        "image folder", ".csv", ".npz", ".npy", "CIFAR", "keras:cifar10", "keras:fashion_mnist", "sklearn:digits"
    ):
        assert kind in SOURCE_HELP


def test_descriptions_reopen_the_same_source(class_folder, cifar10_folder, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 3), np.uint8))
    write_csv(class_folder / "m.csv", "path,label\ncats/b.png,cat\n")
    for spec in [class_folder, cifar10_folder[0], tmp_path / "a.npy", class_folder / "m.csv", "sklearn:digits"]:
        first = open_source(spec)
        again = open_source(first.description)
        assert (type(again), again.description, again.records) == (type(first), first.description, first.records)
    # a CIFAR batch folder read explicitly as an image folder: it has no class folders
    with raises(
        f"folder '{cifar10_folder[0].resolve()}' contains no images: expected root/<class>/<image> or "
        "root/<split>/<class>/<image> with extensions .jpg, .jpeg, .png, .bmp, .gif, .tif, .tiff, .webp"
    ):
        open_source(f"folder:{cifar10_folder[0]}")
    with raises(f"SOURCE 'csv:{class_folder}' must name a file: {SOURCE_HELP}"):
        open_source(f"csv:{class_folder}")


def test_cifar10_test_batch_only(cifar10_folder):
    root, expected = cifar10_folder
    (root / "data_batch_1").unlink()
    (root / "data_batch_2").unlink()
    source = open_source(root)
    assert isinstance(source, CifarSource)
    assert [r.path for r in source.records] == ["test_batch/0", "test_batch/1"]
    np.testing.assert_array_equal(source.load(1), expected["test_batch"][0][1])


# --------------------------------------------------------------------------- the registry of kinds


def test_a_new_source_kind_is_one_registration(tmp_path):
    """A throwaway kind (a text file listing image paths) registered in a test opens through open_source, by its
    suffix and by its name prefix, and is listed in the help; nothing else in the package had to change."""
    from transfer_cache.sources import registry
    from transfer_cache.sources.base import FileSource

    class ListSource(FileSource):
        kind = "list"

        def __init__(self, path):
            path = pathlib.Path(path).resolve()
            self.root, self.description, self.name, self.failed = path.parent, f"list:{path}", path.stem, []
            self.class_names = ["any"]
            self.records = [Record(path=line, label=0, split="") for line in path.read_text().split()]

    kind = registry.register(registry.SourceKind(
        name="list", help="a .list file of image paths", open=lambda path, allow_outside_root: ListSource(path),
        takes="file", suffixes=(".list",),
    ))
    try:
        write_image(tmp_path / "a.png")
        (tmp_path / "images.list").write_text("a.png\n")
        for spec in (tmp_path / "images.list", f"list:{tmp_path / 'images.list'}"):
            source = open_source(spec)
            assert isinstance(source, ListSource) and source.load(0).shape == (4, 6, 3)
        assert "a .list file of image paths" in registry.source_help()
    finally:
        registry.KINDS.pop(kind.name)


def test_the_help_lists_every_registered_kind_and_the_cli_shows_it():
    import subprocess
    import sys

    from transfer_cache.sources import KINDS, source_help

    for kind in KINDS.values():
        assert kind.help in source_help()
    shown = subprocess.run(
        [sys.executable, "-m", "transfer_cache.extract", "--help"], capture_output=True, text=True
    ).stdout
    assert "keras:fashion_mnist" in shown and "CIFAR-10/100 python batch folder" in shown


def test_nothing_outside_sources_branches_on_a_source_kind():
    package = pathlib.Path(__import__("transfer_cache").__file__).parent
    kinds = ("folder", "csv", "arrays", "cifar", "keras", "sklearn")
    pattern = re.compile(r"\.kind\s*(==|!=|in)\s*|source_kind\"?\]?\s*(==|!=|in)")
    offenders = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in package.rglob("*.py") if "sources" not in path.parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line) and any(f'"{kind}"' in line for kind in kinds)
    ]
    assert not offenders, offenders
