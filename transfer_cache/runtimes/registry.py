"""The runtime registry and what every runtime shares (padding a short batch to the compiled size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .._errors import TransferCacheError

Forward = Callable[[np.ndarray], "list[np.ndarray]"]


@dataclass(frozen=True)
class Runtime:
    """One way to run the feature model.

    ``forward(config, batch_size=..., lock_timeout=0.0)`` builds (or loads) the model of a resolved
    ``feature_config.FeatureConfig`` (read by attribute) and returns a ``Forward``, already traced and warm, so the
    first real batch is timed like the rest; ``lock_timeout`` is how long to wait for another process preparing the
    same model (extract's --lock-timeout; 0: as long as it takes). ``available()`` says whether this machine can use
    it (an optional package may be missing).
    """

    name: str
    description: str
    forward: Callable[..., Forward]
    available: Callable[[], bool] = lambda: True
    reference: bool = False  # its vectors define a configuration's fingerprint (the others add their name to it)
    uses_gpus: bool = False  # "auto" picks it when a GPU is visible
    cpu_rank: int = 0  # "auto" on a machine without GPUs picks the available runtime of highest rank


_RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    if runtime.name in _RUNTIMES:
        raise ValueError(f"runtime {runtime.name!r} is registered twice")
    _RUNTIMES[runtime.name] = runtime
    return runtime


def list_runtimes() -> list[str]:
    return list(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    runtime = _RUNTIMES.get(name)
    if runtime is None:
        raise TransferCacheError(f"runtime must be one of {', '.join(repr(n) for n in _RUNTIMES)}; got {name!r}")
    return runtime


AUTO = "auto"


def runtime_choices() -> list[str]:
    return [AUTO, *_RUNTIMES]


def resolve_runtime(name: str) -> str:
    """A runtime name, or "auto": the GPU runtime when a GPU is visible, else the fastest available CPU runtime."""
    if name != AUTO:
        runtime = _RUNTIMES.get(name)
        if runtime is None:
            raise TransferCacheError(f"runtime must be one of {', '.join(repr(n) for n in runtime_choices())}; "
                                     f"got {name!r}")
        if not runtime.available():
            raise TransferCacheError(f"runtime {name!r} is not installed here: {runtime.description}")
        return name
    return auto_candidates()[0]


def auto_candidates() -> list[str]:
    """What "auto" may use, best first (an existing cache made by a later one is reused rather than recomputed)."""
    available = [r for r in _RUNTIMES.values() if r.available()]
    if gpu_visible():
        ranked = sorted(available, key=lambda r: not r.uses_gpus)
    else:
        ranked = sorted(available, key=lambda r: -r.cpu_rank)
    return [r.name for r in ranked]


def gpu_visible() -> bool:
    """Whether a GPU can be used, without starting TensorFlow when it is not running yet (4 s of start-up).

    TensorFlow's own answer when it is already imported; otherwise the NVIDIA driver's device list, honouring
    ``CUDA_VISIBLE_DEVICES`` set to nothing or -1.
    """
    import os
    import sys

    if "tensorflow" in sys.modules:
        return bool(sys.modules["tensorflow"].config.list_physical_devices("GPU"))
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def reference_runtime() -> str:
    return next(r.name for r in _RUNTIMES.values() if r.reference)


def full_batch(pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Pad a short batch (the last one, or one with bad images) so a compiled call never sees a new shape."""
    if len(pixels) == batch_size:
        return pixels
    padding = np.zeros((batch_size - len(pixels),) + pixels.shape[1:], pixels.dtype)
    return np.concatenate([pixels, padding])


def padded(infer: Callable[[np.ndarray], Sequence], batch_size: int) -> Forward:
    """Wrap a fixed-batch call so callers may pass fewer rows: pad, run, trim, return float32 numpy arrays."""

    def forward(pixels: np.ndarray) -> list[np.ndarray]:
        pixels = np.asarray(pixels)
        outputs = infer(full_batch(pixels, batch_size))
        return [np.asarray(output, dtype=np.float32)[: len(pixels)] for output in outputs]

    return forward

