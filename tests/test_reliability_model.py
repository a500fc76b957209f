"""The converted OpenVINO model is verified, not trusted: damage that keeps its size (a flipped byte) must never reach
a cache; an unusable models folder is one line, exit 2; a killed conversion leaves no running child and its temporary
folder goes with the next run; a stuck conversion is waited for no longer than --lock-timeout, naming its holder."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the OpenVINO runtime needs the openvino package (pip install openvino)")

from transfer_cache import TransferCacheError  # noqa: E402
from transfer_cache.cache import open_cache  # noqa: E402
from transfer_cache.extract import extract  # noqa: E402
from transfer_cache.extract_options import feature_config  # noqa: E402
from transfer_cache.runtimes import openvino as ov_runtime  # noqa: E402
from transfer_cache.runtimes._openvino_convert import RECORD, sha256_of  # noqa: E402

from conftest import make_class_folder  # noqa: E402

TINY = dict(backbone="tiny", weights="none", progress=False, runtime="openvino")
CONFIG = feature_config(backbone="tiny", weights="none", runtime="openvino")
ADVICE = "set TRANSFER_CACHE_MODELS to a writable folder (extract also runs without it: --runtime tensorflow)"


@pytest.fixture(scope="module")
def session_model() -> Path:
    """The tiny model converted once in the session's models folder (other OpenVINO tests share it)."""
    return ov_runtime.convert(CONFIG).parent


@pytest.fixture
def models(tmp_path, monkeypatch, session_model) -> Path:
    """A models folder of this test only, holding a copy of the converted tiny model: damage stays here."""
    root = tmp_path / "models"
    key = session_model.name
    shutil.copytree(session_model, root / "openvino" / key)
    monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(root))
    return root / "openvino" / key


@pytest.fixture
def images(tmp_path) -> Path:
    return make_class_folder(tmp_path / "images", per_class=2)


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _refuse_conversion(monkeypatch) -> list:
    """Make any conversion fail at once (and count the attempts), so a test sees what happens without one."""
    attempts = []

    def refuse(config, **kwargs):
        attempts.append(config.backbone)
        raise TransferCacheError("conversion refused by the test")

    monkeypatch.setattr(ov_runtime, "convert", refuse)
    return attempts


def _damaged_line(folder: Path) -> str:
    return (f"the converted model in {folder} does not match what was recorded at conversion (damaged?); "
            f"converting again")


# --------------------------------------------------------------------------- a damaged model never reaches a cache


def test_a_flipped_byte_is_caught_before_any_vector_is_computed(models, images, tmp_path, monkeypatch, capfd):
    """One byte of model.bin flipped (size kept): it used to compute wrong vectors that the cache kept for good. Now
    the model is not used: with its conversion made impossible, extract fails and no cache is written."""
    _flip_middle_byte(models / "model.bin")
    attempts = _refuse_conversion(monkeypatch)
    capfd.readouterr()
    with pytest.raises(TransferCacheError, match="conversion refused by the test"):
        extract(str(images), cache_dir=tmp_path / "caches", **TINY)
    assert attempts == ["tiny"]
    assert capfd.readouterr().err.splitlines() == [_damaged_line(models)]
    assert not list((tmp_path / "caches").glob("*.h5"))


def test_a_model_whose_outputs_changed_is_not_used_even_when_its_digests_match(models, images, tmp_path, monkeypatch,
                                                                               capfd):
    """The second check: a weight changed and the record's digest rewritten to match (damage before the digest was
    taken, say) is caught by the probe batch run as the warm-up call."""
    weights = bytearray((models / "model.bin").read_bytes())
    middle = (len(weights) // 2) & ~3  # one float32 weight, made huge
    weights[middle : middle + 4] = struct.pack("<f", 1e6)
    (models / "model.bin").write_bytes(bytes(weights))
    record = json.loads((models / RECORD).read_text())
    record["files"]["model.bin"] = sha256_of(bytes(weights))
    (models / RECORD).write_text(json.dumps(record))
    _refuse_conversion(monkeypatch)
    capfd.readouterr()
    with pytest.raises(TransferCacheError, match="conversion refused by the test"):
        extract(str(images), cache_dir=tmp_path / "caches", **TINY)
    said = capfd.readouterr().err.splitlines()
    assert len(said) == 1 and re.fullmatch(
        re.escape(f"the converted model in {models} computes other outputs than recorded at conversion (")
        + r"\S+ off; damaged\?\); converting again", said[0]
    ), said
    assert not list((tmp_path / "caches").glob("*.h5"))


@pytest.mark.slow
def test_a_flipped_byte_is_converted_again_and_the_cache_matches_a_clean_run(models, images, tmp_path, capfd):
    """The whole repair (a real conversion, ~15 s here): one line says so, model.bin is whole again, and the
    vectors equal those of a run on the undamaged model."""
    good = (models / "model.bin").read_bytes()
    clean = extract(str(images), cache_dir=tmp_path / "clean", **TINY)
    _flip_middle_byte(models / "model.bin")
    capfd.readouterr()
    repaired = extract(str(images), cache_dir=tmp_path / "repaired", **TINY)
    said = [line for line in capfd.readouterr().err.splitlines() if "converted model" in line]
    assert said == [_damaged_line(models)]
    assert (models / "model.bin").read_bytes() == good
    with open_cache(clean.path) as a, open_cache(repaired.path) as b:
        assert a.ids == b.ids
        np.testing.assert_allclose(b.features[:], a.features[:], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- an unusable models folder


def _extract_cli(images: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = importlib.import_module("transfer_cache.extract").main(
        [str(images), "--runtime", "openvino", "--backbone", "tiny", "--weights", "none",
         "--quiet", "--cache-dir", str(tmp_path / "caches"), *extra])
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("where", ["models folder is a file", "models folder under a file", "model folder is a file"])
def test_an_unusable_models_folder_is_one_line_naming_it(where, images, tmp_path, monkeypatch, capsys):
    """Was a 40-line NotADirectoryError traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    if where == "model folder is a file":
        monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(tmp_path / "models"))
        blocker = ov_runtime.converted_model_path(CONFIG).parent
        blocker.parent.mkdir(parents=True)
        blocker.write_text("not a folder")
        expected = f"{blocker} is a file where a folder of converted models belongs; move it away, or {ADVICE}"
    elif where == "models folder is a file":
        monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(blocker))
        expected = f"the OpenVINO models folder {blocker} is a file, not a folder; {ADVICE}"
    else:
        monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(blocker / "models"))
        expected = (f"the OpenVINO models folder {blocker / 'models'} cannot be created: "
                    f"{blocker} is a file, not a folder; {ADVICE}")
    code, err = _extract_cli(images, tmp_path, capsys)
    assert (code, err) == (2, [f"python -m transfer_cache.extract: error: {expected}"])
    assert blocker.read_text() == "not a folder"


def test_neighbors_says_the_same_one_line(models, images, tmp_path, monkeypatch, capsys):
    from transfer_cache import neighbors

    made = extract(str(images), cache_dir=tmp_path / "caches", **TINY)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(blocker))
    query = next(images.rglob("*.png"))
    capsys.readouterr()
    code = neighbors.main([str(made.path), str(query)])
    expected = (f"python -m transfer_cache.neighbors: error: the OpenVINO models folder {blocker} is a file, "
                f"not a folder; {ADVICE}")
    assert (code, capsys.readouterr().err.splitlines()) == (2, [expected])


@pytest.mark.parametrize("errno_name, expected", [
    ("EROFS", "the OpenVINO models folder {base} is on a read-only disk; " + ADVICE),
    ("ENOSPC", "no space left on the disk of {base}; free some space, or set TRANSFER_CACHE_MODELS to a folder on "
               "another disk (extract also runs without it: --runtime tensorflow)"),
])
def test_a_read_only_or_full_disk_is_named(errno_name, expected, tmp_path, monkeypatch):
    """What the errors of a read-only or full disk become (checked by hand on real tmpfs mounts; a test cannot
    mount)."""
    import errno

    base = tmp_path / "models"
    monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(base))
    code = getattr(errno, errno_name)
    error = ov_runtime._unusable(base / "openvino" / "x", OSError(code, os.strerror(code), str(base / "openvino")))
    assert str(error) == expected.format(base=base)


# --------------------------------------------------------------------------- killed and stuck conversions


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_stale_temporary_folder_of_a_dead_process_is_removed(models, images, tmp_path):
    """A SIGKILLed conversion leaves .<key>.tmp-<pid> (13 MB for Lite0) that nothing removed. The next run removes
    it, but not one of a live process, nor one whose model is being converted right now (its lock held)."""
    folder = models.parent
    dead = _dead_pid()
    stale = folder / f".{models.name}.tmp-{dead}"
    live = folder / f".other-0123456789abcdef.tmp-{os.getpid()}"
    busy_key = "busy-0123456789abcdef"
    busy = folder / f".{busy_key}.tmp-{dead}"
    for path in (stale, live, busy):
        path.mkdir()
        (path / "model.bin").write_bytes(b"partial")
    with ov_runtime._conversion_lock(folder / busy_key, 0):
        extract(str(images), cache_dir=tmp_path / "caches", **TINY)
    assert not stale.exists()
    assert live.is_dir() and busy.is_dir()


def test_a_stuck_conversion_is_waited_for_no_longer_than_the_lock_timeout(images, tmp_path, monkeypatch, capsys):
    """Was: 'hashing: 0%' and a wait without end behind a stopped conversion. Now one line says whom it waits for,
    and after --lock-timeout one line names the folder and the holder's pid, exit 2."""
    monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(tmp_path / "models"))
    folder = ov_runtime.converted_model_path(CONFIG).parent
    with ov_runtime._conversion_lock(folder, 0):  # this process holds it, its pid written in the lock file
        started = time.monotonic()
        code, err = _extract_cli(images, tmp_path, capsys, "--lock-timeout", "1")
        waited = time.monotonic() - started
    pid = os.getpid()
    assert code == 2 and err == [
        f"process {pid} is converting the model in {folder}; waiting for it up to 1 s (--lock-timeout)",
        f"python -m transfer_cache.extract: error: gave up after 1 s (--lock-timeout) waiting for process {pid} to "
        f"finish converting the model in {folder} (is it stopped?); run again when it has finished, or extract with "
        "--runtime tensorflow",
    ], err
    assert 1.0 <= waited < 10, waited
    assert not (folder / "model.xml").exists()


_CONVERTING_PARENT = textwrap.dedent(
    """
    import json, sys
    from transfer_cache.feature_config import FeatureConfig
    from transfer_cache.runtimes.openvino import convert
    convert(FeatureConfig(**json.loads(sys.argv[1])))
    """
)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_the_converter_child_dies_with_its_parent(tmp_path):
    """A SIGKILLed first run left its converter child running: the rerun converted a second time beside it."""
    env = {**os.environ, "TRANSFER_CACHE_MODELS": str(tmp_path / "models")}
    parent = subprocess.Popen([sys.executable, "-c", _CONVERTING_PARENT, json.dumps(CONFIG.as_dict())], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (children := _children(parent.pid)) and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.05)
        assert children, "the conversion child never started"
        time.sleep(0.5)  # let it get going (importing TensorFlow)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while any(_running(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(child) for child in children)
    finally:
        parent.kill()
        parent.wait()
        for child in children if "children" in locals() else []:
            if _running(child):
                os.kill(child, signal.SIGKILL)
