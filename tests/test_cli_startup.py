"""Every command answers ``--help`` and the mistakes it can see in its arguments without starting TensorFlow (4-10 s
of a user's wait for a typo), with one line on stderr naming the file or value, and exit code 2.

The commands are read from the package itself (setup.cfg's console scripts and every module with a ``main``), so a
new command is checked here too, and fails until it is given a typical mistake below.
"""

from __future__ import annotations

import ast
import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "transfer_cache"
HEAVY = ("tensorflow", "keras", "openvino")

# runs a command as ``python -m`` does, then reports which heavy libraries the process had imported by its exit
WRAPPER = """
import atexit, json, runpy, sys
atexit.register(lambda: sys.stderr.write("\\n@@HEAVY@@" + json.dumps([m for m in {heavy!r} if m in sys.modules])))
sys.argv = [{module!r}] + {args!r}
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


def _commands() -> list[str]:
    setup = configparser.ConfigParser()
    setup.read(PACKAGE.parent / "setup.cfg")
    scripts = setup.get("options.entry_points", "console_scripts").split("\n")
    names = {line.split("=")[1].strip().split(":")[0].rsplit(".", 1)[1] for line in scripts if "=" in line}
    for path in PACKAGE.glob("*.py"):  # a module with a top-level main() is a command too
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            names.add(path.stem)
    return sorted(names)


COMMANDS = _commands()


def run_command(command: str, args: list[str], cwd: Path) -> tuple[int, str, str, list[str]]:
    """(exit code, stdout, stderr without the report line, heavy modules imported) of one fresh process."""
    module = f"transfer_cache.{command}"
    script = WRAPPER.format(heavy=HEAVY, module=module, args=args)
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120)
    err, _, heavy = done.stderr.rpartition("\n@@HEAVY@@")
    return done.returncode, done.stdout, err, json.loads(heavy)


def test_the_commands_are_found():
    assert {"extract", "fit", "export", "predict", "report", "inspect", "neighbors", "merge", "bench"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_does_not_start_tensorflow(command, tmp_path):
    code, out, err, heavy = run_command(command, ["--help"], tmp_path)
    assert code == 0, err
    assert out.startswith(f"usage: python -m transfer_cache.{command} ")
    assert heavy == [], f"{command} --help imported {heavy}"


def _mistakes(tmp_path: Path) -> dict[str, list[tuple[list[str], str | None]]]:
    """Per command: (arguments, the exact error after "python -m transfer_cache.<command>: error: "), run in
    ``tmp_path`` holding a file ``a_file`` and an (empty) ``photo.png``."""
    return {
        "extract": [
            (["no_such_folder"], None),  # the message lists every source kind: checked by its start below
            (["sklearn:digits", "--cache-dir", "a_file", "--backbone", "tiny", "--weights", "none"],
             "cache folder a_file is a file, not a folder; "
             "give --cache-dir a folder path (it is created when missing)"),
            (["sklearn:digits", "--batch-size", "0"], "batch size must be a whole number of at least 1; got 0"),
        ],
        "fit": [
            (["missing.h5", "--classifier", "dense"],
             f"cache file {tmp_path.resolve() / 'missing.h5'} does not exist; "
             f"run python -m transfer_cache.extract first"),
            (["missing.h5", "--test-size", "2"], "test size must be a fraction between 0 and 1, e.g. 0.2; got 2.0"),
            (["missing.h5", "--runs-dir", "a_file"],
             "runs folder a_file is a file, not a folder; give --runs-dir a folder path (it is created when missing)"),
        ],
        "export": [
            (["no_run", "out.keras"],
             "run folder no_run does not exist; pass a folder under runs/ written by python -m transfer_cache.fit"),
        ],
        "predict": [
            (["missing.keras", "photo.png"],
             "model missing.keras does not exist; write it with python -m transfer_cache.export RUN missing.keras"),
            (["a_file", "photo.png"],
             "a_file is not a model exported by transfer_cache (not a .keras file); write it with python -m "
             "transfer_cache.export RUN a_file"),
            (["missing.keras", "photo.png", "--top", "0"], "--top must be a positive integer; got 0"),
        ],
        "report": [
            (["missing.h5"], "missing.h5 does not exist; pass a run folder (runs/<run_id>), the runs folder (runs/) "
                             "or a cache file (.h5)"),
        ],
        "inspect": [
            (["missing.h5"], "cache file missing.h5 does not exist; run python -m transfer_cache.extract first"),
            (["missing.h5", "--out", "a_file/pages"],
             "output folder a_file/pages cannot be created: a_file is a file, not a folder; give --out a folder path "
             "(it is created when missing)"),
        ],
        "neighbors": [
            (["missing.h5", "3"], "cache file missing.h5 does not exist; run python -m transfer_cache.extract first"),
        ],
        "merge": [
            (["missing.shard0-of-2.h5"],
             "shard file missing.shard0-of-2.h5 does not exist; extract that shard first (--shard 0/2)"),
        ],
        "export_vectors": [
            (["missing.h5", "v.parquet"], "cache file missing.h5 does not exist; run python -m transfer_cache.extract "
                                          "first"),
            (["missing.h5", "a_file/v.parquet"],
             "cannot write a_file/v.parquet: a_file is a file, not a folder; choose another OUT path"),
        ],
        "import_vectors": [
            (["missing.parquet"], "missing.parquet does not exist; give a Parquet file of vectors, e.g. one written by "
                                  "python -m transfer_cache.export_vectors CACHE OUT.parquet"),
            (["missing.parquet", "--cache-dir", "a_file"],
             "cache folder a_file is a file, not a folder; give --cache-dir a folder path (it is created when "
             "missing)"),
        ],
        "bench": [
            (["--parts", "nope"],
             "parts must name parts among 'backbone', 'extract', 'peer', 'decode', 'phone', 'first-run', 'seeds', "
             "'hvass', 'io', 'memory', 'rows'; got 'nope'"),
        ],
        "datasets": [
            (["nope"], "dataset must be one of 'fashion_mnist', 'dogs_vs_cats', 'flowers', 'cifar10', 'vehicles'; "
                       "got 'nope'"),
        ],
    }


def test_every_command_has_a_typical_mistake():
    assert sorted(_mistakes(Path("."))) == COMMANDS


CASES = [(command, i) for command, cases in _mistakes(Path(".")).items() for i in range(len(cases))]


@pytest.mark.parametrize("command, case", CASES)
def test_a_mistake_is_one_line_exit_2_before_tensorflow(command, case, tmp_path):
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "photo.png").write_bytes(b"")
    args, message = _mistakes(tmp_path)[command][case]
    code, out, err, heavy = run_command(command, args, tmp_path)
    prefix = f"python -m transfer_cache.{command}: error: "
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    if message is None:
        assert err.startswith(f"{prefix}SOURCE '{args[0]}' does not exist: SOURCE can be an image folder"), err
    else:
        assert err == f"{prefix}{message}\n"
    assert heavy == [], f"{command} {' '.join(args)} imported {heavy} before reporting the mistake"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "photo.png"]  # nothing created on the way


def test_tensorflow_imported_by_the_work_of_a_command_stays_quiet():
    """The start-up notices (oneDNN, CPU features) that TensorFlow's native code prints when imported, here through
    Keras as a head or an export would import it, stay off the terminal of a command."""
    script = (
        "from transfer_cache import _cli; _cli.quiet_tensorflow_when_imported(); "
        "import keras, tensorflow as tf; print(int(tf.constant(2).numpy()), keras.__version__ is not None)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "True"]
    assert done.stderr == ""
