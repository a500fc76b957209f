"""What the child process that converts a feature model for OpenVINO runs (see ``openvino.convert`` for why it is a
child; its entry point, ``python -m transfer_cache._openvino_child FOLDER CONFIG_JSON [PARENT_PID]``, rebuilds the
``FeatureConfig`` and calls ``convert_into``).

Besides the model it writes what the model must compute (``reference.npz``: a seeded probe batch and the saved model's
outputs on it, checked against the Keras model's) and, last, ``record.json``: the sha256 of every file. A reader
trusts the model only when both still hold (``openvino._load`` and ``openvino.forward_for_config``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

# what defines the network the converted model computes (resize, dtype and augmentation happen outside it)
MODEL_FIELDS = ("backbone", "weights_sha256", "layers", "pooling", "input_size", "preprocessing", "compute_precision")
CONVERSION = 2  # how the model is converted (2: the Keras model in memory, float32 weights); part of its key
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}

MODEL_FILES = ("model.xml", "model.bin", "config.json")
REFERENCE = "reference.npz"  # the probe batch and the converted model's outputs on it
RECORD = "record.json"  # the sha256 of MODEL_FILES and REFERENCE; written last, so its presence means complete
# how far a reader's outputs on the probe may be from the recorded ones, relative to max(1, largest recorded value):
# measured 0 (bit-identical) for Lite0 at batch sizes 1, 2, 8, 32 and 64; another CPU may get other kernels
REFERENCE_TOLERANCE = 1e-4
KERAS_TOLERANCE = 1e-3  # the converted model against the Keras model, on the same scale

USER_ERROR = 3  # the exit code of a user mistake (weights not found ...): its one-line message is passed on as it is


def probe_batch(size: int):
    """The seeded uint8 batch a converted model is checked on (stored with its outputs, so never regenerated)."""
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)


def output_order(model) -> list[int]:
    """Keras' export names the outputs output_0, output_1 ... in the model's order; keep that order."""
    names = [output.get_any_name() for output in model.outputs]
    return sorted(range(len(names)),
                  key=lambda i: int(names[i].rsplit("_", 1)[-1]) if names[i].rsplit("_", 1)[-1].isdigit() else i)


def difference(got, want) -> float:
    """The largest difference between two lists of outputs, on the scale of the wanted values (inf: other shapes)."""
    import numpy as np

    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        if np.shape(g) != np.shape(w):
            return float("inf")
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        worst = max(worst,
                    float(np.nan_to_num(np.abs(np.asarray(g, np.float64) - w), nan=np.inf).max(initial=0.0)) / scale)
    return worst


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def convert_into(folder: Path, config) -> None:
    """Build the Keras model of ``config`` (a ``FeatureConfig``), convert it in memory and save the OpenVINO model in
    ``folder``, its outputs named ``output_0`` ... in the Keras model's order (matched on a seeded batch, which also
    checks the conversion); then read the saved model back as a reader will, record its outputs on that batch and the
    digests of the files.

    Converting the Keras model itself, rather than an exported SavedModel, skips the export (about 5 s for Lite0). The
    weights are saved in float32: ``save_model`` would store them as float16 by default, which moved Lite0's vectors by
    up to 0.03 from TensorFlow's on real photos; in float32 they stay within 1e-5.
    """
    import numpy as np
    import openvino as ov

    from ..backbones import build_feature_model_from_config

    model = build_feature_model_from_config(config)
    converted = ov.convert_model(model)
    size = int(config.input_size)
    probe = probe_batch(size)
    expected = model(probe.astype(np.float32), training=False)
    expected = [np.asarray(t) for t in (expected if isinstance(expected, (list, tuple)) else [expected])]
    core = ov.Core()
    compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled({0: probe.astype(np.float32)})
    got = [np.asarray(results[output]) for output in compiled.outputs]
    for i, want in enumerate(expected):
        errors = [difference([g], [want]) for g in got]
        j = int(np.argmin(errors))
        if not errors[j] <= KERAS_TOLERANCE:
            raise RuntimeError(f"the OpenVINO conversion of output {i} differs from TensorFlow's by {errors[j]}")
        converted.outputs[j].get_tensor().set_names({f"output_{i}"})
    need = sum(int(np.prod(w.shape)) * 4 for w in model.weights) + (1 << 20)  # float32 weights and the rest
    save_recorded(folder, converted, config, expected=expected, need=need)


def save_recorded(folder: Path, model, config, *, expected, need: int, method: str | None = None) -> None:
    """Save the OpenVINO ``model`` of ``config`` in ``folder`` (weights in float32), then read it back as a reader
    will, run the probe batch through it and write what it computes (``REFERENCE``) and, last, the record: the
    sha256 of every file (and the ``method`` that made the model, when it was not converted from Keras).
    ``expected``: the Keras model's outputs on the probe, which the saved model must match (None: nothing to match,
    the model was built from the weights directly). ``need``: about the bytes the model takes, to tell a full disk."""
    import numpy as np
    import openvino as ov

    from .._errors import TransferCacheError
    from .registry import reference_runtime

    probe = probe_batch(int(config.input_size))
    core = ov.Core()
    try:
        ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
        network = {name: getattr(config, name) for name in MODEL_FIELDS}
        (folder / "config.json").write_text(json.dumps(network, indent=1) + "\n")
        saved = core.read_model(str(folder / "model.xml"))  # what a reader will get, not what was meant to be written
        compiled = core.compile_model(saved, "CPU", COMPILE_CONFIG)
        results = compiled({0: probe.astype(np.float32)})
        outputs = [np.asarray(results[compiled.outputs[i]], np.float32) for i in output_order(saved)]
        off = 0.0 if expected is None else difference(outputs, expected)
        mismatch = not off <= KERAS_TOLERANCE  # raised below: never taken for a full disk
        if not mismatch:
            np.savez(folder / REFERENCE, probe=probe, **{f"output_{i}": output for i, output in enumerate(outputs)})
            files = {name: sha256_of((folder / name).read_bytes()) for name in (*MODEL_FILES, REFERENCE)}
            record = {"files": files, "tolerance": REFERENCE_TOLERANCE, "openvino": ov.__version__}
            (folder / RECORD).write_text(json.dumps({**record, **({"method": method} if method else {})}, indent=1)
                                         + "\n")
    except (OSError, RuntimeError) as exc:
        if _out_of_space(exc, folder, need):
            raise TransferCacheError(
                f"no space left on the disk of {folder.parent} (the converted model needs about {need / 1e6:.0f} MB); "
                "free some space, or set TRANSFER_CACHE_MODELS to a folder on another disk (extract also runs "
                f"without it: --runtime {reference_runtime()})"
            ) from None
        raise
    if mismatch:
        raise RuntimeError(f"the saved OpenVINO model differs from TensorFlow's by {off}")


def _out_of_space(exc: BaseException, folder: Path, need: int) -> bool:
    """Whether a failed save ran out of disk: ENOSPC, or (OpenVINO's writer says only "iostream error") less room on
    the disk than the model needs, counting what it already wrote."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        written = sum(f.stat().st_size for f in folder.iterdir()) if folder.is_dir() else 0
        return shutil.disk_usage(folder if folder.is_dir() else folder.parent).free + written < need
    except OSError:
        return False


def die_with_parent(parent: int | None) -> None:
    """End this process when the one that started it dies (SIGKILLed, say): a conversion nobody waits for would only
    compete with the next run's. Linux delivers SIGKILL through ``prctl(PR_SET_PDEATHSIG)``; elsewhere a thread
    polls the parent's pid."""
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        if parent is not None:
            import threading
            import time

            def watch() -> None:
                while os.getppid() == parent:
                    time.sleep(0.5)
                os._exit(1)

            threading.Thread(target=watch, daemon=True).start()
    if parent is not None and os.getppid() != parent:  # it died before the request above took effect
        os._exit(1)
