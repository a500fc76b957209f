"""Crash campaign: extraction and fit processes are SIGKILLed at seeded moments of every phase.

No test-only hook exists in the package: each phase is recognised from outside by the trace it leaves in the cache
folder (the lock file while hashing, finished parts while reading and inferring, a part's temporary file, the final
file's ``.tmp-`` name during assembly, the new ``.h5`` after the rename), plus seeded random delays. After every
kill the folder must hold no file that passes for a finished cache unless it is complete and correct, every finished
part must be intact, and a re-run must produce exactly the vectors of an uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from transfer_cache.cache import open_cache
from transfer_cache.extract import extract
from transfer_cache.fit import fit

from conftest import make_class_folder, write_synthetic_cache

# 2048-d rows: assembly takes a while. The TensorFlow runtime: its start-up gives the build and inference phases time
# to be hit (OpenVINO finishes these small extractions before a kill lands); the write path is the same for both.
OPTIONS = dict(backbone="tiny", weights="none", pooling="flatten", batch_size=4, runtime="tensorflow")

_EXTRACT_CHILD = textwrap.dedent(
    """
    import sys
    from transfer_cache.extract import extract
    extract(sys.argv[1], cache_dir=sys.argv[2], backbone="tiny", weights="none", pooling="flatten", batch_size=4,
            runtime="tensorflow", progress=False)
    """
)
_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
PHASES = ("build", "hashing", "inference", "part-write", "assembly", "replace")


def _visible_caches(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.h5") if not p.name.startswith("."))


def _inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in _visible_caches(folder)} if folder.exists() else {}


def _trigger(phase: str, folder: Path, before: dict[str, int], rng: np.random.Generator):
    """A predicate that is true once ``phase`` is visibly under way, and the seeded delay to add after it."""
    if phase == "build":  # importing TensorFlow, listing, building the model: only time tells
        return (lambda: True), float(rng.uniform(0.5, 4.0))
    if phase == "hashing":  # the lock is taken right before the digests are computed
        return (lambda: any(folder.glob(".*.lock"))), float(rng.uniform(0.0, 0.05))
    if phase == "inference":  # some new parts (batches) finished since the start
        old = {p.name for p in folder.glob(".*.parts/part-*[0-9].npz")}
        wanted = int(rng.integers(1, 12))
        return (
            lambda: len({p.name for p in folder.glob(".*.parts/part-*[0-9].npz")} - old) >= wanted
        ), float(rng.uniform(0.0, 0.02))
    if phase == "part-write":
        return (lambda: any(folder.glob(".*.parts/*.tmp*"))), 0.0
    if phase == "assembly":
        return (lambda: any(folder.glob(".*.tmp-*"))), float(rng.uniform(0.0, 0.03))
    if phase == "replace":  # the new cache has just been renamed into place: parts not yet removed
        return (lambda: _inodes(folder) != before), 0.0
    raise ValueError(phase)


def _kill_extraction(source: Path, folder: Path, phase: str, rng: np.random.Generator) -> bool:
    """Start an extraction child and SIGKILL it at ``phase``; True when it was really killed (not finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    ready, delay = _trigger(phase, folder, _inodes(folder), rng)
    child = subprocess.Popen(
        [sys.executable, "-c", _EXTRACT_CHILD, str(source), str(folder)], env=_ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 180
    try:
        while child.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.0005)
        if delay:
            time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate()
    if child.returncode not in (-signal.SIGKILL, 0):
        pytest.fail(f"the extraction child failed on its own (exit {child.returncode}): {err.decode()[-2000:]}")
    return child.returncode == -signal.SIGKILL


def _reference(source: Path, folder: Path) -> dict[str, np.ndarray]:
    result = extract(str(source), cache_dir=folder, progress=False, **OPTIONS)
    with open_cache(result.path) as cache:
        return dict(zip(cache.ids, cache.features[:]))


def _check_folder(folder: Path, reference: dict[str, np.ndarray], stages: list[set[str]]) -> None:
    """What a user could find after a crash: only complete, correct caches and intact parts."""
    for path in _visible_caches(folder):
        with open_cache(path) as cache:  # raises if a partial file passes for a cache
            assert set(cache.ids) in stages, f"{path.name} holds {len(cache)} rows: not a complete cache of any stage"
            np.testing.assert_allclose(
                cache.features[:], np.stack([reference[d] for d in cache.ids]), rtol=1e-6, atol=1e-6
            )
    assert not [p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix != ".h5"]
    for part in folder.glob(".*.parts/part-*[0-9].npz"):
        with np.load(part, allow_pickle=False) as data:
            ids = data["ids"].tolist()
            features = data["f0"]
            assert features.shape[0] == len(ids), f"{part.name} is damaged"
            for digest, vector in zip(ids, features):
                np.testing.assert_allclose(vector, reference[digest], rtol=1e-6, atol=1e-6)


def _campaign(
    tmp_path: Path, plan: list[str], *, seed: int, add_images_after: set[int] = frozenset(), per_class: int = 100,
    extra_per_class: int = 10, add_when_complete: bool = False,
) -> list[tuple[str, bool]]:
    """Kill an extraction at each phase of ``plan`` in one cache folder. After the kills listed in
    ``add_images_after`` the extraction is finished (in this process) and images are added, so the next kills hit
    an incremental rewrite that replaces an existing cache; ``add_when_complete`` adds images whenever the cache
    in the folder is already complete (so there is always work to interrupt)."""
    rng = np.random.default_rng(seed)
    full = make_class_folder(tmp_path / "full", per_class=per_class + extra_per_class, seed=seed)
    reference = _reference(full, tmp_path / "reference")
    source = tmp_path / "source"
    extra = []
    for image in sorted(full.rglob("*.png")):
        target = source / image.relative_to(full)
        if int(image.stem.split("_")[1]) < per_class:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, target)
        else:
            extra.append((image, target))
    from transfer_cache.sources import open_source

    def ids_of(folder):
        src = open_source(str(folder))
        return {src.digest(i) for i in range(len(src))}

    stages = [ids_of(source)]
    folder = tmp_path / "caches"
    outcome = []
    for k, phase in enumerate(plan):
        killed = _kill_extraction(source, folder, phase, rng)
        outcome.append((phase, killed))
        _check_folder(folder, reference, stages)
        complete = False
        if add_when_complete:
            for path in _visible_caches(folder):
                with open_cache(path) as cache:
                    complete = complete or set(cache.ids) == stages[-1]
        if k in add_images_after:
            extract(str(source), cache_dir=folder, progress=False, **OPTIONS)
            _check_folder(folder, reference, stages)
        if (k in add_images_after or complete) and extra:
            batch, extra = extra[:10], extra[10:]
            for image, target in batch:
                shutil.copy(image, target)
            stages.append(ids_of(source))

    resumed = extract(str(source), cache_dir=folder, progress=False, **OPTIONS)
    clean = extract(str(source), cache_dir=tmp_path / "clean", progress=False, **OPTIONS)
    with open_cache(resumed.path) as a, open_cache(clean.path) as b:
        assert a.ids == b.ids and a.paths == b.paths and a.labels.tolist() == b.labels.tolist()
        np.testing.assert_allclose(a.features[:], b.features[:], rtol=1e-6, atol=1e-6)
    assert _visible_caches(folder) == [resumed.path]
    assert not list(folder.glob(".*.parts")) and not list(folder.glob(".*.tmp-*"))
    return outcome


def test_three_kills_inference_assembly_and_incremental_rewrite(tmp_path):
    # kill 1 mid-inference, kill 2 during the final assembly; then the run is finished, images are added, and
    # kill 3 hits the assembly of the incremental rewrite: the old cache must survive complete
    plan = ["inference", "assembly", "assembly"]
    outcome = _campaign(tmp_path, plan, seed=1, add_images_after={1}, per_class=50)
    assert outcome == [("inference", True), ("assembly", True), ("assembly", True)]


@pytest.mark.slow
def test_many_seeded_kills_at_every_phase(tmp_path):
    plan = [str(p) for p in np.random.default_rng(2024).permutation(list(PHASES) * 5)]
    outcome = _campaign(tmp_path, plan, seed=7, extra_per_class=40, add_when_complete=True)
    report = ", ".join(f"{phase}:{'killed' if killed else 'finished'}" for phase, killed in outcome)
    hit = {phase for phase, killed in outcome if killed}
    assert set(PHASES) == hit, report
    assert sum(killed for _, killed in outcome) >= 24, report


# --------------------------------------------------------------------------- fit


_CLASSES = ["ant", "bee", "cow"]


def _blob_cache(path: Path, n: int = 600, d: int = 32) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    centers = np.random.default_rng(9).normal(0, 4, size=(3, d))
    return write_synthetic_cache(
        path, features=(centers[y] + rng.normal(0, 1, (n, d))).astype("float32"), labels=y, layers=["feat"],
        class_names=_CLASSES, paths=[f"{i}.png" for i in range(n)],
    )


def _fit_child(cache: Path, runs: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "transfer_cache.fit", str(cache), "--runs-dir", str(runs), *extra]
    return subprocess.Popen(command, env=_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _index_rows(runs: Path) -> list[dict]:
    with open(runs / "index.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _kill_while_training(cache: Path, runs: Path, delay: float) -> None:
    """Start a long dense fit, wait until its progress bar names the dense head, then SIGKILL it after ``delay``."""
    child = _fit_child(cache, runs, "--classifier", "dense", "--param", "epochs=500", "--param", "hidden=64")
    seen = threading.Event()

    def watch():  # os.read returns whatever the progress bar has written so far
        for chunk in iter(lambda: os.read(child.stderr.fileno(), 4096), b""):
            if b"dense" in chunk:
                seen.set()

    threading.Thread(target=watch, daemon=True).start()
    assert seen.wait(120), "the fit never started training"
    time.sleep(delay)
    assert child.poll() is None, "the dense fit finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()


@pytest.mark.parametrize("kills", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_sigkill_while_training_a_dense_head_leaves_no_half_run(tmp_path, kills):
    cache = _blob_cache(tmp_path / "blobs.h5")
    runs = tmp_path / "runs"
    fit([cache], classifier="logreg", runs_dir=runs, progress=False)
    before = _index_rows(runs)
    index_bytes = (runs / "index.csv").read_bytes()

    for delay in np.random.default_rng(5).uniform(0.2, 2.0, size=kills):
        _kill_while_training(cache, runs, float(delay))
        assert (runs / "index.csv").read_bytes() == index_bytes  # no half row, no torn file
        assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == sorted(
            [Path(r["run_dir"]).name for r in before] + ["index.csv"]
        )
        for row in _index_rows(runs):  # every indexed run is complete
            assert {"config.json", "metrics.json", "predictions.csv", "model"} <= {
                p.name for p in Path(row["run_dir"]).iterdir()
            }
    assert [r["classifier"] for r in _index_rows(runs)] == ["logreg"]
