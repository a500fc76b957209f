"""Nothing the package writes is half-written or silently wrong: the one write helper, and every command on a real
full (or read-only) disk.

The helper's cases inject each errno where a disk reports it (the writer, fsync, the rename); the command cases mount
a small tmpfs (root only; skipped with the reason elsewhere), fill it, and run what a user types.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

from transfer_cache import _atomic
from transfer_cache._errors import TransferCacheError

from conftest import make_class_folder, mounted, write_image

EXPECTED = {  # errno -> (the reason, the fix) of the one line
    "ENOSPC": ("no space left on the device", "free some space or {where}"),
    "EDQUOT": ("the disk quota is used up", "free some space or {where}"),
    "EROFS": ("the disk is read-only", "{where}"),
    "ENOTDIR": ("a folder on its path is a file", "{where}"),
    "EISDIR": ("a folder is in the way", "choose a file path, not a folder"),
    "EACCES": ("permission denied", "check the folder's permissions or {where}"),
}
WHERE = "give --out a folder on another disk"


def _line(path, name: str) -> str:
    reason, fix = EXPECTED[name]
    return f"cannot write {path}: {reason}; {fix.format(where=WHERE)}"


def _listing(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.rglob("*"))
    }


def _oserror(name: str, filename=None) -> OSError:
    code = getattr(errno, name)
    return OSError(code, os.strerror(code), *([filename] if filename else []))


# --------------------------------------------------------------------------- the helper


def test_a_file_is_written_whole_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "sub" / "page.html"
    _atomic.write_text(target, "new")
    _atomic.write_text(target, "newer")
    _atomic.write_json(tmp_path / "a.json", {"x": [1, 2]})
    _atomic.write_bytes(tmp_path / "b.bin", b"\0\1")
    assert target.read_text() == "newer" and (tmp_path / "a.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    assert (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "page.html", "sub"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("where_it_fails", ["write", "fsync", "replace"])
def test_each_disk_error_is_one_line_naming_the_path_and_the_old_file_stays(
        name, where_it_fails, tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old")
    before = _listing(tmp_path)

    def fail(*args, **kwargs):
        raise _oserror(name)

    if where_it_fails == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    elif where_it_fails == "replace":
        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(TransferCacheError) as caught:
        with _atomic.open_replacing(target, where=WHERE) as handle:
            handle.write("new")
            if where_it_fails == "write":  # what a writer (joblib, np.savez) raises on a full disk
                fail()
    monkeypatch.undo()
    assert str(caught.value) == _line(target, name)
    assert _listing(tmp_path) == before  # the old file whole, no temporary


def test_an_hdf5_full_disk_message_counts_as_no_space(tmp_path):
    error = _atomic.disk_error(
        RuntimeError("Can't write data (file write failed: ..., errno = 28, ...)"), tmp_path / "x.h5"
    )
    assert str(error).startswith(f"cannot write {tmp_path / 'x.h5'}: no space left on the device;")


def test_other_errors_pass_through_unchanged_and_still_clean_up(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    for raised in (ValueError("bad value"), _oserror("EIO"), KeyboardInterrupt()):
        with pytest.raises(type(raised)) as caught:
            with _atomic.replacing(target) as temporary:
                temporary.write_text("half")
                raise raised
        assert caught.value is raised
        assert list(tmp_path.iterdir()) == []


def test_a_writer_given_a_path_keeps_the_suffix_it_goes_by(tmp_path):
    import numpy as np

    target = tmp_path / "head.npz"
    with _atomic.replacing(target, keep_suffix=True) as temporary:
        assert temporary.suffix == ".npz" and temporary.name.startswith(".head.npz.tmp-")
        np.savez(temporary, a=np.arange(3))  # np.savez adds .npz to a name without it: the name must already end so
    assert np.load(target)["a"].tolist() == [0, 1, 2] and [p.name for p in tmp_path.iterdir()] == ["head.npz"]


def test_a_folder_replaces_an_earlier_one_and_an_error_names_the_file_inside(tmp_path):
    target = tmp_path / "export"
    with _atomic.replacing(target, folder=True) as temporary:
        temporary.mkdir()
        (temporary / "a.txt").write_text("1")
    with _atomic.replacing(target, folder=True) as temporary:
        temporary.mkdir()
        (temporary / "b.txt").write_text("2")
    assert _listing(tmp_path) == {"export": b"<dir>", "export/b.txt": b"2"}
    with pytest.raises(TransferCacheError) as caught:
        with _atomic.replacing(target, folder=True, where=WHERE) as temporary:
            temporary.mkdir()
            with _atomic.writing(temporary / "model"):  # joblib's OSError names no file
                raise _oserror("ENOSPC")
    assert str(caught.value) == _line(target / "model", "ENOSPC")
    assert _listing(tmp_path) == {"export": b"<dir>", "export/b.txt": b"2"}


def test_a_folder_swap_that_fails_puts_the_earlier_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real = os.replace

    def fail_the_swap(src, dst):
        if Path(src).name.startswith(".export.tmp-"):
            raise _oserror("ENOSPC")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_the_swap)
    with pytest.raises(TransferCacheError, match="no space left"):
        with _atomic.replacing(target, folder=True) as temporary:
            temporary.mkdir()
            (temporary / "new.txt").write_text("new")
    assert _listing(tmp_path) == {"export": b"<dir>", "export/old.txt": b"old"}


def test_files_published_together_appear_together_beside_the_user_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "a.csv").write_text("old a")
    with _atomic.publishing_together(tmp_path) as staging:
        (staging / "a.csv").write_text("new a")
        (staging / "b.csv").write_text("new b")
        assert not (tmp_path / "b.csv").exists()  # nothing is visible before the block ends
    assert _listing(tmp_path) == {"a.csv": b"new a", "b.csv": b"new b", "notes.txt": b"mine"}


@pytest.mark.parametrize("fails_at", ["write", "second rename"])
def test_files_published_together_are_all_old_after_a_failure(fails_at, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).write_text(f"old {name}")
    before = _listing(tmp_path)
    real, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise _oserror("ENOSPC", str(dst))
        return real(src, dst)

    with pytest.raises(TransferCacheError, match="no space left on the device"):
        with _atomic.publishing_together(tmp_path, where=WHERE) as staging:
            (staging / "a.csv").write_text("new a")
            (staging / "b.csv").write_text("new b")
            (staging / "c.csv").write_text("new c")
            if fails_at == "write":
                with _atomic.writing(staging / "c.csv"):
                    raise _oserror("ENOSPC")
            monkeypatch.setattr(os, "replace", second_fails)
    monkeypatch.undo()
    assert _listing(tmp_path) == before


def test_a_dead_process_staging_folder_is_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".publish.tmp-{dead.pid}"
    stale.mkdir()
    (stale / "a.csv").write_text("half")
    with _atomic.publishing_together(tmp_path) as staging:
        (staging / "a.csv").write_text("whole")
    assert _listing(tmp_path) == {"a.csv": b"whole"}


# --------------------------------------------------------------------------- real disks (tmpfs mounts, root only)


def _fill(folder: Path, leave: int) -> None:
    """A filler file that leaves about ``leave`` bytes free."""
    stats = os.statvfs(folder)
    with open(folder / "filler.bin", "wb") as handle:
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def test_a_read_only_disk_is_one_line_and_leaves_nothing(tmp_path):
    with mounted(tmp_path / "ro", "size=64k,ro") as disk:
        with pytest.raises(TransferCacheError) as caught:
            _atomic.write_text(disk / "page.html", "x", where=WHERE)
        assert str(caught.value) == _line(disk / "page.html", "EROFS")
        with pytest.raises(TransferCacheError) as caught:
            with _atomic.publishing_together(disk / "inspect", where=WHERE):
                pass
        assert str(caught.value) == _line(disk / "inspect", "EROFS")
        assert list(disk.iterdir()) == []


def test_a_full_disk_is_one_line_for_the_helper_itself(tmp_path):
    with mounted(tmp_path / "disk", "size=64k") as disk:
        (disk / "page.html").write_text("old")
        with pytest.raises(TransferCacheError) as caught:
            _atomic.write_bytes(disk / "page.html", b"x" * 200_000, where=WHERE)
        assert str(caught.value) == _line(disk / "page.html", "ENOSPC")
        assert _listing(disk) == {"page.html": b"old"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A small image folder, its tiny-backbone cache, a logreg run and its export: what the commands read."""
    from transfer_cache.export import export_model
    from transfer_cache.extract import extract
    from transfer_cache.fit import fit

    base = tmp_path_factory.mktemp("atomic")
    images = make_class_folder(base / "images", per_class=5)
    cache = extract(str(images), cache_dir=base / "caches", backbone="tiny", weights="none", runtime="tensorflow",
                    progress=False).path  # (the reference runtime: no OpenVINO conversion to wait for)
    (run,) = fit([cache], classifier="logreg", runs_dir=base / "runs", progress=False)
    model = export_model(run.run_dir, base / "model.keras")
    return {"images": images, "cache": cache, "run": run.run_dir, "model": model}


def _run(module: str, argv: list[str], capsys) -> tuple[int, list[str]]:
    import importlib

    capsys.readouterr()
    code = importlib.import_module(f"transfer_cache.{module}").main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _commands(made, disk: Path) -> dict[str, tuple[str, list[str], Path]]:
    """command -> (module, argv, what it writes on the disk)."""
    return {
        "inspect": ("inspect", [str(made["cache"]), "--out", str(disk / "x")], disk / "x"),
        "fit": ("fit", [str(made["cache"]), "--runs-dir", str(disk / "runs"), "--quiet"], disk / "runs"),
        "report": ("report", [str(made["cache"]), "--out", str(disk / "p.html"), "--quiet", "--no-tsne"],
                   disk / "p.html"),
        "predict": ("predict", [str(made["model"]), str(made["images"]), "--out", str(disk / "p.csv"), "--quiet"],
                    disk / "p.csv"),
        "export": ("export", [str(made["run"]), str(disk / "m.keras")], disk / "m.keras"),
        "extract": ("extract", [str(made["images"]), "--cache-dir", str(disk / "caches"), "--backbone", "tiny",
                                "--weights", "none", "--runtime", "tensorflow", "--quiet"], disk / "caches"),
    }


NAMED = {  # what the one line names: the path written (a regular expression, after "cannot write" or "while writing")
    "inspect": r"{disk}/x/(duplicates|label_issues|outliers)\.csv|{disk}/x/inspect\.html|{disk}/x",
    "fit": r"{disk}/runs/[^:]+",
    "report": r"{disk}/p\.html",
    "predict": r"{disk}/p\.csv",
    "extract": r"{disk}/caches/[^:]+",
    "export": r"{disk}/m\.keras",
}


@pytest.mark.parametrize("command, leave", [
    ("inspect", 2048), ("fit", 2048), ("fit", 3 * 4096), ("report", 2048), ("predict", 2048), ("extract", 2048),
    ("export", 2048),
], ids=["inspect", "fit", "fit-model", "report", "predict", "extract", "export"])
def test_a_real_full_disk_ends_in_one_line_and_keeps_the_previous_outputs(command, leave, made, tmp_path, capsys):
    """``leave``: the bytes left free; 3 pages let a run's config, metrics and predictions in, not its model
    (joblib)."""
    size = "32m" if command == "report" else "2m"  # the cache page embeds its figures: a few MB
    with mounted(tmp_path / "disk", f"size={size}") as disk:
        module, argv, written = _commands(made, disk)[command]
        if command == "inspect":  # --out may be a folder of the user's: their files are never touched
            (disk / "x").mkdir()
            (disk / "x" / "notes.txt").write_text("mine")
        code, err = _run(module, argv, capsys)
        assert code == 0, err
        if command == "extract":  # a second extraction has new rows to compute and a new file to assemble
            for k in range(8):
                write_image(made["images"] / "cat" / f"more_{k}.png", seed=500 + k)
        before = _listing(disk)
        _fill(disk, leave)
        try:
            code, err = _run(module, argv, capsys)
        finally:
            for extra in made["images"].rglob("more_*.png"):
                extra.unlink()
        assert code == 2 and len(err) == 1, err
        pattern = NAMED[command].format(disk=re.escape(str(disk)))
        assert (
            "no space left on the device" in err[0] and re.search(rf"(cannot write|while writing) ({pattern}):", err[0])
        ), err[0]
        if leave > 4096 and command == "fit":
            assert re.search(r"/runs/[^/]+/model(/[^:]+)?: no space left", err[0]), err[0]
        (disk / "filler.bin").unlink()
        after = _listing(disk)
        assert _temporaries(disk) == []
        if command == "extract":  # the finished batches are kept for the next run: only they may be new
            after = {k: v for k, v in after.items() if ".parts" not in k}
            before = {k: v for k, v in before.items() if ".parts" not in k}
        assert after == before


@pytest.mark.parametrize("command", ["inspect", "fit", "report", "predict", "extract", "export"])
def test_a_read_only_disk_ends_each_command_in_one_line(command, made, tmp_path, capsys):
    with mounted(tmp_path / "ro", "size=64k,ro") as disk:
        module, argv, written = _commands(made, disk)[command]
        if command == "extract":  # the disk itself as the cache folder, and a folder extract must create on it
            argv[argv.index("--cache-dir") + 1] = str(disk)
            missing = [str(disk / "new") if arg == str(disk) else arg for arg in argv]
            assert _run(module, missing, capsys) == (2, [
                f"python -m transfer_cache.extract: error: cannot write {disk / 'new'}: the disk is read-only; "
                "give --cache-dir a folder on a writable disk"])
        code, err = _run(module, argv, capsys)
        assert code == 2 and len(err) == 1, err
        assert re.search(rf"cannot write {re.escape(str(disk))}/[^:]*: the disk is read-only; ", err[0]), err[0]
        assert list(disk.iterdir()) == []


def test_a_download_the_disk_cannot_take_is_named_as_a_disk_problem_not_the_network(tmp_path, monkeypatch):
    """A full disk during a download used to read "could not download ...; this command needs the network"."""
    import io
    import urllib.request

    from transfer_cache import datasets

    class Response(io.BytesIO):
        headers: dict = {}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(b"x" * 300_000))
    with mounted(tmp_path / "disk", "size=64k") as disk:
        target = disk / ".downloads" / "archive.tgz"
        with pytest.raises(TransferCacheError) as caught:
            datasets._download("https://example.org/archive.tgz", target, progress=False)
        assert str(caught.value) == (f"cannot write {target}: no space left on the device; free some space or give "
                                     "--dest a folder on another disk")
        assert _listing(disk) == {".downloads": b"<dir>"}


def test_an_input_that_cannot_be_read_inside_the_block_is_named_as_a_read_not_as_the_output(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        TransferCacheError, match=re.escape(f"cannot read {tmp_path / 'afile' / 'in.gz'}: Not a directory")
    ):
        with _atomic.replacing(tmp_path / "out", folder=True) as temporary:
            temporary.mkdir()
            open(tmp_path / "afile" / "in.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
