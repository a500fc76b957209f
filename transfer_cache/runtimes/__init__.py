"""Runtimes: where the feature model's forward pass runs, behind one registry (name -> ``Runtime``).

Extraction and the benchmark never build or call a model themselves: they ask a runtime for a *forward pass*, a
callable that takes a uint8 batch ``(B, S, S, 3)`` (``B`` up to the batch size) and returns one float32 array per
feature layer, rows in batch order. Adding a runtime is one module that calls ``register``; nothing else branches
on a runtime's name.
"""

from .._plugins import import_submodules  # noqa: E402
from .registry import (  # noqa: F401
    AUTO,
    Forward,
    Runtime,
    auto_candidates,
    full_batch,
    get_runtime,
    gpu_visible,
    list_runtimes,
    padded,
    reference_runtime,
    register,
    resolve_runtime,
    runtime_choices,
)

# each runtime module registers itself (openvino whether or not the package is installed: its available() says)
import_submodules(__name__, __path__)
