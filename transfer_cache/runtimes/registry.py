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

    ``forward(config, batch_size=...)`` builds (or loads) the model of a resolved feature configuration and returns
    a ``Forward``, already traced and warm, so the first real batch is timed like the rest. ``available()`` says
    whether this machine can use it (an optional package may be missing).
    """

    name: str
    description: str
    forward: Callable[..., Forward]
    available: Callable[[], bool] = lambda: True


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

