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
import pickle
import re
import shlex
import subprocess
import sys
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
    code, out, err = run_main(module, argv + ["--runs-dir", "runs"] * (module == "fit"), capsys)
    assert code == 0, err[-3000:]
    assert out.strip(), "every command ends with a one-line summary"


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    """The tour's commands in a fresh folder, through the shell, with the embedded backbone and default options."""
    (tmp_path / "tests").symlink_to(REPO / "tests")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for line in readme_commands(section=TOUR):
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{line}\n{done.stderr[-3000:]}"
