"""Hostile files: no weights file, CIFAR batch, array file or manifest lets anyone run code or escape a folder.

Each hostile pickle names a global that would run code (os.system, subprocess.Popen, builtins.exec, ...) and, if it
were ever resolved and called, would create a marker file: the readers must refuse with a clear message and the
marker must never appear. The last test keeps an inventory of every place the package deserialises a file.
"""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transfer_cache
from transfer_cache import TransferCacheError
from transfer_cache._torch_legacy import load_state_dict
from transfer_cache.sources import open_source

# module, name: each would run code, import code or read files if a reader resolved it
HOSTILE_GLOBALS = [
    ("os", "system"),
    ("posix", "system"),
    ("subprocess", "Popen"),
    ("subprocess", "check_output"),
    ("builtins", "exec"),
    ("builtins", "eval"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("builtins", "open"),
    ("__builtin__", "eval"),  # the Python 2 spelling, mapped to builtins by pickle
    ("importlib", "import_module"),
    ("numpy", "load"),
    ("numpy.lib.npyio", "load"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("torch", "load"),
    ("torch.serialization", "load"),
    ("shutil", "rmtree"),
    ("copyreg", "_reconstructor"),
    ("runpy", "run_path"),
]


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def hostile_pickle(module: str, name: str, marker: Path, *, protocol: int) -> bytes:
    """A pickle that calls module.name(<shell command creating marker>) when loaded by a plain unpickler."""
    argument = _text(f"touch {marker}")
    if protocol >= 4:  # STACK_GLOBAL
        head = (
            b"\x80\x04" + b"\x8c" + bytes([len(module)]) + module.encode()
            + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93"
        )
    else:  # GLOBAL
        head = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
    return head + argument + b"\x85R."


def test_the_hostile_pickle_really_runs_code_with_a_plain_unpickler(tmp_path):
    """Guard for the tests below: the payload is live, so its absence of effect there means something."""
    marker = tmp_path / "pwned"
    pickle.loads(hostile_pickle("os", "system", marker, protocol=2))
    assert marker.exists()


# --------------------------------------------------------------------------- weights (.pth legacy reader)

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _legacy_file(path: Path, *, position: int, payload: bytes) -> None:
    """A legacy .pth whose ``position``-th pickle (0 magic, 1 protocol, 2 sys info, 3 tensors, 4 keys) is
    ``payload``."""
    pickles = [
        pickle.dumps(MAGIC, 2), pickle.dumps(1001, 2), pickle.dumps(SYS_INFO, 2),
        pickle.dumps({}, 2), pickle.dumps([], 2),
    ]
    pickles[position] = payload
    path.write_bytes(b"".join(pickles))


@pytest.mark.parametrize("module, name", HOSTILE_GLOBALS)
@pytest.mark.parametrize("protocol", [2, 4])
def test_weights_reader_refuses_every_global_it_does_not_need(tmp_path, module, name, protocol):
    marker = tmp_path / "pwned"
    for position in (0, 2, 3, 4):
        weights = tmp_path / f"hostile{position}.pth"
        _legacy_file(weights, position=position, payload=hostile_pickle(module, name, marker, protocol=protocol))
        shown = "builtins" if module == "__builtin__" else module
        with pytest.raises(
            TransferCacheError,
            match=re.escape(
                f"refusing to load global '{shown}.{name}' from {weights}: weights files may only contain tensors"
            ),
        ):
            load_state_dict(weights)
    assert not marker.exists()


def test_weights_reader_refuses_hostile_files_through_extract(tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "lite0.pth"
    _legacy_file(weights, position=3, payload=hostile_pickle("os", "system", marker, protocol=2))
    from transfer_cache.backbones import build_feature_model

    with pytest.raises(TransferCacheError, match=re.escape("refusing to load global 'os.system'")):
        build_feature_model(backbone="efficientnet_lite0", weights=str(weights), input_size=64)
    assert not marker.exists()


# --------------------------------------------------------------------------- CIFAR batches


def _cifar_folder(root: Path, meta: bytes | None = None, batch: bytes | None = None) -> Path:
    root.mkdir(parents=True)
    good_meta = pickle.dumps({b"label_names": [b"a", b"b"]}, 4)
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    good_batch = pickle.dumps({b"data": data, b"labels": [0, 1, 0, 1]}, 4)
    (root / "batches.meta").write_bytes(meta or good_meta)
    (root / "data_batch_1").write_bytes(batch or good_batch)
    return root


@pytest.mark.parametrize("module, name", HOSTILE_GLOBALS)
def test_cifar_reader_refuses_every_global_it_does_not_need(tmp_path, module, name):
    marker = tmp_path / "pwned"
    for k, (where, protocol) in enumerate([("meta", 2), ("batch", 4)]):
        payload = hostile_pickle(module, name, marker, protocol=protocol)
        root = _cifar_folder(tmp_path / f"cifar{k}", **{where: payload})
        target = root / ("batches.meta" if where == "meta" else "data_batch_1")
        with pytest.raises(
            TransferCacheError,
            match=re.escape(f"refusing to read CIFAR batch '{target}': global '{module}.{name}' is not allowed"),
        ):
            open_source(str(root))
    assert not marker.exists()


def test_a_clean_cifar_folder_still_opens(tmp_path):
    source = open_source(str(_cifar_folder(tmp_path / "cifar")))
    assert len(source) == 4 and source.class_names == ["a", "b"]


# --------------------------------------------------------------------------- array files


def _object_npy_with_payload(path: Path, marker: Path) -> None:
    """A .npy declaring dtype object, whose body is a pickle that runs a shell command."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header = header + " " * (63 - (len(header) + 10) % 64) + "\n"
    path.write_bytes(
        b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")
        + hostile_pickle("os", "system", marker, protocol=2)
    )


def test_npy_with_a_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    _object_npy_with_payload(tmp_path / "images.npy", marker)
    with pytest.raises(
        TransferCacheError, match=re.escape("stores Python objects, which are never unpickled (unsafe)")
    ):
        open_source(str(tmp_path / "images.npy"))
    assert not marker.exists()


@pytest.mark.parametrize("key", ["images", "labels", "class_names", "split"])
def test_npz_with_an_object_array_is_refused(tmp_path, key):
    arrays = {
        "images": np.zeros((2, 8, 8, 3), np.uint8),
        "labels": np.array([0, 1]),
        "class_names": np.array(["a", "b"]),
        "split": np.array(["train", "test"]),
    }
    arrays[key] = np.array([{"x": 1}, None], dtype=object) if key != "images" else np.array([None, None], dtype=object)
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(
        TransferCacheError, match=re.escape("stores Python objects, which are never unpickled (unsafe)")
    ):
        open_source(str(tmp_path / "data.npz"))


# --------------------------------------------------------------------------- manifests cannot escape their folder


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)


@pytest.mark.parametrize(
    "written",
    ["../secret.png", "images/../../secret.png", "{outside}/secret.png", "./images/../../data/../secret.png"],
)
def test_manifest_paths_cannot_escape_their_folder(tmp_path, written):
    _png(tmp_path / "secret.png")
    _png(tmp_path / "data" / "images" / "a.png")
    written = written.format(outside=tmp_path)
    (tmp_path / "data" / "m.csv").write_text(f"path,label\nimages/a.png,cat\n{written},dog\n")
    with pytest.raises(
        TransferCacheError, match=re.escape(f"line 3: path {written!r} leads outside the manifest's folder")
    ):
        open_source(str(tmp_path / "data" / "m.csv"))
    assert len(open_source(str(tmp_path / "data" / "m.csv"), allow_outside_root=True)) == 2


@pytest.mark.parametrize("link, written", [("linked", "linked/b.png"), ("b.png", "b.png")])
def test_a_symlink_inside_the_folder_does_not_let_a_manifest_escape_it(tmp_path, link, written):
    """Where a path really leads is checked, not its text: a folder link or a file link pointing outside is refused
    (the message says through which link), and --allow-outside-root lets a trusted manifest use it."""
    _png(tmp_path / "elsewhere" / "b.png")
    _png(tmp_path / "data" / "a.png")
    target = tmp_path / "elsewhere" / ("b.png" if link == "b.png" else "")
    (tmp_path / "data" / link).symlink_to(target)
    (tmp_path / "data" / "m.csv").write_text(f"path,label\na.png,cat\n{written},dog\n")
    message = (f"line 3: path {written!r} leads outside the manifest's folder '{tmp_path / 'data'}' through a "
               f"symbolic link to '{tmp_path / 'elsewhere' / 'b.png'}': move the images below that folder")
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        open_source(str(tmp_path / "data" / "m.csv"))
    source = open_source(str(tmp_path / "data" / "m.csv"), allow_outside_root=True)
    assert [r.path for r in source.records] == ["a.png", written]


def test_a_symlink_that_stays_inside_the_folder_is_followed(tmp_path):
    _png(tmp_path / "data" / "pool" / "b.png")
    _png(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "data" / "pool")
    (tmp_path / "data" / "m.csv").write_text("path,label\na.png,cat\nlinked/b.png,dog\n")
    assert [r.path for r in open_source(str(tmp_path / "data" / "m.csv")).records] == ["a.png", "linked/b.png"]


def test_manifest_with_a_nul_byte_or_a_home_path_is_not_followed(tmp_path):
    _png(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "m.csv").write_text("path,label\na.png,cat\n~/x.png,dog\n\"b\x00.png\",dog\n")
    source = open_source(str(tmp_path / "data" / "m.csv"))
    assert [r.path for r in source.records] == ["a.png"]
    assert dict(source.failed) == {"~/x.png": "file not found", "b\x00.png": "file not found"}


# --------------------------------------------------------------------------- inventory of deserialisation


# every call that turns file bytes into Python objects, and why it is safe
DESERIALISERS = {
    ("_torch_legacy.py", "pickle.Unpickler"): (
        "restricted: find_class allow-list, local stand-ins, no persistent ids but storages"
    ),
    ("sources/cifar.py", "pickle.Unpickler"): "restricted: numpy array constructors only (CIFAR batches)",
    ("sources/arrays.py", "np.load("): "allow_pickle=False (.npy memory-mapped, .npz)",
    ("work_parts.py", "np.load("): "allow_pickle=False (work parts)",
    ("classifiers/sklearn_heads.py", "np.load("): "allow_pickle=False (head.npz of linear heads)",
    ("runtimes/openvino.py", "np.load("): "allow_pickle=False (the converted model's recorded probe outputs)",
    ("knn_index.py", "np.load("): "allow_pickle=False (the kept self-kNN graph beside a large cache)",
    ("classifiers/_pickles.py", "joblib.load"): (
        "documented pickle of a user's own fitted head; warns unless written on this machine"
    ),
}
_PATTERNS = ("pickle.load", "pickle.Unpickler", "np.load(", "numpy.load(", "joblib.load", "torch.load(", "marshal.load",
             "shelve.open", "dill.load", "cloudpickle.load", "yaml.load(", "safe_mode=False")


def test_every_deserialiser_in_the_package_is_restricted_or_documented():
    package = Path(transfer_cache.__file__).parent
    found = set()
    for path in sorted(package.rglob("*.py")):  # subpackages too
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#", 1)[0]
            stripped = code.strip()
            if stripped.startswith(('"""', "``", "'")) or not stripped:
                continue
            for pattern in _PATTERNS:
                if pattern in code and not re.search(r"^\s*[\"']|``", code):
                    name = path.relative_to(package).as_posix()
                    found.add((name, pattern))
                    if pattern in ("np.load(", "numpy.load("):
                        assert "allow_pickle=False" in code, f"{name}: {line.strip()}"
    assert {
        ("classifiers/_pickles.py", "joblib.load"), ("sources/arrays.py", "np.load("),
        ("sources/cifar.py", "pickle.Unpickler"),
    } <= found
    unknown = found - set(DESERIALISERS)
    assert not unknown, f"new deserialising calls: review them and list them in DESERIALISERS: {sorted(unknown)}"
