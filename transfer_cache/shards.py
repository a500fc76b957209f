"""Shards: one extraction cut into N contiguous slices of its images, each written as its own cache file.

Everything about shards is here, once: the ``K/N`` a user types, which images shard K holds, the file-name suffix
``.shardK-of-N`` and reading it back, finding and checking the shard files of one extraction, and checking the
options of a sharded run before any work starts. ``merge`` joins the files; ``sharded`` runs the shard tasks on an
engine of ``distributed``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ._checks import one_of, whole_number
from ._errors import TransferCacheError
from .distributed import ENGINES

# the suffix of a shard's file name, before ".h5"
SUFFIX = r"\.shard(?P<k>\d+)-of-(?P<n>\d+)"
_FILE = re.compile(rf"^(?P<base>[^/]+?){SUFFIX}\.h5$")
_SPEC_ERROR = "shard must look like K/N with 0 <= K < N (e.g. 0/4); got {!r}"


@dataclass(frozen=True)
class Shard:
    """Shard ``k`` (0-based) of ``n`` contiguous, deterministic slices of a source's image list."""

    k: int
    n: int

    @classmethod
    def parse(cls, spec) -> "Shard | None":
        """``"K/N"`` (or a ``(K, N)`` pair, or a ``Shard``) -> Shard; None or "" -> None (the whole source)."""
        if spec in (None, ""):
            return None
        if isinstance(spec, Shard):
            return spec
        if isinstance(spec, tuple):
            k, n = spec
        else:
            try:
                k, n = (int(part) for part in str(spec).split("/"))
            except ValueError:
                raise TransferCacheError(_SPEC_ERROR.format(spec)) from None
        if not (0 <= k < n):
            raise TransferCacheError(_SPEC_ERROR.format(spec))
        return cls(int(k), int(n))

    @property
    def spec(self) -> str:
        """``"K/N"``: what the user types, and the cache's ``shard`` attribute."""
        return f"{self.k}/{self.n}"

    @property
    def suffix(self) -> str:
        """The part of the file name that marks the shard: ``shardK-of-N``."""
        return f"shard{self.k}-of-{self.n}"

    def select(self, indices: Sequence[int]) -> list[int]:
        """This shard's slice of ``indices``."""
        return list(indices[self.k * len(indices) // self.n : (self.k + 1) * len(indices) // self.n])


def all_shards(n: int) -> list[Shard]:
    return [Shard(k, n) for k in range(n)]


def shard_file(base: str, shard: Shard) -> str:
    """``<base>.shardK-of-N.h5``: the file of one shard of the cache ``<base>.h5``."""
    return f"{base}.{shard.suffix}.h5"


# --------------------------------------------------------------------------- shard files


@dataclass(frozen=True)
class ShardName:
    """What a shard's file name says: the cache it belongs to and its place K of N."""

    path: Path
    base: str
    k: int
    n: int

    @property
    def merged_name(self) -> str:
        return f"{self.base}.h5"


def parse_shard_name(path: str | os.PathLike) -> ShardName | None:
    """``<base>.shardK-of-N.h5`` -> ShardName; None for any other name (hidden temporaries included)."""
    path = Path(path)
    match = _FILE.match(path.name)
    if match is None or path.name.startswith("."):
        return None
    return ShardName(path=path, base=match["base"], k=int(match["k"]), n=int(match["n"]))


def find_shard_groups(cache_dir: str | os.PathLike) -> dict[str, list[ShardName]]:
    """The shard files in ``cache_dir`` grouped by the cache they belong to (base name), each sorted by K."""
    folder = Path(cache_dir)
    if not folder.is_dir():
        raise TransferCacheError(
            f"cache folder {folder} does not exist; pass the --cache-dir the shards were extracted into"
        )
    groups: dict[str, list[ShardName]] = {}
    for entry in sorted(folder.iterdir()):
        name = parse_shard_name(entry)
        if name is not None and entry.is_file():
            groups.setdefault(name.base, []).append(name)
    for members in groups.values():
        members.sort(key=lambda s: (s.k, s.n))
    return groups


def check_names(names: list[ShardName]) -> list[ShardName]:
    """All files name the same cache and the same N; every K in 0..N-1 appears exactly once. Returns them in order."""
    first = names[0]
    for name in names[1:]:
        if name.base != first.base or name.n != first.n:
            raise TransferCacheError(
                f"{name.path.name} is not a shard of the same extraction as {first.path.name} (expected a name "
                f"{first.base}.shardK-of-{first.n}.h5); merge the shards of one extraction at a time"
            )
    seen: dict[int, ShardName] = {}
    for name in names:
        if name.k in seen:
            raise TransferCacheError(
                f"shard {name.k}/{name.n} is given twice ({seen[name.k].path} and {name.path}); "
                "give each shard file once"
            )
        if name.k >= name.n:
            raise TransferCacheError(
                f"{name.path.name} names shard {name.k} of {name.n}, which cannot exist (K must be below N)"
            )
        seen[name.k] = name
    missing = [k for k in range(first.n) if k not in seen]
    if missing:
        files = ", ".join(shard_file(first.base, Shard(k, first.n)) for k in missing)
        which = ", ".join(f"{k}/{first.n}" for k in missing)
        raise TransferCacheError(
            f"cannot merge {first.base}: shard{'s' if len(missing) > 1 else ''} {which} "
            f"{'are' if len(missing) > 1 else 'is'} missing (expected {files} in {first.path.parent}); run "
            f"python -m transfer_cache.extract SOURCE --shard K/{first.n} with the same options for each missing "
            "shard, then merge again"
        )
    return [seen[k] for k in range(first.n)]


# --------------------------------------------------------------------------- checking a sharded run's options


def wants_sharded_run(*, engine, scheduler, workers, shards, shard) -> bool:
    """Check the engine options; True when the work is to be cut into shards (and merged) rather than done here."""
    one_of(engine, ENGINES, "engine")
    whole_number(shards, "shards", optional=True)
    whole_number(workers, "workers", optional=True)
    if engine == "local" and (scheduler is not None or workers is not None):
        raise TransferCacheError("--scheduler and --workers apply to --engine dask; add --engine dask or drop them")
    sharded = engine == "dask" or shards is not None
    if sharded and shard not in (None, ""):
        raise TransferCacheError(
            "give --shard K/N (extract one shard here) or --shards N (extract all and merge), not both"
        )
    return sharded


def check_sharded_run(source, *, shards: int, engine: str, workers: int, retries: int) -> None:
    """A sharded run's arguments, before any worker starts: each shard opens the source itself, so it must be a
    spec string or a path."""
    if not isinstance(source, (str, os.PathLike)):
        raise TransferCacheError(
            f"a sharded run needs the source as a spec string or path (each worker opens it itself); got a "
            f"{type(source).__name__} object: pass the folder, manifest or name you opened it from"
        )
    whole_number(shards, "shards")
    one_of(engine, ENGINES, "engine")
    whole_number(workers, "workers")
    whole_number(retries, "retries", at_least=0)
