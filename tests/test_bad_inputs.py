"""Bad inputs, one table: a hand-edited or damaged cache, a damaged runs index, an unusable models folder, a wrong
value, a manifest that escapes through a link, a damaged or stopped OpenVINO conversion. Each row runs the command
as a user types it (its ``main``, what ``python -m`` calls) and must end in exactly one line on stderr that names
the file or value and says what to do (exit 2), or says what it repaired (exit 0): never a traceback, never advice
to delete anything.

Left to other files, which check their exact messages: the damaged, foreign, renamed and newer caches
(test_reliability_cache.py), the mistakes of ``test_user_paths.MISTAKES`` (a few are rows here too, on a synthetic
cache), a models folder whose model folder is a file, the probe check and the repaired vectors of a flipped byte, and
a conversion lock held by a live process (test_reliability_model.py). The rows that need OpenVINO reuse that file's
helpers and are skipped without it; a real conversion is marked slow.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from conftest import make_class_folder, write_synthetic_cache

TINY = ("--backbone", "tiny", "--weights", "none")
CLASSES = ("cat", "dog", "fox")


# --------------------------------------------------------------------------- what each row starts from


@dataclass
class Scene:
    """A scratch folder and the places a row's arguments and words name (``{tmp}``, ``{cache}``, ``{file}``, ...)."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    places: dict
    runs: Path  # a runs folder holding one finished run (copied per row before it is damaged)
    started: list = field(default_factory=list)  # processes a row started, killed when it ends

    def fill(self, text: str) -> str:
        for key, value in self.places.items():
            text = text.replace("{" + key + "}", str(value))
        return text


def _cache(path: Path, *, rows: int = 24, **attrs) -> Path:
    """A small labelled cache of the tiny backbone: 3 separable classes, 16-dim vectors."""
    rng = np.random.default_rng(0)
    labels = np.arange(rows) % len(CLASSES)
    centres = rng.normal(0, 3, (len(CLASSES), 16))
    features = (
        (centres[labels] + rng.normal(0, 0.3, (rows, 16))).astype(np.float32) if rows else np.zeros((0, 16), np.float32)
    )
    return write_synthetic_cache(path, features=features, labels=labels, class_names=CLASSES,
                                 paths=[f"{CLASSES[k]}/{i:03d}.png" for i, k in enumerate(labels)], **attrs)


def _edited(edit: Callable[[h5py.File], None]) -> Callable[[Scene], None]:
    """Make: the cache {cache}, then edited in place with h5py as a hand would."""

    def make(scene: Scene) -> None:
        with h5py.File(_cache(scene.tmp / "cats.h5"), "a") as f:
            edit(f)

    return make


def _set(name: str, row, value) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[name][row] = value

    return edit


def _fewer_vectors(f: h5py.File) -> None:
    kept = f["features"][:-1]
    del f["features"]
    f["features"] = kept


def _class_names_not_json(f: h5py.File) -> None:
    f.attrs["class_names"] = "cat, dog, fox"


def _no_rows(scene: Scene) -> None:
    _cache(scene.tmp / "cats.h5", rows=0)


# (what is wrong, how to make it, words the line must contain besides the cache's path)
CACHE_DAMAGE = [
    ("a label beyond the class names (99 with 3 names)", _edited(_set("labels", 3, 99)),
     ["is damaged: row 3 has label 99, but labels are -1 (unlabelled) or 0..2 for its 3 class names",
      "python -m transfer_cache.extract"]),
    ("a label below -1", _edited(_set("labels", 3, -5)), ["row 3 has label -5", "python -m transfer_cache.extract"]),
    ("a NaN row of vectors", _edited(_set("features", 3, np.nan)),
     ["is damaged: row 3 of layer 'conv3' (/features) holds NaN", "move it out of its folder",
      "python -m transfer_cache.extract"]),
    ("an infinite value in a vector", _edited(_set("features", (5, 2), np.inf)),
     ["row 5 of layer 'conv3' (/features) holds infinity", "python -m transfer_cache.extract"]),
    ("0 rows", _no_rows, ["holds no images (0 rows): there is nothing to", "python -m transfer_cache.extract"]),
    ("fewer rows of vectors than labels", _edited(_fewer_vectors),
     ["is inconsistent: /features holds 23 rows of vectors but /labels 24", "python -m transfer_cache.extract"]),
    ("class_names not JSON", _edited(_class_names_not_json),
     ["its class_names attribute is not a JSON list of names (it reads 'cat, dog, fox')",
      "python -m transfer_cache.extract"]),
]

# every command that reads a cache's rows and vectors
CACHE_COMMANDS = [
    ("inspect", "{cache}", "--out", "{tmp}/inspected"),
    ("neighbors", "{cache}", "0"),
    ("report", "{cache}", "--out", "{tmp}/page.html", "--quiet", "--no-tsne", "--no-umap"),
    ("fit", "{cache}", "--runs-dir", "{tmp}/runs", "--quiet"),
]


def _good_cache(scene: Scene) -> None:
    _cache(scene.tmp / "cats.h5")


def _damaged_index(damage: Callable[[bytes], bytes]) -> Callable[[Scene], None]:
    """Make: {runs}, a runs folder with one finished run whose index.csv is damaged; {cache}, a good cache."""

    def make(scene: Scene) -> None:
        _good_cache(scene)
        shutil.copytree(scene.runs, scene.tmp / "runs")
        index = scene.tmp / "runs" / "index.csv"
        index.write_bytes(damage(index.read_bytes()))

    return make


def _without_columns(data: bytes, drop=("accuracy", "macro_f1")) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode())))
    keep = [i for i, name in enumerate(rows[0]) if name not in drop]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[row[i] for i in keep] for row in rows])
    return out.getvalue().encode()


def _accuracy_as_text(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode())))
    rows[1][rows[0].index("accuracy")] = "high"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


# (what is wrong, the damage, words report's line must contain besides the index's path)
INDEX_DAMAGE = [
    ("random bytes", lambda data: b"\xff\xfe" + np.random.default_rng(1).bytes(300), ["is not UTF-8 text"]),
    ("cut short", lambda data: data[: data.index(b"\n") + 40], ["line 2 has", "cut short or edited"]),
    ("an accuracy that is not a number", _accuracy_as_text, ["line 2: accuracy 'high' is not a number"]),
    ("missing columns", _without_columns, ["its header lacks accuracy, macro_f1"]),
]


def _test_cache(rows: int, labelled: bool = True) -> Callable[[Scene], None]:
    """Make: a good cache {cache} and a test cache {tmp}/test.h5 of ``rows`` rows (unlabelled: every label -1)."""

    def make(scene: Scene) -> None:
        _good_cache(scene)
        test = _cache(scene.tmp / "test.h5", rows=rows)
        if not labelled:
            with h5py.File(test, "a") as f:
                f["labels"][:] = -1

    return make


def _a_file(scene: Scene) -> None:
    (scene.tmp / "notes.txt").write_text("not a folder")


def _images(scene: Scene) -> None:
    make_class_folder(scene.tmp / "images", per_class=2)


def _models_at(where: str, *, openvino_cache: bool = False) -> Callable[[Scene], None]:
    """Make: $TRANSFER_CACHE_MODELS at ``where`` ({file} or {file}/models), {images}, and with ``openvino_cache`` a
    cache made by the OpenVINO runtime, {ov_cache}, whose image queries go through that folder."""

    def make(scene: Scene) -> None:
        pytest.importorskip("openvino", reason="the default runtime is OpenVINO only where it is installed")
        _a_file(scene)
        _images(scene)
        _good_cache(scene)
        if openvino_cache:
            _cache(scene.tmp / "ov.h5", runtime="openvino")
        scene.monkeypatch.setenv("TRANSFER_CACHE_MODELS", scene.fill(where))

    return make


def _manifest_through_a_link(scene: Scene) -> None:
    """data/m.csv names linked/b.png, where data/linked is a link to a folder outside data/."""
    make_class_folder(scene.tmp / "elsewhere", classes=("dog",), per_class=1)
    make_class_folder(scene.tmp / "data", classes=("cat",), per_class=1)
    (scene.tmp / "data" / "linked").symlink_to(scene.tmp / "elsewhere" / "dog")
    (scene.tmp / "data" / "m.csv").write_text("path,label\ncat/cat_000.png,cat\nlinked/dog_000.png,dog\n")


def _model_tests():
    """tests/test_reliability_model.py: its helpers (it skips, and so does the row, without OpenVINO)."""
    return importlib.import_module("test_reliability_model")


def _flipped_model_byte(scene: Scene) -> None:
    """Make: a models folder holding a copy of the converted tiny model with one byte of model.bin flipped."""
    helpers = _model_tests()
    session = helpers.ov_runtime.convert(helpers.CONFIG).parent  # the session's conversion, shared
    copy = scene.tmp / "models" / "openvino" / session.name
    shutil.copytree(session, copy)
    scene.monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(scene.tmp / "models"))
    helpers._flip_middle_byte(copy / "model.bin")
    scene.places["damaged_line"] = helpers._damaged_line(copy)
    _images(scene)


_HOLD_THE_LOCK = textwrap.dedent(
    """
    import json, sys, time
    from transfer_cache.feature_config import FeatureConfig
    from transfer_cache.runtimes.openvino import _conversion_lock, converted_model_path
    with _conversion_lock(converted_model_path(FeatureConfig(**json.loads(sys.argv[1]))).parent, 0):
        print("held", flush=True)
        time.sleep(120)
    """
)


def _stopped_converter(scene: Scene) -> None:
    """Make: a process holding the conversion lock of the tiny model, stopped with SIGSTOP; {pid} is its pid."""
    helpers = _model_tests()
    scene.monkeypatch.setenv("TRANSFER_CACHE_MODELS", str(scene.tmp / "models"))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_THE_LOCK, json.dumps(helpers.CONFIG.as_dict())],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    scene.started.append(holder)
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGSTOP)
    scene.places["pid"] = holder.pid
    _images(scene)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Row:
    wrong: str  # what is wrong
    make: Callable[[Scene], None]  # how to make it
    argv: tuple  # the command (a module of transfer_cache) and its arguments
    code: int  # the exit code
    words: tuple  # words the one line must contain
    notices: tuple = ()  # lines a command says while it works, before the line that answers (their starts)
    slow: bool = False


ROWS: list[Row] = [
    Row(f"cache with {wrong}: {command[0]}", make, command, 2, ("{cache}", *words))
    for wrong, make, words in CACHE_DAMAGE for command in CACHE_COMMANDS
]
ROWS += [
    Row(f"runs/index.csv {wrong}: report runs/", _damaged_index(damage), ("report", "{tmp}/runs", "--quiet"), 2,
        ("the runs index {tmp}/runs/index.csv is damaged", *words,
         "python -m transfer_cache.report {tmp}/runs --rebuild-index"))
    for wrong, damage, words in INDEX_DAMAGE
]
ROWS += [  # fit repairs the index it appends to, and says so
    Row(f"runs/index.csv {wrong}: fit", _damaged_index(damage),
        ("fit", "{cache}", "--runs-dir", "{tmp}/runs", "--quiet"),
        0, ("warning: the runs index {tmp}/runs/index.csv was damaged", "index.csv.old-",
            "written anew from the run folders"))
    for wrong, damage, _ in INDEX_DAMAGE
]
_ADVICE = "set TRANSFER_CACHE_MODELS to a writable folder (extract also runs without it: --runtime tensorflow)"
# test_reliability_model.py holds the exact lines of extract --runtime openvino and of neighbors on a cache it extracts;
# here the same folders go through the default runtime and a synthetic OpenVINO cache. Its flipped-byte test checks
# the repaired vectors through extract(); the row here checks what the command says (slow: a real conversion).
ROWS += [
    Row("$TRANSFER_CACHE_MODELS is a file: extract with the default runtime", _models_at("{file}"),
        ("extract", "{images}", *TINY, "--quiet", "--cache-dir", "{tmp}/caches"), 2,
        ("the OpenVINO models folder {file} is a file, not a folder", _ADVICE)),
    Row("$TRANSFER_CACHE_MODELS under a file: extract with the default runtime", _models_at("{file}/models"),
        ("extract", "{images}", *TINY, "--quiet", "--cache-dir", "{tmp}/caches"), 2,
        ("the OpenVINO models folder {file}/models cannot be created: {file} is a file, not a folder", _ADVICE)),
    Row("$TRANSFER_CACHE_MODELS is a file: neighbors of an image", _models_at("{file}", openvino_cache=True),
        ("neighbors", "{tmp}/ov.h5", "{images}/cat/cat_000.png"), 2,
        ("the OpenVINO models folder {file} is a file, not a folder", _ADVICE)),
    Row("$TRANSFER_CACHE_MODELS under a file: neighbors of an image", _models_at("{file}/models", openvino_cache=True),
        ("neighbors", "{tmp}/ov.h5", "{images}/cat/cat_000.png"), 2,
        ("the OpenVINO models folder {file}/models cannot be created: {file} is a file", _ADVICE)),
    Row("a test cache of 0 rows: fit --test-cache", _test_cache(0),
        ("fit", "{cache}", "--test-cache", "{tmp}/test.h5", "--runs-dir", "{tmp}/runs", "--quiet"), 2,
        ("cache {tmp}/test.h5 holds no images (0 rows): there is nothing to test on",)),
    Row("an unlabelled test cache: fit --test-cache", _test_cache(12, labelled=False),
        ("fit", "{cache}", "--test-cache", "{tmp}/test.h5", "--runs-dir", "{tmp}/runs", "--quiet"), 2,
        ("the test cache {tmp}/test.h5 has no labelled rows (its 12 rows are unlabelled, label -1)", "--test-cache")),
    Row("inspect --top -1", _good_cache, ("inspect", "{cache}", "--top", "-1", "--out", "{tmp}/inspected"), 2,
        ("top", "-1")),
    Row("inspect --folds 1", _good_cache, ("inspect", "{cache}", "--folds", "1", "--out", "{tmp}/inspected"), 2,
        ("folds", "1")),
    Row("neighbors CACHE ²", _good_cache, ("neighbors", "{cache}", "²"), 2,
        ("'²' is not a row number", "{cache}", "0..23")),
    Row("a manifest escaping its folder through a symbolic link", _manifest_through_a_link,
        ("extract", "{tmp}/data/m.csv", *TINY, "--quiet", "--cache-dir", "{tmp}/caches"), 2,
        ("manifest '{tmp}/data/m.csv' line 3: path 'linked/dog_000.png' leads outside the manifest's folder",
         "through a symbolic link to '{tmp}/elsewhere/dog/dog_000.png'", "--allow-outside-root")),
    Row("extract --cache-dir FILE", lambda scene: (_a_file(scene), _images(scene)),
        ("extract", "{images}", *TINY, "--quiet", "--cache-dir", "{file}"), 2, ("{file}", "is a file", "--cache-dir")),
    Row("report --out FOLDER", _good_cache, ("report", "{cache}", "--out", "{tmp}"), 2,
        ("--out {tmp} is a folder", "{tmp}/report.html")),
    Row("a stopped converter holds the conversion lock: extract --lock-timeout 2", _stopped_converter,
        ("extract", "{images}", "--runtime", "openvino", *TINY, "--quiet", "--cache-dir", "{tmp}/caches",
         "--lock-timeout", "2"), 2,
        ("gave up after 2 s (--lock-timeout) waiting for process {pid} to finish converting the model in",
         "(is it stopped?)", "--runtime tensorflow"),
        notices=("process {pid} is converting the model in",)),
    Row("a flipped byte in the converted model.bin: extract converts again", _flipped_model_byte,
        ("extract", "{images}", "--runtime", "openvino", *TINY, "--quiet", "--cache-dir", "{tmp}/caches"), 0,
        ("{damaged_line}",), notices=("converting tiny for OpenVINO",), slow=True),
]


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> Path:
    """One finished run of logreg on a small cache: the runs folder the index rows damage (copied per row)."""
    from transfer_cache.fit import fit

    root = tmp_path_factory.mktemp("fitted")
    fit([_cache(root / "cats.h5")], classifier="logreg", runs_dir=root / "runs", progress=False)
    return root / "runs"


def _stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]


@pytest.mark.parametrize(
    "row", [pytest.param(row, marks=[pytest.mark.slow] if row.slow else []) for row in ROWS],
    ids=[row.wrong for row in ROWS],
)
def test_a_bad_input_is_one_line_naming_it(row, tmp_path, monkeypatch, capsys, runs_folder):
    """Each row: the exit code, exactly one line besides the row's notices (no traceback), its words, no "delete"."""
    monkeypatch.chdir(tmp_path)  # defaults such as reports/ and runs/ land in the scratch folder
    scene = Scene(tmp_path, monkeypatch, {"tmp": tmp_path, "cache": tmp_path / "cats.h5",
                                           "file": tmp_path / "notes.txt", "images": tmp_path / "images"}, runs_folder)
    try:
        row.make(scene)
        module, *argv = (scene.fill(arg) for arg in row.argv)
        capsys.readouterr()
        code = importlib.import_module(f"transfer_cache.{module}").main(argv)
        out, err = capsys.readouterr()
    finally:
        for process in scene.started:  # a stopped process is killed all the same
            process.kill()
            process.wait()
    assert "Traceback" not in err, err
    assert code == row.code, (code, err)
    lines = _stderr_lines(err)
    for notice in row.notices:
        said = [line for line in lines if line.startswith(scene.fill(notice))]
        assert len(said) == 1, (notice, err)
        lines.remove(said[0])
    assert len(lines) == 1, err
    (line,) = lines
    if code == 2:
        assert line.startswith(f"python -m transfer_cache.{module}: error: "), line
    for word in row.words:
        assert scene.fill(word) in line, (scene.fill(word), line)
    assert "delete" not in err.lower()


def test_a_cache_whose_vectors_are_all_the_same_is_reported_not_a_crash(tmp_path):
    """Identical vectors (a backbone that gives every image one output) made t-SNE's PCA start divide by a spread of
    0: scikit-learn's Barnes-Hut tree then died of a segmentation fault, taking the report with it. A subprocess,
    because that failure is a signal. Now the page says why the map is left out, and stderr stays empty."""
    cache = write_synthetic_cache(tmp_path / "same.h5", features=np.zeros((40, 8), np.float32), labels=[0, 1] * 20,
                                  class_names=("a", "b"))
    done = subprocess.run([sys.executable, "-m", "transfer_cache.report", str(cache),
                           "--out", str(tmp_path / "page.html"), "--quiet", "--no-umap"],
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr[-3000:]
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert f"Left out: t-SNE needs vectors that differ; the 40 drawn from cache {cache} are all the same" in page
    assert "nan%" not in page  # the PCA axes: 0.0% of no variance, not nan%
