"""Import every public module of a registry subpackage (sources, classifiers, runtimes), so that a new module
registers itself by being there: adding a source, a head or a runtime is adding one file."""

from __future__ import annotations

import importlib
import pkgutil

_NOT_PLUGINS = {"base", "registry"}


def import_submodules(package: str, path) -> None:
    for module in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not module.name.startswith("_") and module.name not in _NOT_PLUGINS:
            importlib.import_module(f"{package}.{module.name}")
