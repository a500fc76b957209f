"""joblib heads are pickles: a trust list of the ones this machine wrote, and a warning for any other."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .._errors import TransferCacheError
from .._hashing import file_sha256


def _trust_file() -> Path:
    """Where the digests of joblib heads written on this machine are listed."""
    explicit = os.environ.get("TRANSFER_CACHE_TRUST_FILE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transfer_cache" / "trusted_pickles.txt"


def register_trusted_pickle(path: str | os.PathLike) -> None:
    """Record that this machine wrote ``path`` (a joblib pickle), so loading it later gives no warning."""
    trust = _trust_file()
    try:
        trust.parent.mkdir(parents=True, exist_ok=True)
        with open(trust, "a", encoding="utf-8") as handle:
            handle.write(file_sha256(Path(path)) + "\n")
    except OSError:  # an unwritable home only costs a warning on the next load
        pass


def is_trusted_pickle(path: str | os.PathLike) -> bool:
    try:
        known = set(_trust_file().read_text(encoding="utf-8").split())
    except OSError:
        return False
    return file_sha256(Path(path)) in known


def load_pickle(path: str | os.PathLike):
    """joblib.load with a warning when the file was not written on this machine (it is a pickle: it can run code)."""
    import joblib

    path = Path(path)
    if not path.exists():
        raise TransferCacheError(f"model file {path} does not exist; fit (or export) the model again")
    if not is_trusted_pickle(path):
        print(
            f"warning: {path} is a joblib pickle not written by a run on this machine; unpickling runs any code it "
            "contains, so only load files from people you trust",
            file=sys.stderr,
        )
    return joblib.load(path)


def dump_pickle(obj, path: str | os.PathLike) -> None:
    import joblib

    joblib.dump(obj, path)
    register_trusted_pickle(path)
