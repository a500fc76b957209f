"""The torch-free legacy .pth reader: real files from the pip packages, files written here, and hostile pickles."""

import builtins
import collections
import os
import pickle
import re
import struct
import sys

import numpy as np
import pytest

from transfer_cache._errors import TransferCacheError
from transfer_cache._torch_legacy import load_state_dict

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                 np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
                 np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage"}


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(items) -> bytes:
    return b"(" + b"".join(_int(i) for i in items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tensor_pickle(entries, storages) -> bytes:
    """Pickle of OrderedDict(name -> _rebuild_tensor_v2(...)), opcode for opcode as torch's legacy save emits it."""
    out = [b"\x80\x02", _global("collections", "OrderedDict"), b")R("]
    for name, (key, offset, size, stride) in entries.items():
        data = storages[key]
        pid = (b"(" + _str("storage") + _global("torch", STORAGE_NAMES[data.dtype]) + _str(key) + _str("cpu")
               + _int(data.size) + b"Nt" + b"Q")
        hooks = _global("collections", "OrderedDict") + b")R"
        out.append(_str(name) + _global("torch._utils", "_rebuild_tensor_v2")
                   + b"(" + pid + _int(offset) + _tuple(size) + _tuple(stride) + b"\x89" + hooks + b"tR")
    out.append(b"u.")
    return b"".join(out)


def write_legacy(path, entries, storages, *, tensor_bytes=None) -> None:
    """Write a legacy-layout .pth: magic, protocol, sys info, tensor pickle, storage keys, then each storage."""
    keys = list(storages)
    with open(path, "wb") as f:
        for obj in (MAGIC, 1001, SYS_INFO):
            pickle.dump(obj, f, protocol=2)
        f.write(tensor_pickle(entries, storages) if tensor_bytes is None else tensor_bytes)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            data = np.array(storages[key], order="C").reshape(-1)
            f.write(struct.pack("<q", data.size))
            f.write(data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())


def write_state_dict(path, arrays) -> None:
    """Each array in its own contiguous storage, as torch.save(model.state_dict()) does."""
    entries, storages = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        a = np.asarray(a)
        a = np.array(a, order="C")  # (ascontiguousarray would turn a scalar into shape (1,))
        stride = tuple(s // a.itemsize for s in a.strides)
        storages[str(1000 + i)] = a.reshape(-1)
        entries[name] = (str(1000 + i), 0, a.shape, stride)
    write_legacy(path, entries, storages)


def _lite0_file():
    from transfer_cache._efficientnet_lite import weights_path

    return weights_path("efficientnet_lite0")


def test_reads_the_real_lite0_file_without_torch():
    sd = load_state_dict(_lite0_file())
    assert isinstance(sd, collections.OrderedDict)
    assert len(sd) == 296
    assert list(sd)[:2] == ["_conv_stem.weight", "_bn0.weight"]
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].shape == () and sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(sd["_bn0.running_var"] >= 0) and np.any(sd["_bn0.running_var"] > 0)
    assert "torch" not in sys.modules


def test_round_trip_dtypes_and_scalars(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(4, 3, 2, 2)).astype(np.float32), "d": rng.normal(size=(5,)),
              "h": rng.normal(size=(2, 3)).astype(np.float16), "n": np.array(7, dtype=np.int64),
              "b": np.array([True, False, True]), "u": np.arange(6, dtype=np.uint8).reshape(2, 3),
              "empty": np.zeros((0, 4), dtype=np.float32)}
    write_state_dict(tmp_path / "a.pth", arrays)
    sd = load_state_dict(tmp_path / "a.pth")
    assert list(sd) == list(arrays)
    for name, a in arrays.items():
        assert sd[name].dtype == a.dtype and sd[name].shape == a.shape
        np.testing.assert_array_equal(sd[name], a)


def test_shared_storage_offsets_and_strides(tmp_path):
    base = np.arange(24, dtype=np.float32)
    entries = {
        "head": ("s0", 0, (2, 3), (3, 1)),
        "tail": ("s0", 18, (6,), (1,)),
        "transposed": ("s0", 0, (3, 4), (1, 3)),  # a .t() of a (4, 3) block: non-contiguous
        "every_other": ("s0", 1, (2, 2, 3), (12, 2, 4)),
    }
    write_legacy(tmp_path / "v.pth", entries, {"s0": base})
    sd = load_state_dict(tmp_path / "v.pth")
    np.testing.assert_array_equal(sd["head"], base[:6].reshape(2, 3))
    np.testing.assert_array_equal(sd["tail"], base[18:])
    np.testing.assert_array_equal(sd["transposed"], base[:12].reshape(4, 3).T)
    expected = np.array([[[base[1 + 12 * i + 2 * j + 4 * k] for k in range(3)] for j in range(2)] for i in range(2)])
    np.testing.assert_array_equal(sd["every_other"], expected)
    sd["head"][0, 0] = 99.0  # arrays are copies, not views into one buffer
    assert sd["transposed"][0, 0] == 0.0


def test_view_past_the_end_of_storage_is_refused(tmp_path):
    path = tmp_path / "bad.pth"
    write_legacy(path, {"x": ("s0", 4, (3,), (2,))}, {"s0": np.zeros(8, np.float32)})
    with pytest.raises(TransferCacheError, match=re.escape(f"{path} is corrupt: tensor 'x' reads past the end of "
                                                           f"its storage (8 >= 8); re-download the file")):
        load_state_dict(path)


class _RunsShell:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Evals:
    def __reduce__(self):
        return (builtins.eval, ("print('pwned')",))


def _refusal(global_name, path):
    return re.escape(f"refusing to load global '{global_name}' from {path}: weights files may only contain tensors")


def test_refuses_os_system_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = pickle.dumps(collections.OrderedDict(w=_RunsShell(marker)), protocol=2)
    write_legacy(path, {}, {}, tensor_bytes=payload)
    assert pickle.loads(payload) is not None and marker.exists()  # the payload really does run with plain pickle
    marker.unlink()
    with pytest.raises(TransferCacheError, match=_refusal(f"{os.system.__module__}.system", path)):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_os_system_in_the_header_pickles(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_header.pth"
    with open(path, "wb") as f:
        pickle.dump(_RunsShell(marker), f, protocol=2)  # in place of the magic number
    with pytest.raises(TransferCacheError, match=_refusal(f"{os.system.__module__}.system", path)):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_builtins_eval(tmp_path, capsys):
    path = tmp_path / "eval.pth"
    write_legacy(path, {}, {}, tensor_bytes=pickle.dumps({"w": _Evals()}, protocol=2))
    with pytest.raises(TransferCacheError, match=_refusal("builtins.eval", path)):
        load_state_dict(path)
    assert "pwned" not in capsys.readouterr().out


def test_refuses_a_pickled_torch_module(tmp_path):
    path = tmp_path / "module.pth"
    payload = b"\x80\x02" + _global("torch.nn.modules.module", "Module") + b")R."
    write_legacy(path, {}, {}, tensor_bytes=payload)
    with pytest.raises(TransferCacheError, match=_refusal("torch.nn.modules.module.Module", path)):
        load_state_dict(path)


def test_zip_format_is_named(tmp_path):
    import zipfile

    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"")
    with pytest.raises(TransferCacheError, match=re.escape(f"{path} is a zip-format PyTorch file")):
        load_state_dict(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "short.pth"
    write_state_dict(path, {"w": np.ones((10, 10), np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(TransferCacheError, match=re.escape(f"{path} is truncated: storage '1000' needs 400 bytes, "
                                                           f"396 left; re-download the file")):
        load_state_dict(path)


def test_not_a_pth_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"hello, this is not a pickle")
    with pytest.raises(TransferCacheError, match=re.escape(f"{path} is not a readable legacy PyTorch weights file")):
        load_state_dict(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "magic.pth"
    path.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(TransferCacheError, match=re.escape(f"{path} is not a legacy PyTorch file (bad magic number)")):
        load_state_dict(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(TransferCacheError, match=re.escape(f"weights file {path} does not exist")):
        load_state_dict(path)
