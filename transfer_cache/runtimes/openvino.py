"""The OpenVINO runtime: the same Keras feature model, converted once per machine and run by OpenVINO on the CPU.

Measured on 2 cores (EfficientNet-Lite0, batch 32): about 1.6-1.75x the images/s of the TensorFlow runtime. Its vectors
are not bit-identical to TensorFlow's (within 1e-5 on real photos), so a cache made with it has its own fingerprint.
Inference runs in float32 (``INFERENCE_PRECISION_HINT=f32``): on CPUs with bf16 support OpenVINO would otherwise
compute in bf16 and change the vectors further.

The converted model is kept in a per-user folder (``$TRANSFER_CACHE_MODELS``, else ``~/.cache/transfer_cache/models``)
under a key made of what defines the network (backbone, weights, layers, pooling, input size, preprocessing,
precision) and the conversion method. The first run builds the Keras model and converts it (seconds); later runs read
and compile the saved OpenVINO model without building the Keras model or importing TensorFlow. A conversion is
written to a temporary folder and renamed into place under a lock, so two processes never see half a model; a
damaged model is converted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .._errors import TransferCacheError
from ._openvino_convert import CONVERSION, MODEL_FIELDS, USER_ERROR
from .registry import Runtime, padded, register

MODELS_ENV = "TRANSFER_CACHE_MODELS"
COMPILE_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def models_dir() -> Path:
    explicit = os.environ.get(MODELS_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transfer_cache" / "models"


def model_key(config: dict) -> str:
    identity = json.dumps({"conversion": CONVERSION, **{name: config[name] for name in MODEL_FIELDS}}, sort_keys=True)
    return f"{config['backbone']}-{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:16]}"


def converted_model_path(config: dict) -> Path:
    return models_dir() / "openvino" / model_key(config) / "model.xml"


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def convert(config: dict) -> Path:
    """Save the feature model of ``config`` as an OpenVINO model (once; atomically) and return its path.

    The conversion runs in a child process: it needs TensorFlow (this process may never start it), and OpenVINO's
    converter forks helper processes for its telemetry from background threads, which must not inherit this process's
    open files (an HDF5 file's lock would outlive its close) or its locks.
    """
    final = converted_model_path(config).parent
    with _lock(final.with_name(final.name + ".lock")):
        if (final / "model.xml").is_file():  # another process converted it while this one waited
            return final / "model.xml"
        temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            with _announced(config["backbone"]):
                done = subprocess.run(
                    [sys.executable, "-m", "transfer_cache.runtimes._openvino_convert", str(temporary), json.dumps(config)],
                    capture_output=True, text=True, env=_child_environment(),
                )
                reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
                if done.returncode == USER_ERROR:
                    raise TransferCacheError(reason)
                if done.returncode != 0 or not (temporary / "model.xml").is_file():
                    raise TransferCacheError(
                        f"converting the {config['backbone']} feature model for OpenVINO failed ({reason}); extract with "
                        "--runtime tensorflow instead"
                    )
                shutil.rmtree(final, ignore_errors=True)  # a damaged earlier conversion
                os.replace(temporary, final)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return final / "model.xml"


@contextlib.contextmanager
def _announced(backbone: str):
    """One line on stderr for the seconds a conversion takes (else silent ones on a new machine): what is converted,
    then, on the same line, how long it took. With a progress bar on screen, two whole lines through tqdm instead."""
    from tqdm import tqdm

    start = time.perf_counter()
    head = f"converting {backbone} for OpenVINO (once per machine)..."
    bars = any(not getattr(bar, "disable", True) for bar in list(getattr(tqdm, "_instances", ())))
    if bars:
        tqdm.write(head, file=sys.stderr)
    else:
        sys.stderr.write(head)
        sys.stderr.flush()
    try:
        yield
    except BaseException:
        if not bars:
            sys.stderr.write(" failed\n")
        raise
    tail = f" converted in {time.perf_counter() - start:.1f} s"
    if bars:
        tqdm.write(f"...{tail}", file=sys.stderr)
    else:
        sys.stderr.write(tail + "\n")
        sys.stderr.flush()


def _child_environment() -> dict:
    """This process's environment, with this copy of the package first on the path (whatever the child's cwd)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _read(core, config: dict):
    """The converted model of ``config``: read from disk, or converted first (and again when the saved one is damaged)."""
    path = converted_model_path(config)
    if path.is_file():
        try:
            return core.read_model(str(path))
        except RuntimeError:
            shutil.rmtree(path.parent, ignore_errors=True)
    return core.read_model(str(convert(config)))


def _output_order(model) -> list[int]:
    """Keras' SavedModel export names the outputs output_0, output_1 ... in the model's order; keep that order."""
    names = [output.get_any_name() for output in model.outputs]
    return sorted(range(len(names)), key=lambda i: int(names[i].rsplit("_", 1)[-1]) if names[i].rsplit("_", 1)[-1].isdigit() else i)


def forward_for_config(config: dict, *, batch_size: int):
    """Read (or convert once) the model of ``config``, compile it for this CPU, and return its warm forward pass."""
    import openvino as ov

    core = ov.Core()
    model = _read(core, config)
    size = int(config["input_size"])
    model.reshape([batch_size, size, size, 3])  # one static shape: every call is padded to the batch size
    order = _output_order(model)
    compiled = core.compile_model(model, "CPU", COMPILE_CONFIG)
    request = compiled.create_infer_request()
    outputs = [compiled.outputs[i] for i in order]

    def infer(pixels: np.ndarray):
        results = request.infer({0: np.asarray(pixels, dtype=np.float32)})
        return [results[output] for output in outputs]

    forward = padded(infer, batch_size)
    forward(np.zeros((batch_size, size, size, 3), np.uint8))  # the first call allocates; time the rest alike
    return forward


register(
    Runtime(
        name="openvino",
        description="OpenVINO on the CPU (pip install openvino); the model is converted once per machine",
        forward=forward_for_config,
        available=available,
        cpu_rank=1,
    )
)
