"""TensorFlow's native start-up notices (oneDNN, CPU features, absl) kept off the terminal.

A foundation of its own, not CLI glue: the library modules that start TensorFlow (backbones, the TensorFlow
runtime, export) call ``quiet_tensorflow`` themselves, and the commands install ``quiet_tensorflow_when_imported``.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter (oneDNN notices, absl warnings) kept out of the terminal.

    The notices are printed by native code before any log level applies, so stderr's file descriptor is pointed
    at /dev/null for the import only. Call it only once the arguments are checked (``--help`` stays fast).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with _stderr_to_devnull():
        import tensorflow  # noqa: F401


class _QuietTensorFlowFinder:
    """A ``sys.meta_path`` finder that lets the first ``import tensorflow`` (from Keras, a head, a backbone) run with
    stderr pointed at /dev/null, as ``quiet_tensorflow`` does, wherever in the work it happens."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib.util

        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once; and the search below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        plain_exec = loader.exec_module

        def exec_module(module):
            try:
                with _stderr_to_devnull():
                    plain_exec(module)
            finally:
                vars(loader).pop("exec_module", None)  # the loader is TensorFlow's own again

        loader.exec_module = exec_module
        return spec


def quiet_tensorflow_when_imported() -> None:
    """Keep TensorFlow's native start-up notices off the terminal whenever this process first imports it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
