"""What a user types, run as typed: the README's commands, every head, source kind and runtime, and the mistakes.

The tour of the README runs as written (the real embedded backbone, through ``python -m``) in a scratch folder, and
every other ``python -m transfer_cache.*`` line of the README must be run by some test: the tour, the seed
workflows (tests/test_seeds.py) or ``REFERENCE`` below, which says how each one runs here (or why it cannot run
offline). A README command no test runs fails, and so does an entry here the README no longer shows. The lists
of heads, source kinds and runtimes come from their registries, so a new one without a user path fails too.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photos import make_photo_folder

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TINY = ["--backbone", "tiny", "--weights", "none"]


# --------------------------------------------------------------------------- the README's commands


def readme_blocks() -> list[tuple[str, str]]:
    """(section heading, block text) of every ```bash block of the README, continuation lines joined.

    The heading is the block's ``## `` section (its ``###`` subsections belong to it)."""
    blocks, heading = [], ""
    for part in re.split(r"(?m)^(## .*)$", README.read_text(encoding="utf-8")):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        for block in re.findall(r"```bash\n(.*?)```", part, flags=re.S):
            blocks.append((heading, block.replace("\\\n", " ")))
    return blocks


def readme_commands(*, section: str | None = None) -> list[str]:
    """The `python -m transfer_cache.*` (and tour set-up) lines of the README, comments stripped."""
    found = []
    for heading, block in readme_blocks():
        if section is not None and not heading.startswith(section):
            continue
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if "python -m transfer_cache." in line or line.startswith("python tests/"):
                found.append(line)
    return found


TOUR = "A five-minute tour"
SEEDS = "Reproducing five transfer-learning tutorials"  # tests/test_seeds.py runs these blocks

# Every README command outside the tour and the seeds: how a test here runs it ({cache}, {run}, {photos} are the
# shared tiny-backbone cache, one of its runs, and the photo folder), or None with the reason in OFFLINE.
REFERENCE: dict[str, list[str] | None] = {
    "pip install -e . && python -m transfer_cache.extract sklearn:digits": None,
    "python -m transfer_cache.extract photos --backbone mobilenet_v2 --input-size 160": None,
    "python -m transfer_cache.fit caches/photos-*.h5 --classifier svm --grid C=0.1,1,10 --cv 3":
        ["fit", "{cache}", "--classifier", "svm", "--grid", "C=0.1,1,10", "--cv", "3"],
    "python -m transfer_cache.extract photos --augment 4 --augment-recipe standard":
        ["extract", "{photos}", *TINY, "--augment", "4", "--augment-recipe", "standard"],
    "python -m transfer_cache.extract photos --shard 0/2": ["extract", "{photos}", *TINY, "--shard", "0/2"],
    "python -m transfer_cache.extract photos --shard 1/2": ["extract", "{photos}", *TINY, "--shard", "1/2"],
    "python -m transfer_cache.merge --cache-dir caches": ["merge", "--cache-dir", "{cache_dir}"],
    "python -m transfer_cache.extract photos --shards 2 --engine dask --workers 2": None,
    "python -m transfer_cache.bench --json bench.json": None,
    "python -m transfer_cache.export_vectors caches/photos-*.h5 vectors.parquet":
        ["export_vectors", "{cache}", "vectors.parquet"],
    "python -m transfer_cache.import_vectors vectors.parquet --cache-dir elsewhere":
        ["import_vectors", "vectors.parquet", "--cache-dir", "elsewhere"],
    "python -m transfer_cache.import_vectors theirs.parquet --backbone efficientnet_lite0 --source photos":
        ["import_vectors", "theirs.parquet", *TINY, "--source", "{photos}"],
}
OFFLINE = {
    "pip install -e . && python -m transfer_cache.extract sklearn:digits":
        "the README's first command: tests/test_feature_config.py runs it (slow) and CI's machine runs it for real",
    "python -m transfer_cache.extract photos --backbone mobilenet_v2 --input-size 160":
        "downloads ImageNet weights: tests/test_extract.py tests the offline error and a local weights file",
    "python -m transfer_cache.extract photos --shards 2 --engine dask --workers 2":
        "starts a Dask cluster: tests/test_distributed.py runs it on a LocalCluster",
    "python -m transfer_cache.bench --json bench.json":
        "minutes of measuring: tests/test_bench.py runs it on tiny settings (slow)",
}


def test_every_readme_command_is_run_by_a_test_and_every_listed_one_is_in_the_readme():
    tour = readme_commands(section=TOUR)
    seeds = readme_commands(section=SEEDS)
    others = [line for line in readme_commands() if line not in tour and line not in seeds]
    assert tour and seeds, "the README's tour and seed sections are where these tests look for them"
    assert sorted(set(others)) == sorted(REFERENCE), "README commands and tests/test_user_paths.py REFERENCE differ"
    assert sorted(k for k, v in REFERENCE.items() if v is None) == sorted(OFFLINE)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("user") / "photos")


@pytest.fixture(scope="module")
def tiny_cache(photos, tmp_path_factory):
    """The photo folder through the tiny backbone: the shared cache where the backbone does not matter."""
    from transfer_cache.extract import extract

    return extract(str(photos), cache_dir=tmp_path_factory.mktemp("caches"), backbone="tiny", weights="none",
                   progress=False).path


@pytest.fixture(scope="module")
def tiny_run(tiny_cache, tmp_path_factory):
    from transfer_cache.fit import fit

    (run,) = fit([tiny_cache], classifier="logreg", runs_dir=tmp_path_factory.mktemp("runs"), progress=False)
    return run.run_dir


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """A command's ``main`` (what ``python -m transfer_cache.<module>`` calls) in this process."""
    import importlib

    capsys.readouterr()
    code = importlib.import_module(f"transfer_cache.{module}").main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("line", sorted(k for k, v in REFERENCE.items() if v is not None))
def test_a_reference_command_of_the_readme_runs(line, photos, tiny_cache, tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module, *argv = REFERENCE[line]
    places = {"{photos}": str(photos), "{cache}": str(tiny_cache), "{run}": str(tiny_run), "{cache_dir}": "caches"}
    argv = [places.get(arg, arg) for arg in argv]
    if module == "merge":  # the shards it joins, as the two README lines before it wrote them
        for shard in ("0/2", "1/2"):
            assert run_main("extract", [str(photos), *TINY, "--shard", shard, "--quiet"], capsys)[0] == 0
    if module == "import_vectors":  # the file it reads: the README line before it exported it, or another tool
        _vectors_file(tiny_cache, argv[0])
    code, out, err = run_main(module, argv + ["--runs-dir", "runs"] * (module == "fit"), capsys)
    assert code == 0, err[-3000:]
    assert out.strip(), "every command ends with a one-line summary"


def _vectors_file(cache, name: str) -> None:
    """``name`` in the working folder: the cache exported, or (theirs.parquet) only its paths and vectors, as another
    tool would keep them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transfer_cache.export_vectors import export_vectors

    table = pq.read_table(export_vectors(cache, "vectors.parquet").path)
    if name == "theirs.parquet":
        pq.write_table(pa.table({"path": table.column("path"), "vector": table.column("vector")}), name)


def test_the_readme_tour_runs_as_written(tmp_path):
    """The tour's commands in a fresh folder, through the shell, with the embedded backbone and default options."""
    (tmp_path / "tests").symlink_to(REPO / "tests")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for line in readme_commands(section=TOUR):
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{line}\n{done.stderr[-3000:]}"


# --------------------------------------------------------------------------- the package as a user meets it


def test_dir_of_the_package_is_its_public_names_and_each_resolves():
    import transfer_cache

    assert dir(transfer_cache) == sorted(transfer_cache.__all__)
    for name in transfer_cache.__all__:
        assert getattr(transfer_cache, name) is not None, name


# --------------------------------------------------------------------------- every head, source kind and runtime


def test_every_registered_head_fits_with_its_defaults_through_the_cli(tiny_cache, tmp_path, capsys):
    """``fit CACHE --classifier <every head>`` with no --param: the defaults a user gets, the pixel baseline too."""
    import json

    from transfer_cache.classifiers import CLASSIFIERS

    heads = sorted(CLASSIFIERS)
    code, out, err = run_main("fit", [str(tiny_cache), "--classifier", ",".join(heads), "--runs-dir",
                                      str(tmp_path / "runs"), "--quiet"], capsys)
    assert code == 0, err[-3000:]
    assert f"{len(heads)} runs in" in out.strip().splitlines()[-1]
    for folder in sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir()):
        config = json.loads((folder / "config.json").read_text())
        declared = CLASSIFIERS[config["classifier"]].spec
        assert set(declared) <= set(config["params"]), (config["classifier"], "defaults are reported as parameters")
        assert 0.0 <= json.loads((folder / "metrics.json").read_text())["accuracy"] <= 1.0
        heads.remove(config["classifier"])
    assert heads == []


def _cifar_folder(photos: Path, root: Path) -> Path:
    """The photos as a CIFAR-10 "python version" batch folder (32x32 crops, one data batch and a test batch)."""
    from test_sources import CIFAR10_CLASSES, py2_pickle

    files = sorted(photos.glob("*/*_0[0-5].jpg"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((32, 32))) for f in files])
    labels = [["cat", "coffee", "rocket"].index(f.parent.name) for f in files]
    root.mkdir()
    (root / "batches.meta").write_bytes(py2_pickle({b"label_names": [n.encode() for n in CIFAR10_CLASSES]}))
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    for name, part in (("data_batch_1", slice(0, None, 2)), ("test_batch", slice(1, None, 2))):
        (root / name).write_bytes(py2_pickle({b"batch_label": name.encode(), b"labels": labels[part],
                                              b"data": rows[part], b"filenames": [b"x.png"] * len(labels[part])}))
    return root


def _manifest(photos: Path, root: Path) -> Path:
    """A manifest beside the photo folder (paths relative to it, as the manifest kind requires), with a split."""
    path = photos.parent / "photos.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for i, f in enumerate(sorted(photos.glob("*/*_*.jpg"))):
            writer.writerow([f.relative_to(photos.parent).as_posix(), f.parent.name, "test" if i % 5 == 0 else "train"])
    return path


def _arrays(photos: Path, root: Path) -> Path:
    files = sorted(photos.glob("*/*_*.jpg"))
    root.mkdir()
    np.savez(root / "photos.npz", images=np.stack([np.asarray(Image.open(f).resize((64, 48))) for f in files]),
             labels=np.array([["cat", "coffee", "rocket"].index(f.parent.name) for f in files]),
             class_names=np.array(["cat", "coffee", "rocket"]))
    return root / "photos.npz"


# each registered source kind: (make a SOURCE from the photo folder, the rows it must give)
SOURCE_PATHS = {
    "folder": (lambda photos, root: photos, 30),
    "csv": (_manifest, 30),
    "arrays": (_arrays, 30),
    "cifar": (_cifar_folder, 18),
    "sklearn": (lambda photos, root: "sklearn:digits", 1797),
    "keras": (lambda photos, root: "keras:mnist", None),  # offline here: one clear line, exit 2
}


def test_every_registered_source_kind_has_a_user_path():
    from transfer_cache.sources.registry import KINDS

    assert sorted(SOURCE_PATHS) == sorted(KINDS)


@pytest.mark.parametrize("kind", sorted(SOURCE_PATHS))
def test_extract_reads_every_source_kind(kind, photos, tmp_path, capsys):
    make, rows = SOURCE_PATHS[kind]
    source = make(photos, tmp_path / "source")
    code, out, err = run_main(
        "extract", [str(source), *TINY, "--cache-dir", str(tmp_path / "caches"), "--quiet"], capsys
    )
    if rows is None:
        if (Path.home() / ".keras" / "datasets" / "mnist.npz").exists():
            pytest.skip("a local Keras copy of MNIST exists, so the offline error cannot occur")
        assert code == 2 and err.count("\n") == 1 and "could not download the keras dataset 'mnist'" in err
        return
    assert code == 0, err[-3000:]
    assert out.strip().splitlines()[-1].startswith(f"{rows} rows written")


def test_both_runtimes_extract_the_photos_and_agree(photos, tmp_path, capsys):
    from transfer_cache.cache import open_cache
    from transfer_cache.runtimes.registry import list_runtimes

    vectors = {}
    for runtime in list_runtimes():
        folder = tmp_path / runtime
        code, out, err = run_main("extract", [str(photos), *TINY, "--runtime", runtime, "--cache-dir", str(folder),
                                              "--quiet"], capsys)
        assert code == 0, err[-3000:]
        (path,) = folder.glob("*.h5")
        with open_cache(path) as cache:
            assert cache.config["runtime"] == runtime
            vectors[runtime] = cache.features[:]
    reference, *others = vectors.values()
    for other in others:
        np.testing.assert_allclose(other, reference, atol=1e-4)


# --------------------------------------------------------------------------- the mistakes a hurried user makes

# (command, arguments, words the one error line must contain); {cache}, {run}, {runs}, {photos}, {file} (an
# existing file), {broken} (a truncated JPEG) and {missing} (a path that does not exist) are filled in
MISTAKES = [
    ("extract", ["{missing}"], ["{missing}"]),
    ("extract", ["{photos}", "--backbone", "alexnet"], ["alexnet"]),
    ("extract", ["{photos}", "--batch-size", "0"], ["batch size", "0"]),
    ("extract", ["{photos}", *TINY, "--cache-dir", "{file}"], ["{file}"]),
    ("fit", ["{missing}"], ["{missing}", "does not exist"]),
    ("fit", ["{cache}", "--classifier", "nope"], ["nope"]),
    ("fit", ["{cache}", "--classifier", "dense", "--param", "epochs=-5"], ["epochs", "-5"]),
    ("fit", ["{cache}", "--classifier", "knn", "--param", "n_neighbors=0"], ["n_neighbors", "0"]),
    ("fit", ["{cache}", "--test-size", "1.5"], ["1.5"]),
    ("report", ["{missing}"], ["{missing}"]),
    ("report", ["{runs}/index.csv"], ["index.csv", "runs"]),
    ("report", ["{file}"], ["{file}"]),
    ("report", ["{run}", "--out", "{file}/page.html"], ["{file}", "--out"]),
    ("report", ["{run}", "--out", "{photos}"], ["{photos}", "--out"]),
    ("inspect", ["{cache}", "--out", "{file}"], ["{file}"]),
    ("extract", ["{photos}", *TINY, "--cache-dir", "{file}/sub"], ["{file}"]),
    ("fit", ["{cache}", "--runs-dir", "{file}"], ["{file}"]),
    ("merge", ["--cache-dir", "{missing}"], ["{missing}"]),
    ("inspect", ["{missing}"], ["{missing}"]),
    ("inspect", ["{cache}", "--top", "-1"], ["top", "-1"]),
    ("inspect", ["{cache}", "--folds", "1"], ["folds", "1"]),
    ("inspect", ["{cache}", "--threshold", "2"], ["threshold", "2"]),
    ("neighbors", ["{cache}", "0", "-k", "0"], ["k", "0"]),
    ("neighbors", ["{cache}", "{missing}"], ["{missing}", "does not exist"]),
    ("neighbors", ["{cache}", "{broken}"], ["broken.jpg"]),
    ("neighbors", ["{cache}", "²"], ["²"]),
    ("neighbors", ["{cache}", "٣"], ["٣"]),
    ("neighbors", ["{cache}", "999"], ["999"]),
    ("export", ["{missing}", "out.keras"], ["{missing}"]),
    ("predict", ["{missing}", "{photos}"], ["{missing}", "python -m transfer_cache.export"]),
    ("predict", ["{run}", "{photos}"], ["is a run folder", "python -m transfer_cache.export {run}"]),
    ("fit", ["{photos}"], ["{photos} is a folder", "*.h5"]),
    ("inspect", ["{photos}"], ["{photos} is a folder"]),
]


@pytest.mark.parametrize("module, argv, words", MISTAKES, ids=[f"{m} {' '.join(a)}" for m, a, _ in MISTAKES])
def test_a_mistake_is_one_line_naming_it_with_exit_2(module, argv, words, photos, tiny_cache, tiny_run, tmp_path,
                                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not what the command wants")
    places = {"{cache}": str(tiny_cache), "{run}": str(tiny_run), "{runs}": str(tiny_run.parent),
              "{photos}": str(photos), "{file}": str(tmp_path / "notes.txt"), "{missing}": str(tmp_path / "nowhere.h5"),
              "{broken}": str(photos / "cat" / "broken.jpg")}

    def fill(text: str) -> str:
        for key, value in places.items():
            text = text.replace(key, value)
        return text

    code, out, err = run_main(module, [fill(a) for a in argv], capsys)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "error:" in lines[0], err
    for word in words:
        assert fill(word) in lines[0], (word, lines[0])
    assert "delete" not in lines[0].lower()


def test_a_glob_that_matched_several_caches_is_explained(tmp_path):
    """`inspect caches/NAME-*.h5` after a sharded run matches the merged cache and its shard files: argparse's
    "unrecognized arguments" line says what most likely happened."""
    import subprocess
    import sys

    names = [str(tmp_path / f"photos-a8a741.tiny.0123456789abcdef{s}.h5") for s in ("", ".shard0-of-2", ".shard1-of-2")]
    done = subprocess.run([sys.executable, "-m", "transfer_cache.inspect", *names], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"python -m transfer_cache.inspect: error: unrecognized arguments: {names[1]} {names[2]}: this command takes "
        "one cache file, and 2 more were given (a pattern such as caches/NAME-*.h5 matches every cache of that "
        "source, shard files .shardK-of-N.h5 included); give one file"
    )
