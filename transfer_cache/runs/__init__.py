"""The run folder and the runs index: the only package that writes or reads them.

``runs/<run_id>/`` holds ``config.json``, ``metrics.json``, ``predictions.csv``, ``history.json`` (Keras heads) and
``model/``. It is written under a temporary name (``.<run_id>.tmp-<pid>``) and renamed when complete; only then is
its row appended to ``runs/index.csv`` (temporary file + ``os.replace``, under an ``flock``), so an interrupted fit
leaves no half run in the index. The index heals itself: a finished folder a killed fit did not list is listed by
the next append, and temporary folders of dead fits are swept.

``folder`` holds the layout and the reading (``Run``), ``index`` the runs index, ``write`` the writing of a run.
"""

from .folder import (
    CONFIG,
    HISTORY,
    INDEX,
    KEPT_INDEX,
    METRICS,
    MODEL,
    PREDICTION_COLUMNS,
    PREDICTIONS,
    PROBABILITY,
    WHERE,
    Run,
    RunConfig,
    as_run,
    has_model,
    history_of,
    is_run_dir,
    load_run,
    metrics_of,
    misclassified,
    open_run_cache,
    prediction_header,
    read_json,
    read_predictions,
    read_run,
    run_cache_path,
    run_of,
)
from .index import (
    INDEX_COLUMNS,
    REBUILD_COMMAND,
    append_index,
    index_path,
    index_row,
    is_runs_dir,
    kept_indexes,
    looks_like_index,
    read_index,
    rebuild_index,
)
from .write import json_text, jsonable, new_run_id, write_json, write_run

__all__ = [
    "CONFIG", "HISTORY", "INDEX", "INDEX_COLUMNS", "KEPT_INDEX", "METRICS", "MODEL", "PREDICTIONS",
    "PREDICTION_COLUMNS", "PROBABILITY", "REBUILD_COMMAND", "WHERE", "Run", "RunConfig", "append_index", "as_run",
    "has_model",
    "history_of", "index_path", "index_row", "is_run_dir", "is_runs_dir", "json_text", "jsonable", "kept_indexes",
    "load_run", "looks_like_index", "metrics_of", "misclassified", "new_run_id", "open_run_cache",
    "prediction_header", "read_index", "read_json", "read_predictions", "read_run", "rebuild_index",
    "run_cache_path", "run_of", "write_json", "write_run",
]
