"""The runs index, ``runs/index.csv``: one row per finished run folder, appended under a lock.

Rows are appended atomically (temporary file + ``os.replace``, under an ``flock``) once a run folder is complete. The
index heals itself: a finished folder a killed fit did not list is listed by the next append, and temporary folders
of dead fits are swept. A damaged index is refused by its readers in one line; ``rebuild_index`` writes it anew.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import fcntl
import io
import json
import math
import os
import shutil
from pathlib import Path

from .. import _atomic
from .._errors import TransferCacheError
from .folder import CONFIG, INDEX, KEPT_INDEX, METRICS, WHERE, RunConfig, is_run_dir

INDEX_COLUMNS = (
    "run_id", "created", "classifier", "backbone", "fingerprint", "cache", "accuracy", "balanced_accuracy",
    "macro_f1", "n_train", "n_test", "fit_seconds", "run_dir",
)


def index_path(runs_dir: str | os.PathLike) -> Path:
    """Where a runs folder keeps its index."""
    return Path(runs_dir) / INDEX


def kept_indexes(runs_dir: str | os.PathLike) -> set[Path]:
    """The damaged indexes copied aside so far (``index.csv.old-<time>``)."""
    return set(Path(runs_dir).glob(KEPT_INDEX + "*"))


def is_runs_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder with a runs index."""
    path = Path(path)
    return path.is_dir() and index_path(path).is_file()


def looks_like_index(path: Path, start: bytes) -> bool:
    """True when a file whose first bytes are ``start`` is a runs index or a copy of one kept aside."""
    named = path.name == INDEX or path.name.startswith(KEPT_INDEX)
    return named and start == (INDEX_COLUMNS[0] + ",").encode()


@contextlib.contextmanager
def _index_lock(runs_dir: Path):
    with _atomic.translated(runs_dir / ".index.lock", where=WHERE):
        handle = open(runs_dir / ".index.lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()


def append_index(runs_dir: Path, row: dict) -> Path:
    """Append one row to runs/index.csv atomically: copy + new row to a temporary file, fsync, os.replace.

    Under the same lock, the index heals itself: a finished run folder that a killed fit renamed into place but did
    not get to list is added (its row is rebuilt from its files), and temporary folders of dead fits are removed. A
    damaged index is copied aside (``index.csv.old-<time>``) and written anew from every finished folder.
    """
    index = index_path(runs_dir)
    with _index_lock(runs_dir):
        existing = index.read_bytes() if index.exists() else b""
        try:
            existing = existing.decode("utf-8")
            listed = {row["run_id"] for row in _parse_index(existing)} if existing else set()
        except (UnicodeDecodeError, _IndexDamage):  # damaged: kept aside, and every finished folder listed anew
            _keep_aside(index)
            existing, listed = "", set()
        if existing and not existing.endswith("\n"):  # a last line cut short ends before the new rows start
            existing += "\n"
        rows = [index_row(folder) for folder in _unlisted_runs(runs_dir, listed | {row["run_id"]})] + [row]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, lineterminator="\n")
        if not existing:
            writer.writeheader()
        for item in rows:
            writer.writerow({key: item.get(key, "") for key in INDEX_COLUMNS})
        _atomic.write_text(index, existing + buffer.getvalue(), newline="", where=WHERE)
        _sweep_dead_temporaries(runs_dir)
    return index


def index_row(run_dir: Path) -> dict:
    """A run's index row, from the files of its finished folder."""
    recorded = RunConfig.of(json.loads((run_dir / CONFIG).read_text(encoding="utf-8")))
    metrics = json.loads((run_dir / METRICS).read_text(encoding="utf-8"))
    return {
        "run_id": recorded.run_id, "created": recorded.created, "classifier": recorded.classifier,
        "backbone": recorded.backbone, "fingerprint": recorded.fingerprint,
        "cache": ";".join(c["path"] for c in recorded.caches if c.get("role", "train") == "train"),
        "accuracy": f"{metrics['accuracy']:.6f}", "balanced_accuracy": f"{metrics['balanced_accuracy']:.6f}",
        "macro_f1": f"{metrics['macro_f1']:.6f}", "n_train": metrics["n_train"], "n_test": metrics["n_test"],
        "fit_seconds": f"{metrics['fit_seconds']:.3f}", "run_dir": str(run_dir.resolve()),
    }


def _unlisted_runs(runs_dir: Path, listed: set[str]) -> list[Path]:
    found = []
    for folder in runs_dir.iterdir():
        if folder.name.startswith(".") or folder.name in listed or not folder.is_dir():
            continue
        if is_run_dir(folder):
            with contextlib.suppress(ValueError, KeyError, OSError):
                found.append((index_row(folder)["created"], folder))
    return [folder for _, folder in sorted(found)]


def _sweep_dead_temporaries(runs_dir: Path) -> None:
    """Remove ``.<run_id>.tmp-<pid>`` folders whose fit process no longer exists (killed mid-write)."""
    for folder in runs_dir.glob(".*.tmp-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and pid.isdigit() and not _atomic.process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


REBUILD_COMMAND = "python -m transfer_cache.report {runs_dir} --rebuild-index"
_FLOAT_COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "fit_seconds")
_COUNT_COLUMNS = ("n_train", "n_test")


def read_index(runs_dir: str | os.PathLike = "runs") -> list[dict]:
    """runs/index.csv as a list of dicts, metrics as floats and counts as ints.

    A damaged index (not text, a missing column, a row cut short, a metric that is not a number) is refused with one
    message naming the file, the line and the command that rebuilds it from the run folders (``rebuild_index``).
    """
    path = index_path(runs_dir)
    if not path.is_file():
        raise TransferCacheError(
            f"no runs index at {path}; run python -m transfer_cache.fit first, or pass the runs folder it wrote"
        )
    try:
        return _parse_index(path.read_bytes().decode("utf-8"))
    except _IndexDamage as exc:
        raise TransferCacheError(
            f"the runs index {path} is damaged ({exc}); rebuild it from the run folders with "
            f"{REBUILD_COMMAND.format(runs_dir=Path(runs_dir))} (the damaged file is kept beside it)"
        ) from None
    except UnicodeDecodeError as exc:
        raise TransferCacheError(
            f"the runs index {path} is damaged (byte {exc.start} is not UTF-8 text); rebuild it from the run folders "
            f"with {REBUILD_COMMAND.format(runs_dir=Path(runs_dir))} (the damaged file is kept beside it)"
        ) from None


class _IndexDamage(ValueError):
    """What is wrong with an index's text, for read_index's message."""


def _parse_index(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=None)
    try:
        fields = list(reader.fieldnames or [])
        missing = [name for name in INDEX_COLUMNS if name not in fields]
        if missing:
            raise _IndexDamage(f"its header lacks {', '.join(missing)}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row or any(row[name] is None for name in INDEX_COLUMNS):
                count = len(fields) - sum(value is None for value in row.values()) + len(row.get(None) or [])
                raise _IndexDamage(f"line {line} has {count} fields, not {len(fields)}: cut short or edited")
            for key in _FLOAT_COLUMNS + _COUNT_COLUMNS:
                value = row[key]
                try:
                    number = float(value) if value != "" else math.nan
                except ValueError:
                    raise _IndexDamage(f"line {line}: {key} {value!r} is not a number") from None
                row[key] = number if key in _FLOAT_COLUMNS else (int(number) if math.isfinite(number) else -1)
            rows.append(row)
    except csv.Error as exc:
        raise _IndexDamage(f"line {reader.line_num}: {exc}") from None
    return rows


def rebuild_index(runs_dir: str | os.PathLike = "runs") -> tuple[Path, int, Path | None]:
    """Write runs/index.csv anew from the finished run folders (oldest first), under the index lock.

    The old index is not deleted: it is copied to ``index.csv.old-<time>`` beside the new one. Returns the
    index, the number of runs listed, and where the old file went (None when there was none).
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise TransferCacheError(
            f"runs folder {runs_dir} does not exist; pass the folder python -m transfer_cache.fit wrote"
        )
    index = index_path(runs_dir)
    with _index_lock(runs_dir):
        folders = _unlisted_runs(runs_dir, set())
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for folder in folders:
            row = index_row(folder)
            writer.writerow({key: row.get(key, "") for key in INDEX_COLUMNS})
        kept = _keep_aside(index)
        _atomic.write_text(index, buffer.getvalue(), newline="", where=WHERE)
    return index, len(folders), kept


def _keep_aside(index: Path) -> Path | None:
    """Copy an index about to be replaced to ``index.csv.old-<time>`` (never overwriting an earlier copy)."""
    if not index.exists():
        return None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    kept = index.with_name(f"{KEPT_INDEX}{stamp}")
    number = 1
    while kept.exists():
        number += 1
        kept = index.with_name(f"{KEPT_INDEX}{stamp}-{number}")
    with _atomic.replacing(kept, where=WHERE) as temporary:  # a copy cut short by a full disk is never left
        shutil.copy2(index, temporary)
    return kept
