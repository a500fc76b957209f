"""The run folder and the runs index: the only module that writes or reads them.

``runs/<run_id>/`` holds ``config.json``, ``metrics.json``, ``predictions.csv``, ``history.json`` (Keras heads) and
``model/``. It is written under a temporary name (``.<run_id>.tmp-<pid>``) and renamed when complete; only then is
its row appended to ``runs/index.csv`` (temporary file + ``os.replace``, under an ``flock``), so an interrupted fit
leaves no half run in the index. The index heals itself: a finished folder a killed fit did not list is listed by
the next append, and temporary folders of dead fits are swept.
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
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import _atomic
from ._errors import TransferCacheError
from .cache import Cache, open_cache

# the way out a run folder or index that cannot be written offers
WHERE = "give --runs-dir a folder on another disk"

INDEX_COLUMNS = (
    "run_id", "created", "classifier", "backbone", "fingerprint", "cache", "accuracy", "balanced_accuracy",
    "macro_f1", "n_train", "n_test", "fit_seconds", "run_dir",
)


# --------------------------------------------------------------------------- writing


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(payload) -> str:
    """The JSON every file of a run or an export holds: numpy values made plain, indented, one final newline."""
    return json.dumps(jsonable(payload), indent=2, default=str) + "\n"


def write_json(path: Path, payload, *, where: str = WHERE) -> None:
    """JSON written atomically: a temporary file beside it, fsync, ``os.replace`` (a crash keeps the old file)."""
    _atomic.write_json(path, jsonable(payload), where=where)


def write_run(
    runs_dir: Path,
    run_id: str,
    *,
    config: dict,
    metrics: dict,
    predictions: tuple[Sequence[str], Iterable[Sequence]],
    history: dict | None,
    save_model: Callable[[Path], object],
) -> Path:
    """Write one complete run folder (temporary name ``.<run_id>.tmp-<pid>``, then rename) and list it in the index;
    return its path. A disk that cannot take it ends in one line naming the file, with no half run left."""
    runs_dir = Path(runs_dir)
    final = runs_dir / run_id
    with _atomic.replacing(final, folder=True, where=WHERE) as temporary:
        temporary.mkdir()
        # inside the folder files are written plainly: the folder's rename is what publishes them
        for name, payload in (("config.json", config), ("metrics.json", metrics), ("history.json", history)):
            if payload is not None:
                with _atomic.writing(temporary / name):
                    (temporary / name).write_text(json_text(payload), encoding="utf-8")
        header, rows = predictions
        with _atomic.writing(temporary / "predictions.csv"), open(temporary / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(header))
            writer.writerows(rows)
        with _atomic.writing(temporary / "model"):
            save_model(temporary / "model")
    append_index(runs_dir, index_row(final))
    return final


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
    index = runs_dir / "index.csv"
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
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        "run_id": config["run_id"], "created": config["created"], "classifier": config["classifier"],
        "backbone": config.get("backbone"), "fingerprint": config.get("fingerprint"),
        "cache": ";".join(c["path"] for c in config.get("caches", []) if c.get("role", "train") == "train"),
        "accuracy": f"{metrics['accuracy']:.6f}", "balanced_accuracy": f"{metrics['balanced_accuracy']:.6f}",
        "macro_f1": f"{metrics['macro_f1']:.6f}", "n_train": metrics["n_train"], "n_test": metrics["n_test"],
        "fit_seconds": f"{metrics['fit_seconds']:.3f}", "run_dir": str(run_dir.resolve()),
    }


def _unlisted_runs(runs_dir: Path, listed: set[str]) -> list[Path]:
    found = []
    for folder in runs_dir.iterdir():
        if folder.name.startswith(".") or folder.name in listed or not folder.is_dir():
            continue
        if (folder / "config.json").is_file() and (folder / "metrics.json").is_file():
            with contextlib.suppress(ValueError, KeyError, OSError):
                found.append((index_row(folder)["created"], folder))
    return [folder for _, folder in sorted(found)]


def _sweep_dead_temporaries(runs_dir: Path) -> None:
    """Remove ``.<run_id>.tmp-<pid>`` folders whose fit process no longer exists (killed mid-write)."""
    for folder in runs_dir.glob(".*.tmp-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and pid.isdigit() and not _atomic.process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def new_run_id(classifier: str, now: _dt.datetime) -> str:
    return f"{now.strftime('%Y%m%d-%H%M%S')}-{classifier}-{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- reading


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a finished run folder (it has config.json and metrics.json)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file() and (path / "metrics.json").is_file()


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as exc:
        raise TransferCacheError(f"{path} is not valid JSON ({exc}); the run folder is damaged, fit again") from exc


_INT_COLUMNS = ("row", "cache", "true_label", "pred_label")


def read_predictions(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """predictions.csv as columns: int64 for row/cache/labels, float64 for confidence and prob_*, str objects otherwise."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    required = ("row", "cache", "path", "true_label", "true_name", "pred_label", "pred_name", "confidence")
    missing = [name for name in required if name not in fields]
    if missing:
        raise TransferCacheError(
            f"{path} lacks the columns {missing}; expected {', '.join(required)}, prob_<class> (written by transfer_cache.fit)"
        )
    columns: dict[str, np.ndarray] = {}
    for name in fields:
        values = [row[name] for row in rows]
        if name in _INT_COLUMNS:
            columns[name] = np.asarray([int(v) if v != "" else -1 for v in values], dtype=np.int64)
        elif name == "confidence" or name.startswith("prob_"):
            columns[name] = np.asarray([float(v) if v != "" else math.nan for v in values], dtype=np.float64)
        else:
            columns[name] = np.asarray(values, dtype=object)
    return columns


def load_run(run_dir: str | os.PathLike) -> dict:
    """A run folder as plain Python: {"run_dir", "config", "metrics", "predictions" (columns or None), "history" (or None)}."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TransferCacheError(f"run folder {run_dir} does not exist; pass a folder under runs/ written by python -m transfer_cache.fit")
    for name in ("config.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise TransferCacheError(
                f"{run_dir} is not a run folder: {name} is missing; pass a folder under runs/ written by python -m transfer_cache.fit"
            )
    predictions_path = run_dir / "predictions.csv"
    history_path = run_dir / "history.json"
    return {
        "run_dir": run_dir,
        "config": read_json(run_dir / "config.json"),
        "metrics": read_json(run_dir / "metrics.json"),
        "predictions": read_predictions(predictions_path) if predictions_path.is_file() else None,
        "history": read_json(history_path) if history_path.is_file() else None,
    }


def as_run(run) -> dict:
    return run if isinstance(run, dict) and "config" in run and "metrics" in run else load_run(run)


def run_cache_path(run, index: int = 0) -> Path:
    """The cache file a run was fitted on (``config["caches"][index]``), found as written, or relative to the run folder."""
    run = as_run(run)
    caches = run["config"].get("caches") or []
    if not 0 <= index < len(caches):
        raise TransferCacheError(f"run {run['run_dir']} has {len(caches)} cache(s); got cache index {index}")
    written = Path(caches[index]["path"])
    candidates = [written] if written.is_absolute() else [written, Path(run["run_dir"]) / written, Path(run["run_dir"]).parent.parent / written]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise TransferCacheError(
        f"the cache of run {run['run_dir']} is gone: {written} does not exist; extract it again with the same "
        "configuration (python -m transfer_cache.extract) or run the report from the folder the fit ran in"
    )


def open_run_cache(run, index: int = 0) -> Cache:
    """Open a run's cache, refusing a file whose fingerprint differs from the one the run was fitted on."""
    run = as_run(run)
    path = run_cache_path(run, index)
    cache = open_cache(path)
    expected = run["config"]["caches"][index].get("fingerprint")
    if expected and cache.fingerprint != expected:
        cache.close()
        raise TransferCacheError(
            f"cache {path} has fingerprint {cache.fingerprint} but run {run['run_dir']} was fitted on {expected}; "
            "the file was replaced by another feature configuration: extract the run's configuration again"
        )
    return cache


REBUILD_COMMAND = "python -m transfer_cache.report {runs_dir} --rebuild-index"
_FLOAT_COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "fit_seconds")
_COUNT_COLUMNS = ("n_train", "n_test")


def read_index(runs_dir: str | os.PathLike = "runs") -> list[dict]:
    """runs/index.csv as a list of dicts, metrics as floats and counts as ints.

    A damaged index (not text, a missing column, a row cut short, a metric that is not a number) is refused with one
    message naming the file, the line and the command that rebuilds it from the run folders (``rebuild_index``).
    """
    path = Path(runs_dir) / "index.csv"
    if not path.is_file():
        raise TransferCacheError(f"no runs index at {path}; run python -m transfer_cache.fit first, or pass the runs folder it wrote")
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
        raise TransferCacheError(f"runs folder {runs_dir} does not exist; pass the folder python -m transfer_cache.fit wrote")
    index = runs_dir / "index.csv"
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
    kept = index.with_name(f"index.csv.old-{stamp}")
    number = 1
    while kept.exists():
        number += 1
        kept = index.with_name(f"index.csv.old-{stamp}-{number}")
    with _atomic.replacing(kept, where=WHERE) as temporary:  # a copy cut short by a full disk is never left
        shutil.copy2(index, temporary)
    return kept
