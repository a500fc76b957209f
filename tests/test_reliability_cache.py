"""Cache misuse, concurrency and full disks: a cache is read only when it is complete and really ours.

Damaged, foreign, renamed or newer caches give clear messages; extract recomputes a damaged cache instead of
reading it; two writers never write the same cache; a reader never sees a partial file while the cache is being
rewritten; a full disk leaves the previous cache byte-identical and no stray temporary file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract

from conftest import make_class_folder, mounted, write_image

TINY = dict(backbone="tiny", weights="none", progress=False)
_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture
def made(tmp_path):
    """A small folder and its finished cache."""
    root = make_class_folder(tmp_path / "images", per_class=3)
    result = extract(str(root), cache_dir=tmp_path / "caches", **TINY)
    return root, result


def _stray(folder: Path) -> list[str]:
    """Temporary files and work folders left behind (locks are permanent and harmless)."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".parts"))


# --------------------------------------------------------------------------- misuse


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "the file is damaged"),
        ("garbage", "is damaged (not an HDF5 file any more); "
                    "python -m transfer_cache.extract on its source writes a new one in its place"),
        ("foreign", "is an HDF5 file but not a cache (no format='transfer_cache' attribute); "
                    "expected a cache file written by python -m transfer_cache.extract"),
        ("no-rows", "is damaged"),
    ],
)
def test_damaged_or_foreign_files_are_refused_and_recomputed(made, capsys, damage, message):
    root, result = made
    path = result.path
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:2048])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "foreign":
        path.unlink()
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(10)
    else:  # a cache missing a dataset, e.g. written by a tool that stopped half-way
        with h5py.File(path, "a") as f:
            del f["labels"]
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        open_cache(path)
    again = extract(str(root), cache_dir=path.parent, **TINY)
    assert not again.hit and again.computed == 9
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and f"{path}" in err
    assert err.rstrip().endswith(f"; kept as {path.name}.unreadable and recomputing it")
    with open_cache(path) as cache:
        assert len(cache) == 9
    assert path.with_name(path.name + ".unreadable").exists()  # the unreadable file is kept aside, never deleted
    path.write_bytes(b"damaged again")  # a second one is kept beside the first, not over it
    extract(str(root), cache_dir=path.parent, **TINY)
    assert path.with_name(path.name + ".unreadable-2").read_bytes() == b"damaged again"


def test_a_newer_format_is_refused_and_never_deleted_by_an_older_reader(made):
    root, result = made
    with h5py.File(result.path, "a") as f:
        f.attrs["format_version"] = 99
    before = result.path.read_bytes()
    message = (
        f"{result.path} was written in cache format 99, newer than this transfer_cache reads (up to 1); "
        "upgrade with pip install -U transfer_cache"
    )
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        open_cache(result.path)
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        extract(str(root), cache_dir=result.path.parent, **TINY)
    assert result.path.read_bytes() == before


def test_a_cache_renamed_to_another_configurations_name_is_noticed(made, tmp_path):
    root, result = made
    other = extract(str(root), cache_dir=result.path.parent, pooling="max", **TINY)
    renamed = other.path.with_name(other.path.name.replace(other.path.name.split(".")[-2], "0123456789abcdef"))
    shutil.copy(result.path, renamed)
    with open_cache(result.path) as cache:
        expected = cache.fingerprint
    with pytest.raises(
        TransferCacheError,
        match=re.escape(
            f"cache {renamed} holds fingerprint {expected} but its name says 0123456789abcdef: "
            "it was renamed or copied from another feature configuration; "
            f"give it back its name ({renamed.name.replace('0123456789abcdef', expected)})"
        ),
    ):
        open_cache(renamed)
    # the max-pooled cache's own name, holding the avg-pooled vectors: extract must not reuse it
    shutil.copy(result.path, other.path)
    again = extract(str(root), cache_dir=result.path.parent, pooling="max", **TINY)
    assert not again.hit and again.computed == 9
    with open_cache(again.path) as cache:
        assert cache.config["pooling"] == "max"


def test_a_cache_with_a_plain_name_still_opens(made, tmp_path):
    _, result = made
    plain = tmp_path / "my features.h5"
    shutil.copy(result.path, plain)
    with open_cache(plain) as cache:
        assert len(cache) == 9


def test_images_changed_in_place_are_recomputed(made, tmp_path):
    root, result = made
    changed = sorted(root.rglob("*.png"))[4]
    write_image(changed, seed=999, size=(40, 32))  # same path, new pixels
    again = extract(str(root), cache_dir=result.path.parent, **TINY)
    assert not again.hit and again.computed == 1 and again.reused == 8
    fresh = extract(str(root), cache_dir=tmp_path / "fresh", **TINY)
    with open_cache(again.path) as a, open_cache(fresh.path) as b:
        assert a.ids == b.ids and a.paths == b.paths
        np.testing.assert_allclose(a.features[:], b.features[:], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- concurrency


_WRITER = textwrap.dedent(
    """
    import sys
    from transfer_cache.extract import extract
    extract(sys.argv[1], cache_dir=sys.argv[2], backbone="tiny", weights="none", batch_size=2, progress=False)
    """
)


def test_two_writers_one_refused_then_one_waits_for_a_hit(tmp_path):
    root = make_class_folder(tmp_path / "images", per_class=120)
    caches = tmp_path / "caches"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(caches)], env=_ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(caches.glob(".*.parts/part-*")) and time.monotonic() < deadline and writer.poll() is None:
            time.sleep(0.01)
        assert writer.poll() is None, "the first writer finished too early"
        with pytest.raises(TransferCacheError, match=re.escape("another extraction is writing")):
            extract(str(root), cache_dir=caches, **TINY)
        waited = extract(str(root), cache_dir=caches, lock_timeout=300, **TINY)
    finally:
        _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err.decode()
    assert waited.hit and waited.computed == 0 and waited.rows == 360


_READER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from transfer_cache.cache import open_cache
    path, stop = sys.argv[1], float(sys.argv[2])
    opened, sizes, problems = 0, set(), []
    while time.time() < stop:
        try:
            with open_cache(path) as cache:
                x = cache.features[:]
                n = len(cache)
                if not (x.shape[0] == n == len(cache.ids) == len(cache.paths) == cache.config["rows"]):
                    problems.append(f"row counts differ: {x.shape[0]}, {n}, {len(cache.ids)}")
                if not np.isfinite(x).all() or (np.abs(x).sum(axis=1) == 0).any():
                    problems.append("unwritten (zero) feature rows")
                opened += 1
                sizes.add(n)
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"opened": opened, "sizes": sorted(sizes), "problems": problems[:5]}))
    """
)


def test_a_reader_never_sees_a_partial_cache_while_it_is_rewritten(tmp_path):
    root = make_class_folder(tmp_path / "images", per_class=20)
    caches = tmp_path / "caches"
    first = extract(str(root), cache_dir=caches, **TINY)
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(first.path), str(time.time() + 7)], env=_ENV, stdout=subprocess.PIPE
    )
    rewrites = 0
    deadline = time.monotonic() + 5
    k = 0
    while time.monotonic() < deadline:  # each new image makes extract rewrite (and replace) the whole file
        k += 1
        write_image(root / "cat" / f"new_{k:03d}.png", seed=5000 + k)
        result = extract(str(root), cache_dir=caches, **TINY)
        assert result.path == first.path and result.computed == 1
        rewrites += 1
    out, _ = reader.communicate(timeout=120)
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["problems"] == []
    assert rewrites >= 3 and seen["opened"] >= 5 and len(seen["sizes"]) >= 2, seen


# --------------------------------------------------------------------------- full disks


def _fill(folder: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    filler = folder / "filler.bin"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("leave, phase", [(4096, "parts"), (150_000, "assembly")])
def test_a_full_disk_keeps_the_previous_cache_and_leaves_no_stray_file(tmp_path, leave, phase):
    root = make_class_folder(tmp_path / "images", per_class=10)
    with mounted(tmp_path / "disk", "size=3m") as disk:
        caches = disk / "caches"
        options = dict(TINY, pooling="flatten", batch_size=4)  # 8 KB per row
        first = extract(str(root), cache_dir=caches, **options)
        before = first.path.read_bytes()
        for k in range(12):
            write_image(root / "dog" / f"more_{k:02d}.png", seed=900 + k)
        filler = _fill(disk, leave)
        with pytest.raises(TransferCacheError, match=re.escape("no space left on the device while writing")) as caught:
            extract(str(root), cache_dir=caches, **options)
        assert "the previous cache (if any) is untouched" in str(caught.value)
        if phase == "parts":
            assert ".parts" in str(caught.value)
        else:
            assert str(caught.value).startswith(f"no space left on the device while writing {first.path}:")
            assert len(list(caches.glob(".*.parts/part-*.npz"))) == 3  # the finished batches are kept
        assert first.path.read_bytes() == before
        assert not list(caches.glob(".*.tmp-*")) and not list(caches.glob(".*.parts/*.tmp*"))
        with open_cache(first.path) as cache:
            assert len(cache) == 30
        filler.unlink()
        again = extract(str(root), cache_dir=caches, **options)
        assert again.rows == 42 and again.computed == (0 if phase == "assembly" else 12)
        assert _stray(caches) == []


def test_an_injected_enospc_at_the_final_rename_keeps_the_previous_cache(made, monkeypatch):
    root, result = made
    before = result.path.read_bytes()
    write_image(root / "cat" / "extra.png", seed=77)

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(TransferCacheError, match=re.escape("no space left on the device while writing")):
        extract(str(root), cache_dir=result.path.parent, **TINY)
    monkeypatch.undo()
    assert result.path.read_bytes() == before
    assert not [name for name in _stray(result.path.parent) if ".tmp" in name]
    assert extract(str(root), cache_dir=result.path.parent, **TINY).rows == 10
    assert _stray(result.path.parent) == []
