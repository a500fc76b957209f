"""Options declared once, as the fields of a frozen dataclass.

A command's keyword arguments, its flags, their ``--help`` and the forwarding of options between processes all come
from one declaration: each field is made with ``option(default, help, ...)``, whose extra keywords are argparse's.
``keyword_signature`` gives the Python function the same flat keyword arguments, ``add_arguments`` the parser its
flags, ``from_args`` and ``build`` the typed object, so nothing repeats the list.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ._errors import TransferCacheError


@dataclass(frozen=True)
class Flag:
    """How one option appears on the command line: its help, group heading, flag and argparse keywords."""

    help: str
    group: str = ""
    flag: str | None = None  # default: --name-with-dashes
    argparse: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def option(default: Any, help: str, *, group: str = "", flag: str | None = None, **argparse_keywords) -> Any:
    """A dataclass field that is also a command-line flag (``argparse_keywords``: type, choices, metavar, action)."""
    return field(default=default, metadata={"flag": Flag(help, group, flag, dict(argparse_keywords))})


def declared(options_class) -> list[tuple[dataclasses.Field, Flag]]:
    """The declared options of ``options_class``, in declaration order, with their flags."""
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(options_class) if "flag" in f.metadata]


def names(options_class, *groups: str) -> list[str]:
    """The option names of the given groups (all when none is given), in declaration order."""
    return [f.name for f, flag in declared(options_class) if not groups or flag.group in groups]


def cli_flag(f: dataclasses.Field) -> str:
    flag: Flag = f.metadata["flag"]
    return flag.flag or "--" + f.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, options_class, titles: Mapping[str, str] | None = None, *,
                  only: tuple[str, ...] = ()) -> None:
    """One flag per option, as declared; under a heading per group when ``titles`` names the groups; ``only`` keeps
    the options of those groups (another command taking some of them, worded as declared)."""
    groups = {name: parser.add_argument_group(title) for name, title in (titles or {}).items()}
    for f, flag in declared(options_class):
        if only and flag.group not in only:
            continue
        keywords: dict[str, Any] = {"dest": f.name, "help": flag.help, **flag.argparse}
        if keywords.get("action") not in ("store_true", "store_false"):
            keywords.setdefault("default", f.default)
        groups.get(flag.group, parser).add_argument(cli_flag(f), **keywords)


def from_args(options_class, args: argparse.Namespace):
    """The parsed flags as the typed options (one flag, one field)."""
    return options_class(**{name: getattr(args, name) for name in names(options_class)})


def build(options_class, keywords: Mapping[str, Any], *, function: str):
    """``options_class(**keywords)``, with an unknown keyword named in one line that lists the options."""
    unknown = sorted(set(keywords) - set(names(options_class)))
    if unknown:
        raise TransferCacheError(
            f"{', '.join(unknown)} {'is not an option' if len(unknown) == 1 else 'are not options'} of {function}(); "
            f"the options are: {', '.join(names(options_class))}"
        )
    return options_class(**keywords)


def keyword_signature(function: Callable, options_class) -> inspect.Signature:
    """``function``'s own parameters (before its ``**options``) followed by one keyword per declared option, with
    its default: what ``help()`` and ``inspect.signature`` show for a function taking ``**options``."""
    own = [p for p in inspect.signature(function).parameters.values() if p.kind is not p.VAR_KEYWORD]
    keywords = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
        for f, _ in declared(options_class)
    ]
    return inspect.signature(function).replace(parameters=own + keywords)


def takes(options_class) -> Callable[[Callable], Callable]:
    """Decorator: give a function taking ``**options`` the flat keyword signature of ``options_class``."""

    def decorate(function: Callable) -> Callable:
        function.__signature__ = keyword_signature(function, options_class)
        return function

    return decorate
