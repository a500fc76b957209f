"""The library versions recorded in caches, run folders and benchmarks, read from package metadata (so recording
them never starts TensorFlow)."""

from __future__ import annotations

from importlib import metadata


def _version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict:
    from . import __version__

    versions = {
        "transfer_cache": __version__,
        "tensorflow": _version("tensorflow", "tensorflow-cpu"),
        "keras": _version("keras"),
        "scikit-learn": _version("scikit-learn"),
        "numpy": _version("numpy"),
        "h5py": _version("h5py"),
    }
    openvino = _version("openvino")
    if openvino:
        versions["openvino"] = openvino
    return versions
