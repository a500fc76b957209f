"""Writing a run folder: under a temporary name, renamed when complete, then listed in the runs index."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from .. import _atomic
from .folder import CONFIG, HISTORY, METRICS, MODEL, PREDICTIONS, WHERE
from .index import append_index, index_row


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
        for name, payload in ((CONFIG, config), (METRICS, metrics), (HISTORY, history)):
            if payload is not None:
                with _atomic.writing(temporary / name):
                    (temporary / name).write_text(json_text(payload), encoding="utf-8")
        header, rows = predictions
        table = temporary / PREDICTIONS
        with _atomic.writing(table), open(table, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(header))
            writer.writerows(rows)
        with _atomic.writing(temporary / MODEL):
            save_model(temporary / MODEL)
    append_index(runs_dir, index_row(final))
    return final



def new_run_id(classifier: str, now: _dt.datetime) -> str:
    return f"{now.strftime('%Y%m%d-%H%M%S')}-{classifier}-{secrets.token_hex(3)}"


