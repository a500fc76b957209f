"""``python -m transfer_cache.merge``: check the shard caches of one extraction and join them into one cache.

A sharded extraction (``extract --shard K/N``) writes one file per shard, ``<base>.shardK-of-N.h5``. A finished
shard file is its own completion marker: it only ever appears, complete, through ``os.replace``. The merge checks
that all N shards are there, that each is a valid cache of the same feature configuration (one fingerprint), the
same source and the same class names, and that no image appears in two shards; then it copies the rows, in shard
order, into ``<base>.h5`` -- exactly the file a plain ``extract`` of the same configuration writes, so running that
``extract`` afterwards is a cache hit.

Why a copy and not HDF5 virtual datasets: a virtual dataset silently returns fill values (zeros) for every row
whose source file is missing or moved, so a lost shard file would turn into plausible-looking zero vectors in
every later experiment. A copy is self-contained and can be checked once, here. Features are copied block by block
(``write_tables`` with a streaming reader per table), so memory stays flat however large the shards are.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _cli, cache_tables
from ._checks import whole_number
from ._errors import TransferCacheError
from .cache import Cache, Table, TableData, cache_lock, open_cache, write_tables
from .shards import ShardName, check_names, find_shard_groups, parse_shard_name  # noqa: F401  (importable from here)

# attributes that differ between the shards of one extraction (or are recomputed by write_tables)
_PER_FILE_ATTRS = ("shard", "rows", "created", "fingerprint", "format", "format_version", "feature_dim")


def _given_shards(shard_paths) -> list[ShardName]:
    """The shard files the user named, each checked to be one."""
    names = []
    for item in shard_paths:
        name = parse_shard_name(item)
        if name is None:
            raise TransferCacheError(
                f"{item} is not a shard file: expected a name ending in .shardK-of-N.h5, as written by "
                "python -m transfer_cache.extract --shard K/N"
            )
        if not name.path.is_file():
            raise TransferCacheError(
                f"shard file {item} does not exist; extract that shard first (--shard {name.k}/{name.n})"
            )
        names.append(name)
    return names


def _groups_in(cache_dir) -> dict[str, list[ShardName]]:
    """The groups of shard files in ``cache_dir``; none is one line saying how to make them."""
    groups = find_shard_groups(cache_dir)
    if not groups:
        raise TransferCacheError(
            f"no shard files (NAME.shardK-of-N.h5) in {cache_dir}; extract with --shard K/N into that folder first"
        )
    return groups


def _shards_in(cache_dir) -> list[ShardName]:
    """The shard files of the one extraction whose shards ``cache_dir`` holds."""
    groups = _groups_in(cache_dir)
    if len(groups) > 1:
        raise TransferCacheError(
            f"{cache_dir} holds the shards of {len(groups)} extractions ({', '.join(sorted(groups))}); give the shard "
            "files of one of them, or use python -m transfer_cache.merge --cache-dir DIR, which merges each group"
        )
    return next(iter(groups.values()))


def _check_caches(names: list[ShardName], caches: list[Cache]) -> None:
    """One fingerprint, one source, one class list, consistent shard attributes, no image in two shards."""
    reference, ref_name = caches[0], names[0]
    for name, cache in zip(names, caches):
        shard_attr = cache.info.shard
        if shard_attr != f"{name.k}/{name.n}":
            raise TransferCacheError(
                f"{name.path.name} says it is shard {shard_attr or '(none)'!s} inside, "
                f"but its name says {name.k}/{name.n}; "
                "it was renamed or is not a shard file: move it out of this folder and extract that shard again"
            )
        if cache.fingerprint != reference.fingerprint:
            raise TransferCacheError(
                f"{name.path.name} does not belong with {ref_name.path.name}: its feature configuration differs "
                f"(fingerprint {cache.fingerprint}, expected {reference.fingerprint}); "
                "move the foreign file out of this folder and "
                "extract that shard again with the same options"
            )
        for label, mine, expected in (("source", cache.info.source, reference.info.source),
                                      ("class names", cache.class_names, reference.class_names)):
            if mine != expected:
                raise TransferCacheError(
                    f"{name.path.name} does not belong with {ref_name.path.name}: its {label} differ "
                    f"({mine!r}, expected {expected!r}); move the foreign file out of this folder and "
                    "extract that shard again from the same source"
                )
    owner: dict[str, int] = {}
    for k, cache in enumerate(caches):
        for path in cache.paths:
            if path in owner:
                raise TransferCacheError(
                    f"image {path} is in both shard {owner[path]}/{len(caches)} and shard {k}/{len(caches)}; "
                    "shards must "
                    "not overlap: were they extracted from different versions of the source? Extract all shards again"
                )
            owner[path] = k


def merge(
    shard_paths: Sequence[str | os.PathLike] | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    remove_shards: bool = False,
    block_rows: int = 4096,
) -> Path:
    """Check the N shard caches of one extraction and copy them, in shard order, into one cache; return its path.

    Give the shard files, or ``cache_dir`` to find them there (it must hold the shards of exactly one extraction;
    ``python -m transfer_cache.merge --cache-dir DIR`` merges every group it finds). The output defaults to the
    unsharded name beside the shards. Shards are kept unless ``remove_shards``.
    """
    if shard_paths is not None and isinstance(shard_paths, (str, os.PathLike)):
        shard_paths = [shard_paths]
    if not shard_paths and cache_dir is None:
        raise TransferCacheError(
            "nothing to merge: give the shard files (NAME.shardK-of-N.h5 ...) or --cache-dir DIR to find them"
        )
    whole_number(block_rows, "block_rows")
    names = check_names(_given_shards(shard_paths) if shard_paths else _shards_in(cache_dir))
    target = Path(output) if output is not None else names[0].path.parent / names[0].merged_name
    if parse_shard_name(target) is not None:
        raise TransferCacheError(
            f"output {target} has a shard name; choose a name without .shardK-of-N (default: {names[0].merged_name})"
        )

    caches: list[Cache] = []
    try:
        for name in names:
            try:
                caches.append(open_cache(name.path))
            except TransferCacheError as exc:
                raise TransferCacheError(
                    f"shard {name.k}/{name.n} ({name.path.name}) cannot be merged: {exc}"
                ) from None
        _check_caches(names, caches)
        with cache_lock(target):
            _write_merged(target, caches, block_rows)
    finally:
        for cache in caches:
            cache.close()
    if remove_shards:
        for name in names:
            name.path.unlink(missing_ok=True)
            name.path.with_name(f".{name.path.name}.lock").unlink(missing_ok=True)
    return target


def _write_merged(target: Path, caches: list[Cache], block_rows: int) -> Path:
    """Every declared table of every shard, in shard order, into one cache (``cache.TABLES``: nothing is named here,
    so a table added to the cache format is merged too)."""
    reference = caches[0]
    tables = {table.name: _merged_table(table, caches) for table in cache_tables.TABLES}
    tables = {name: data for name, data in tables.items() if data is not None}
    attrs = {key: value for key, value in reference.config.items() if key not in _PER_FILE_ATTRS}
    attrs["shard"] = ""  # what an unsharded extraction writes
    attrs["merged_from"] = [Path(cache.path).name for cache in caches]
    attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    written = write_tables(target, attrs=attrs, tables=tables, block_rows=block_rows)
    with open_cache(written) as check:  # the file is a cache of the same configuration, or nothing is claimed
        if check.fingerprint != reference.fingerprint or len(check) != sum(len(cache) for cache in caches):
            raise TransferCacheError(f"merged cache {written} does not match its shards; delete it and merge again")
    return written


def _merged_table(table: Table, caches: list[Cache]) -> TableData | None:
    """One table's columns concatenated across shards (row references shifted by each shard's first row, entries
    repeated across shards kept once), and a streaming reader over the shards' vectors."""
    row_offset = 0
    columns: dict[str, list] = {column.name: [] for column in table.columns}
    picks: list[tuple[int, np.ndarray]] = []  # (shard, its entries that are kept)
    seen: set = set()
    for s, cache in enumerate(caches):
        own = cache.tables[table.name]
        keep = np.arange(len(own[table.columns[0].name]))
        if table.unique_on is not None:
            keep = np.asarray([i for i in keep if own[table.unique_on][i] not in seen], dtype=np.int64)
            seen.update(own[table.unique_on][i] for i in keep)
        for column in table.columns:
            values = np.asarray(own[column.name], dtype=object if column.kind != "int" else np.int64)[keep]
            if column.name == table.row_reference:
                values = values + row_offset
            columns[column.name].extend(values.tolist())
        picks.append((s, keep))
        row_offset += len(cache)
    if not table.features:
        return TableData(columns)
    sets = [[cache.features_for(layer) for layer in cache.layers] if table.per_layer else [cache.table_features(table)]
            for cache in caches]
    if any(None in shard_sets for shard_sets in sets):
        return None  # a table of vectors no shard has (no augmented views)
    bounds = np.cumsum([0] + [len(keep) for _, keep in picks])
    shapes = [tuple(dataset.shape[1:]) for dataset in sets[0]]

    def features(start: int, stop: int):
        blocks: list[list[np.ndarray]] = [[] for _ in shapes]
        for s, keep in picks:
            lo, hi = max(start, bounds[s]), min(stop, bounds[s + 1])
            if lo >= hi:
                continue
            for j, dataset in enumerate(sets[s]):
                blocks[j].append(dataset[int(keep[lo - bounds[s]]) : int(keep[hi - 1 - bounds[s]]) + 1])
        return [np.concatenate(parts, axis=0) for parts in blocks]

    return TableData(columns, features=features, shapes=shapes)


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.merge --cache-dir caches
  python -m transfer_cache.merge caches/flowers-1a2b3c.efficientnet_lite0.0123456789abcdef.shard*-of-4.h5
  python -m transfer_cache.merge --cache-dir caches --remove-shards

Shards come from python -m transfer_cache.extract SOURCE --shard K/N (same options for every K). The merged cache gets
the unsharded name, so a later plain extract of the same source and options is a cache hit.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.merge",
        "Check the shard caches of a sharded extraction (all present, one configuration, no overlap) "
        "and join them into one cache.",
        EPILOG,
    )
    parser.add_argument("shards", nargs="*", metavar="SHARD", help="shard files NAME.shardK-of-N.h5 of one extraction")
    parser.add_argument("--cache-dir", default=None, help="find the shard files in this folder and merge every group")
    parser.add_argument(
        "--output", default=None, help="merged cache path (default: the unsharded name beside the shards)"
    )
    parser.add_argument("--remove-shards", action="store_true", help="delete the shard files after a successful merge")
    return parser


def _main(args) -> int:
    if args.shards and args.cache_dir:
        raise TransferCacheError("give either SHARD files or --cache-dir, not both")
    if args.shards:
        jobs = [list(args.shards)]
    else:
        if args.cache_dir is None:
            raise TransferCacheError(
                "nothing to merge: give the shard files (NAME.shardK-of-N.h5 ...) or --cache-dir DIR to find them"
            )
        groups = _groups_in(args.cache_dir)
        if args.output and len(groups) > 1:
            raise TransferCacheError(
                f"--output names one file but {args.cache_dir} holds {len(groups)} groups of shards; drop --output"
            )
        jobs = [[name.path for name in members] for _, members in sorted(groups.items())]
    from tqdm.auto import tqdm

    merged = []
    for job in tqdm(jobs, desc="merging", unit="cache", disable=len(jobs) < 2, file=sys.stderr, leave=False):
        merged.append(merge(job, output=args.output, remove_shards=args.remove_shards))
    for path in merged:
        with open_cache(path) as cache:
            print(
                f"merged {len(cache.info.merged_from)} shards: {len(cache)} rows, {len(cache.failed)} failed -> {path}"
            )
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
