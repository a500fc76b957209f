"""Every file the package writes goes through here, so none is ever seen half-written or silently wrong.

A file (or folder) is written under a temporary name in its target folder (``.<name>.tmp-<pid>``), flushed and
fsynced, renamed over the target with ``os.replace`` and the folder fsynced: a crash leaves the old file or the new
one, never a mix. Any error removes the temporary, and the errors of a disk that cannot take the file (full,
read-only, over quota, permission denied, a file where a folder belongs) become one ``TransferCacheError`` line
naming the path and what to do, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import IO, Callable, Iterator

from ._errors import TransferCacheError

# the errors that mean "this disk or folder cannot take the file", in the words a user reads
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than the disk allows",
    errno.EROFS: "the disk is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a folder on its path is a file",
    errno.EISDIR: "a folder is in the way",
}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
DEFAULT_WHERE = "write it to a folder on another disk"


def disk_errno(exc: BaseException) -> int | None:
    """The errno of a disk that cannot take a file, or None for any other error.

    h5py reports a failed write inside HDF5 as a RuntimeError/OSError whose text carries ``errno = 28``.
    """
    code = getattr(exc, "errno", None)
    if code in _REASONS:
        return code
    if isinstance(exc, (OSError, RuntimeError)) and "errno = 28" in str(exc):
        return errno.ENOSPC
    return None


def disk_error(exc: BaseException, path: str | os.PathLike, *, where: str = DEFAULT_WHERE) -> TransferCacheError | None:
    """One line for a disk that cannot take ``path`` (None when ``exc`` is another kind of error).

    ``where`` is the way out the command offers, e.g. "give --runs-dir on another disk".
    """
    code = disk_errno(exc)
    if code is None:
        return None
    reason = _REASONS[code]
    if code in _FULL:
        fix = f"free some space or {where}"
    elif code in (errno.EACCES, errno.EPERM):
        fix = f"check the folder's permissions or {where}"
    elif code == errno.EISDIR:
        fix = "choose a file path, not a folder"
    else:
        fix = where
    return TransferCacheError(f"cannot write {path}: {reason}; {fix}")


@contextlib.contextmanager
def translated(path: str | os.PathLike, *, where: str = DEFAULT_WHERE,
               error: Callable[[BaseException, Path], TransferCacheError | None] | None = None) -> Iterator[None]:
    """Turn a disk error raised inside into one ``TransferCacheError`` line naming ``path``; others pass through."""
    try:
        yield
    except TransferCacheError:
        raise
    except (OSError, RuntimeError) as exc:
        message = (error or (lambda e, p: disk_error(e, p, where=where)))(exc, Path(path))
        if message is None:
            raise
        raise message from exc


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_MANY_FILES = 64


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync a file, or every file and folder under a folder (before the rename that publishes it).

    A folder of many files (a dataset's images) is flushed with one ``os.sync`` instead of a call per file.
    """
    path = Path(path)
    if not path.is_dir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return
    walked = list(os.walk(path))
    files = [os.path.join(root, name) for root, _, names in walked for name in names]
    if len(files) > _MANY_FILES:
        os.sync()
        return
    for full in files:
        if not os.path.islink(full):
            with open(full, "rb") as handle:
                os.fsync(handle.fileno())
    for root, _, _ in walked:
        fsync_dir(root)


def temporary_name(path: Path, *, keep_suffix: bool = False) -> Path:
    """``.<name>.tmp-<pid>`` beside ``path`` (plus ``path``'s suffix for writers that go by it: keras, np.savez)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}" + (path.suffix if keep_suffix else ""))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def replace_folder(temporary: Path, path: Path) -> None:
    """Put the folder ``temporary`` at ``path``; an earlier folder there is moved aside first and removed after, or
    put back when the swap fails (``os.replace`` cannot rename over a folder that is not empty)."""
    if not path.is_dir() or path.is_symlink():
        os.replace(temporary, path)
        return
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(aside)
    os.replace(path, aside)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.replace(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _inside(name: str | None, temporary: Path, path: Path) -> Path | None:
    """The file under ``path`` that ``name`` (a file under the temporary) stands for, so errors never name a
    temporary."""
    if not name:
        return None
    try:
        return path / Path(name).relative_to(temporary) if Path(name) != temporary else path
    except ValueError:
        return None


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, folder: bool = False, keep_suffix: bool = False, where: str = DEFAULT_WHERE,
              error: Callable[[BaseException, Path], TransferCacheError | None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, publish it at ``path`` atomically.

    For writers that want a file name (``np.savez``, ``joblib.dump``, ``h5py.File``, keras ``save``, plotly): write
    the file (or, with ``folder=True``, a folder: create it) at the yielded path. It is fsynced, renamed over
    ``path`` and the folder fsynced. On any error the temporary is removed; disk errors become one line naming
    ``path`` (or the file under it that failed). ``error(exc, path)`` may word that line itself.
    """
    path = Path(path)
    temporary = temporary_name(path, keep_suffix=keep_suffix)
    with translated(path, where=where, error=error):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove(temporary)  # left by an earlier process that had this pid
            try:
                yield temporary
                fsync_tree(temporary)
                if folder:
                    replace_folder(temporary, path)
                else:
                    os.replace(temporary, path)
                fsync_dir(path.parent)
            finally:
                _remove(temporary)
        except OSError as exc:
            named = _inside(exc.filename, temporary, path)
            if named is None and exc.filename is not None and not path.absolute().is_relative_to(
                    Path(os.fsdecode(exc.filename)).absolute()):  # an input it read, not the output or its folders
                raise TransferCacheError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc
            if named is not None:
                exc.filename = str(named)
                if disk_errno(exc) is not None:
                    message = (error or (lambda e, p: disk_error(e, p, where=where)))(exc, named)
                    if message is not None:
                        raise message from exc
            raise


@contextlib.contextmanager
def open_replacing(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                   newline: str | None = None, where: str = DEFAULT_WHERE) -> Iterator[IO]:
    """``open`` for writing, atomically: yields the handle of the temporary file (see ``replacing``)."""
    if "b" in mode:
        encoding = None
    with replacing(path, where=where) as temporary:
        with writing(temporary), open(temporary, mode, encoding=encoding, newline=newline) as handle:
            yield handle  # (closed, then fsynced by replacing)


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", newline: str | None = None,
               where: str = DEFAULT_WHERE) -> Path:
    with open_replacing(path, "w", encoding=encoding, newline=newline, where=where) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, *, where: str = DEFAULT_WHERE) -> Path:
    with open_replacing(path, "wb", where=where) as handle:
        handle.write(data)
    return Path(path)


def write_json(path: str | os.PathLike, payload, *, indent: int | None = 2, default=str,
               where: str = DEFAULT_WHERE) -> Path:
    return write_text(path, json.dumps(payload, indent=indent, default=default) + "\n", where=where)


def blame(exc: BaseException, path: str | os.PathLike) -> None:
    """Give an OSError that names no file (joblib's, a full disk's at close) the file it was writing."""
    if isinstance(exc, OSError) and not exc.filename:
        exc.filename = str(path)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Inside a ``replacing`` folder: an OSError naming no file is about ``path`` (see ``blame``)."""
    try:
        yield
    except OSError as exc:
        blame(exc, path)
        raise


@contextlib.contextmanager
def publishing_together(folder: str | os.PathLike, *, where: str = DEFAULT_WHERE) -> Iterator[Path]:
    """Yield a staging folder inside ``folder``; every file written there is published into ``folder`` together.

    Only when the block ends normally is each file fsynced and renamed into place (the folder's other files are never
    touched). The files it replaces are hard-linked aside first, so a rename that fails half-way puts every earlier
    one back: a failed run leaves the previous outputs as they were, and no temporary behind. Staging folders of
    dead processes (``.publish.tmp-<pid>``) are removed first.
    """
    folder = Path(folder)
    staging = folder / f".publish.tmp-{os.getpid()}"
    with translated(folder, where=where):
        folder.mkdir(parents=True, exist_ok=True)
        sweep_dead(folder, ".publish.tmp-")
        _remove(staging)
        staging.mkdir()
        try:
            try:
                yield staging
                names = sorted(p.name for p in staging.iterdir() if not p.name.startswith(".old-"))
                fsync_tree(staging)
            except OSError as exc:
                named = _inside(exc.filename, staging, folder)
                if named is not None:
                    exc.filename = str(named)
                    message = disk_error(exc, named, where=where)
                    if message is not None:
                        raise message from exc
                raise
            kept = []
            for name in names:
                if (folder / name).is_file():
                    try:
                        os.link(folder / name, staging / f".old-{name}")
                    except OSError:  # a disk without hard links (vfat, some network mounts): a copy does
                        shutil.copy2(folder / name, staging / f".old-{name}")
                    kept.append(name)
            done = []
            try:
                for name in names:
                    os.replace(staging / name, folder / name)
                    done.append(name)
            except BaseException:
                for name in done:
                    if name in kept:
                        os.replace(staging / f".old-{name}", folder / name)
                    else:
                        _remove(folder / name)
                raise
            fsync_dir(folder)
        finally:
            _remove(staging)


def sweep_dead(folder: Path, prefix: str) -> None:
    """Remove ``<prefix><pid>`` entries in ``folder`` whose process no longer exists (killed while writing)."""
    for entry in folder.glob(f"{prefix}*"):
        pid = entry.name[len(prefix):]
        if pid.isdigit() and not process_alive(int(pid)):
            _remove(entry)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed process its parent has not waited for yet)."""
    if pid <= 0:
        return True  # not a pid we wrote: leave the folder alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]
