"""The OpenVINO runtime: the same Keras feature model, converted once per machine and run by OpenVINO on the CPU.

Measured on 2 cores (EfficientNet-Lite0, batch 32): about 1.6-1.75x the images/s of the TensorFlow runtime. Its vectors
are not bit-identical to TensorFlow's (within 1e-5 on real photos), so a cache made with it has its own fingerprint.
Inference runs in float32 (``INFERENCE_PRECISION_HINT=f32``): on CPUs with bf16 support OpenVINO would otherwise
compute in bf16 and change the vectors further.

The converted model is kept in a per-user folder (``$TRANSFER_CACHE_MODELS``, else ``~/.cache/transfer_cache/models``)
under a key made of what defines the network (backbone, weights, layers, pooling, input size, preprocessing,
precision) and the conversion method. The first run builds the Keras model and converts it (seconds); later runs read
and compile the saved OpenVINO model without building the Keras model or importing TensorFlow. A conversion is
written to a temporary folder and renamed into place under a lock, so two processes never see half a model.

A converted model is verified, not trusted: its conversion records the sha256 of its files and its outputs on a seeded
probe batch (checked there against the Keras model); a reader checks the digests (about 30 ms for Lite0's 13 MB) and
runs the probe as its warm-up call (the call it made anyway), and converts again, saying so in one line, on any
mismatch. A damaged model that keeps its size would otherwise compute wrong vectors that a cache then keeps.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import fsync_tree, process_alive, replace_folder
from .._errors import TransferCacheError
from . import _openvino_lite as lite_build
from ._openvino_convert import (
    COMPILE_CONFIG,
    CONVERSION,
    MODEL_FIELDS,
    MODEL_FILES,
    RECORD,
    REFERENCE,
    USER_ERROR,
    difference,
    output_order,
    sha256_of,
)
from .registry import Runtime, padded, reference_runtime, register

MODELS_ENV = "TRANSFER_CACHE_MODELS"


def _instead() -> str:
    """The flag that extracts without OpenVINO: the reference runtime's (asked when said, once all are registered)."""
    return f"--runtime {reference_runtime()}"


def _advice() -> str:
    return f"set {MODELS_ENV} to a writable folder (extract also runs without it: {_instead()})"


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def models_dir() -> Path:
    explicit = os.environ.get(MODELS_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transfer_cache" / "models"


def model_key(config) -> str:
    """The folder name of a ``FeatureConfig``'s converted model: what defines its network, and the conversion method.
    Kept byte for byte across releases (a new key would convert every user's models again); a model built from the
    weight arrays (``_openvino_lite``) names its builder instead of the conversion."""
    fields = {name: getattr(config, name) for name in MODEL_FIELDS}
    method = {"built": lite_build.BUILD} if lite_build.builds(config) else {"conversion": CONVERSION}
    identity = json.dumps({**method, **fields}, sort_keys=True)
    return f"{config.backbone}-{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:16]}"


def converted_model_path(config) -> Path:
    return models_dir() / "openvino" / model_key(config) / "model.xml"


# --------------------------------------------------------------------------- a converted model, verified


class _Absent(Exception):
    """No converted model in the folder yet (converting it is announced by the conversion's own line)."""


class _Unverified(Exception):
    """A converted model that does not match its record; the message is the line said before converting it again."""


@dataclass(frozen=True)
class _Converted:
    """A converted model read into memory and matched with its record: what is compiled is exactly what was checked."""

    folder: Path
    record: str  # the text of its record (tells this conversion from a later one)
    xml: bytes
    weights: bytes
    probe: np.ndarray
    expected: list
    tolerance: float


def _load(folder: Path) -> _Converted:
    """The converted model in ``folder`` if its files have the digests recorded at its conversion; raises ``_Absent``,
    ``_Unverified`` (damaged: convert again), or a TransferCacheError when the folder cannot be read at all."""
    if not folder.exists():
        raise _Absent
    if not folder.is_dir():
        raise _unusable(folder, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)))
    damaged = _Unverified(
        f"the converted model in {folder} does not match what was recorded at conversion (damaged?); converting again"
    )
    try:
        files = {name: (folder / name).read_bytes() for name in (RECORD, *MODEL_FILES, REFERENCE)}
    except FileNotFoundError as exc:
        if Path(exc.filename or "").name == RECORD:
            raise _Unverified(
                f"the converted model in {folder} has no record of what it must compute (converted by an earlier "
                "version, or damaged); converting again"
            ) from None
        raise damaged from None
    except OSError as exc:
        raise _unusable(folder, exc) from None
    try:
        record = json.loads(files.pop(RECORD))
        if any(sha256_of(data) != record["files"][name] for name, data in files.items()):
            raise damaged
        with np.load(io.BytesIO(files[REFERENCE]), allow_pickle=False) as reference:
            probe = reference["probe"]
            expected = [reference[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in reference.files))]
        tolerance = float(record["tolerance"])
    except (ValueError, KeyError, TypeError, AttributeError, OSError):  # a record that is not ours, or garbled
        raise damaged from None
    record_text = json.dumps(record, sort_keys=True)
    return _Converted(folder, record_text, files["model.xml"], files["model.bin"], probe, expected, tolerance)


def _verified(config, *, lock_timeout: float, rejected: str | None) -> _Converted:
    """The converted model of ``config``, converted first when there is none, when it does not match its record (one
    line says so), or when it is the one this process ``rejected`` for computing other outputs than recorded."""
    folder = converted_model_path(config).parent
    try:
        found = _load(folder)
        if found.record != rejected:
            return found
    except _Absent:
        pass
    except _Unverified as exc:
        _say(str(exc))
    convert(config, lock_timeout=lock_timeout, rejected=rejected)
    try:
        return _load(folder)
    except (_Absent, _Unverified):
        raise TransferCacheError(
            f"the model just converted in {folder} does not match its own record (is another program writing there?); "
            f"extract with {_instead()}"
        ) from None


def _compiled(core, converted: _Converted, *, size: int, batch_size: int):
    """Compile a verified model and run its probe batch as the warm-up call (the first call allocates; a zero batch
    was run there before, so the check costs no extra forward pass at batch sizes >= 2). Returns the forward pass and
    how far the probe's outputs are from the recorded ones; no forward pass when they are out of tolerance."""
    probe = converted.probe
    if probe.ndim != 4 or probe.shape[1:] != (size, size, 3):  # before compiling: a probe of another model
        return None, float("inf")
    try:
        model = core.read_model(converted.xml, converted.weights)
    except RuntimeError:
        return None, float("inf")
    model.reshape([batch_size, size, size, 3])  # one static shape: every call is padded to the batch size
    order = output_order(model)
    compiled = core.compile_model(model, "CPU", COMPILE_CONFIG)
    request = compiled.create_infer_request()
    outputs = [compiled.outputs[i] for i in order]

    def infer(pixels: np.ndarray):
        results = request.infer({0: np.asarray(pixels, dtype=np.float32)})
        return [results[output] for output in outputs]

    forward = padded(infer, batch_size)
    chunks = [forward(probe[i : i + batch_size]) for i in range(0, len(probe), batch_size)]
    off = difference([np.concatenate(parts) for parts in zip(*chunks)], converted.expected)
    return (forward, off) if off <= converted.tolerance else (None, off)


# --------------------------------------------------------------------------- converting (once per machine)


def convert(config, *, lock_timeout: float = 0.0, rejected: str | None = None) -> Path:
    """Save the feature model of ``config`` (a ``FeatureConfig``) as an OpenVINO model (once; atomically) and return
    its path.

    The embedded EfficientNet-Lite (with its weights file) is built here from its weight arrays, without TensorFlow
    (``_openvino_lite``: about a second). Any other model is converted in a child process: it needs TensorFlow (this
    process may never start it), and OpenVINO's converter forks helper processes for its telemetry from background
    threads, which must not inherit this process's open files (an HDF5 file's lock would outlive its close) or its
    locks. The child dies with this process; the
    configuration crosses to it as JSON (``as_dict``), rebuilt there by ``transfer_cache._openvino_child``.
    ``rejected``: the record of a model this process found computing other outputs than recorded (replaced even
    though its files match).
    """
    final = converted_model_path(config).parent
    try:
        with _conversion_lock(final, lock_timeout):
            try:
                if _load(final).record != rejected:  # another process converted it while this one waited
                    return final / "model.xml"
            except (_Absent, _Unverified):
                pass
            temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            shutil.rmtree(temporary, ignore_errors=True)
            try:
                if lite_build.builds(config):
                    _build_here(temporary, config)
                else:
                    _convert_in_child(temporary, config)
                fsync_tree(temporary)
                replace_folder(temporary, final)  # a damaged earlier conversion goes only once this one is in place
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
    except OSError as exc:
        raise _unusable(final, exc) from None
    return final / "model.xml"


def _build_here(temporary: Path, config) -> None:
    """Build the model of ``config`` from its weight arrays into ``temporary``, in this process (no TensorFlow; the
    opset API and ``save_model`` start no helper processes)."""
    with _announced(config.backbone, built=True):
        temporary.mkdir(parents=True)
        try:
            lite_build.build_into(temporary, config)
        except RuntimeError as exc:  # OpenVINO's own errors (a full disk is told apart inside)
            raise TransferCacheError(
                f"building the {config.backbone} model for OpenVINO failed ({str(exc).strip().splitlines()[-1]}); "
                f"extract with {_instead()} instead"
            ) from exc


def _convert_in_child(temporary: Path, config) -> None:
    """Convert the Keras model of ``config`` into ``temporary`` in the child process (see ``convert``)."""
    with _announced(config.backbone):
        done = subprocess.run(
            [sys.executable, "-m", "transfer_cache._openvino_child", str(temporary),
             json.dumps(config.as_dict()), str(os.getpid())],
            capture_output=True, text=True, env=_child_environment(),
        )
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        if done.returncode == USER_ERROR:
            raise TransferCacheError(reason)
        if done.returncode != 0 or not (temporary / RECORD).is_file():
            raise TransferCacheError(
                f"converting the {config.backbone} feature model for OpenVINO failed ({reason}); extract "
                f"with {_instead()} instead"
            )


def _unusable(path: Path, exc: OSError) -> TransferCacheError:
    """One line for a models folder this process cannot use, naming the path and what to do (was a traceback)."""
    base = models_dir()
    blocker = next((step for step in (path, *path.parents) if step.exists() and not step.is_dir()), None)
    if blocker is not None and blocker not in (base, *base.parents):
        return TransferCacheError(
            f"{blocker} is a file where a folder of converted models belongs; move it away, or {_advice()}"
        )
    if blocker is not None:
        where = "is a file" if blocker == base else f"cannot be created: {blocker} is a file"
        return TransferCacheError(f"the OpenVINO models folder {base} {where}, not a folder; {_advice()}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransferCacheError(
            f"no space left on the disk of {base}; free some space, or set {MODELS_ENV} to a folder on another disk "
            f"(extract also runs without it: {_instead()})"
        )
    if exc.errno == errno.EROFS:
        return TransferCacheError(f"the OpenVINO models folder {base} is on a read-only disk; {_advice()}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return TransferCacheError(
            f"the OpenVINO models folder {base} is not writable ({exc.filename}: permission denied); {_advice()}"
        )
    return TransferCacheError(
        f"the OpenVINO models folder {base} cannot be used ({exc.filename or path}: {exc.strerror or exc}); {_advice()}"
    )


@contextlib.contextmanager
def _conversion_lock(folder: Path, timeout: float):
    """Hold ``<folder>.lock`` (an ``flock``, released by the kernel when its holder dies) with this process's pid
    written in it, so a waiting process can say whom it waits for. ``timeout``: seconds to wait for another holder
    (0: as long as it takes; the wait is for a model this run needs, as every shard of a first run does)."""
    lock_path = folder.with_name(folder.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            _wait_for_lock(fd, lock_path, folder, timeout)
        with contextlib.suppress(OSError):  # only a courtesy to waiters; a full disk is reported by the conversion
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for_lock(fd: int, lock_path: Path, folder: Path, timeout: float) -> None:
    """Wait for the holder of the conversion lock, saying once whom for; after ``timeout`` seconds (> 0), give up."""
    started, said, holder = time.monotonic(), False, ""
    while True:
        holder = _holder(lock_path) or holder
        waited = time.monotonic() - started
        if not said and (holder or waited >= 1.0):  # the holder writes its pid right after taking the lock
            limit = (f"up to {timeout:g} s (--lock-timeout)" if timeout > 0
                     else "until it finishes (--lock-timeout SECONDS gives up sooner)")
            _say(f"process {holder or '(unknown)'} is converting the model in {folder}; waiting for it {limit}")
            said = True
        if timeout > 0 and waited >= timeout:
            raise TransferCacheError(
                f"gave up after {timeout:g} s (--lock-timeout) waiting for process {holder or '(unknown)'} to finish "
                f"converting the model in {folder} (is it stopped?); run again when it has finished, or extract with "
                f"{_instead()}"
            )
        time.sleep(0.2)
        if _try_lock(fd):
            return


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except (OSError, ValueError):
        return ""
    return text if text.isdigit() else ""


_TEMPORARY = re.compile(r"\.(?P<key>.+)\.(?:tmp|old)-(?P<pid>\d+)")  # a conversion, or a replaced one set aside


def _sweep_stale(folder: Path) -> None:
    """Remove the temporary folders of conversions whose process is gone (SIGKILLed mid-conversion: 13 MB for Lite0
    that nothing else would remove). One whose model is being converted right now (its lock held) is left alone, so
    a process of another machine sharing the folder is safe even though its pid means nothing here."""
    try:
        entries = [entry for entry in folder.iterdir() if _TEMPORARY.fullmatch(entry.name)]
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if process_alive(int(match["pid"])):
            continue
        try:
            fd = os.open(folder / f"{match['key']}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a read-only disk: nothing can be removed anyway
            continue
        try:
            if _try_lock(fd):
                shutil.rmtree(entry, ignore_errors=True)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- saying what happens


def _bars_drawn() -> bool:
    from tqdm import tqdm

    return any(not getattr(bar, "disable", True) for bar in list(getattr(tqdm, "_instances", ())))


def _say(line: str) -> None:
    """One whole line on stderr, through tqdm when a progress bar is on screen."""
    from tqdm import tqdm

    if _bars_drawn():
        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _announced(backbone: str, *, built: bool = False):
    """One line on stderr for the seconds a conversion takes (else silent ones on a new machine): what is converted
    (``built``: built from its weight arrays), then, on the same line, how long it took. With a progress bar on
    screen, two whole lines through tqdm instead."""
    from tqdm import tqdm

    start = time.perf_counter()
    if built:
        head = f"building {backbone} for OpenVINO from its weights (once per machine)..."
    else:
        head = f"converting {backbone} for OpenVINO (once per machine)..."
    bars = _bars_drawn()
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
    tail = f" {'built' if built else 'converted'} in {time.perf_counter() - start:.1f} s"
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


# --------------------------------------------------------------------------- the forward pass


def forward_for_config(config, *, batch_size: int, lock_timeout: float = 0.0):
    """Read (or convert once) the model of ``config`` (a ``FeatureConfig``), verify it, compile it for this CPU, and
    return its warm forward pass. Nothing is computed from a model that does not match its record: it is converted
    again first. ``lock_timeout``: seconds to wait for another process converting the same model (0: as long as it
    takes)."""
    import openvino as ov

    folder = converted_model_path(config).parent
    _sweep_stale(folder.parent)
    core = ov.Core()
    rejected = None
    for attempt in range(2):
        converted = _verified(config, lock_timeout=lock_timeout, rejected=rejected)
        forward, off = _compiled(core, converted, size=int(config.input_size), batch_size=batch_size)
        if forward is not None:
            return forward
        if attempt:
            raise TransferCacheError(
                f"the model converted in {folder} computes other outputs here than at its conversion ({off:.2g} off), "
                f"even converted again; extract with {_instead()}"
            )
        _say(
            f"the converted model in {folder} computes other outputs than recorded at conversion ({off:.2g} off; "
            "damaged?); converting again"
        )
        rejected = converted.record


register(
    Runtime(
        name="openvino",
        description="OpenVINO on the CPU (pip install openvino); the model is converted once per machine",
        forward=forward_for_config,
        available=available,
        cpu_rank=1,
    )
)
