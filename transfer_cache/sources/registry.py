"""How a SOURCE string finds its kind: a registry of source kinds, and ``open_source``.

A spec ``<kind>:<rest>`` names the kind (``keras:cifar10``, ``sklearn:digits``, and a source's own description
such as ``folder:/abs/root`` or ``csv:/abs/m.csv`` opens it again as that kind). Otherwise a path decides: a folder
goes to the first kind that claims it (a CIFAR batch folder), else to the fallback folder kind; a file goes to the
kind of its suffix. Adding a source is one module that calls ``register``; the help texts list the kinds from here.
"""

from __future__ import annotations

import os
import pathlib
import stat
from dataclasses import dataclass
from typing import Callable

from .._errors import TransferCacheError


@dataclass(frozen=True)
class SourceKind:
    """One kind of source. ``takes``: "folder", "file" or "name" (what follows ``<name>:``, e.g. a dataset name)."""

    name: str
    help: str
    open: Callable  # (path or name, allow_outside_root) -> Source
    takes: str
    suffixes: tuple[str, ...] = ()  # files: the suffixes that select this kind
    claims: Callable[[pathlib.Path], bool] | None = None  # folders: whether this kind recognises the folder
    fallback: bool = False  # folders: the kind of any folder no other kind claims
    keras_listing: bool = False  # its records are the files keras' image_dataset_from_directory lists (--split keras)


KINDS: dict[str, SourceKind] = {}
_HELP_ORDER = ("folder", "csv", "arrays", "cifar", "keras", "sklearn")  # how the help sentence lists them


def register(kind: SourceKind) -> SourceKind:
    if kind.name in KINDS:
        raise ValueError(f"source kind {kind.name!r} is registered twice")
    if kind.takes not in ("folder", "file", "name"):
        raise ValueError(f"source kind {kind.name!r}: takes must be folder, file or name; got {kind.takes!r}")
    KINDS[kind.name] = kind
    return kind


def kind_of(description: str) -> SourceKind | None:
    """The kind of a source from its description (a cache's ``source`` attribute), or None when unknown."""
    return KINDS.get(str(description).partition(":")[0])


def source_help() -> str:
    """One sentence naming every kind of SOURCE (the CLIs' help and every SOURCE error end with it)."""
    ordered = sorted(
        KINDS.values(), key=lambda k: _HELP_ORDER.index(k.name) if k.name in _HELP_ORDER else len(_HELP_ORDER)
    )
    helps = [kind.help for kind in ordered]
    listed = ", ".join(helps[:-1]) + (f", or {helps[-1]}" if len(helps) > 1 else helps[0])
    return f"SOURCE can be {listed}"


def _file_suffixes() -> str:
    suffixes = [s for kind in KINDS.values() if kind.takes == "file" for s in kind.suffixes]
    return ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else "".join(suffixes)


def open_source(spec: str | os.PathLike, *, allow_outside_root: bool = False):
    """Open the image source named by ``spec`` (``source_help()`` lists what it can be).

    ``allow_outside_root`` lets a CSV manifest list files outside its own folder.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TransferCacheError(f"SOURCE must be a string or a path; got {type(spec).__name__}: {source_help()}")
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    prefix, colon, rest = text.partition(":")
    forced = KINDS.get(prefix) if colon else None
    if forced is not None and forced.takes == "name":
        return forced.open(rest, allow_outside_root)
    if forced is not None:
        text = rest
    if not text:
        raise TransferCacheError(f"SOURCE is empty: {source_help()}")
    path = pathlib.Path(text)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TransferCacheError(f"SOURCE '{text}' does not exist: {source_help()}") from None
    except OSError as exc:
        raise TransferCacheError(f"cannot open SOURCE '{text}': {exc.strerror or exc}") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if forced is not None:
        if is_dir != (forced.takes == "folder"):
            expected = "a folder" if forced.takes == "folder" else "a file"
            raise TransferCacheError(f"SOURCE '{forced.name}:{text}' must name {expected}: {source_help()}")
        return forced.open(path, allow_outside_root)
    if is_dir:
        folders = sorted((k for k in KINDS.values() if k.takes == "folder"), key=lambda k: k.fallback)
        kind = next(k for k in folders if k.fallback or (k.claims is not None and k.claims(path)))
        return kind.open(path, allow_outside_root)
    suffix = path.suffix.lower()
    kind = next((k for k in KINDS.values() if k.takes == "file" and suffix in k.suffixes), None)
    if kind is None:
        raise TransferCacheError(f"SOURCE '{text}' is a file but not {_file_suffixes()}: {source_help()}")
    return kind.open(path, allow_outside_root)


def reopen(description: str) -> tuple:
    """Open the source a cache was made from again, its records indexed by path (thumbnails, the raw-pixel baseline).

    ``description`` is the cache's ``source`` attribute. Paths outside a manifest's folder are allowed here: the
    user already chose to extract those images.
    """
    source = open_source(description, allow_outside_root=True)
    return source, {record.path: i for i, record in enumerate(source.records)}
