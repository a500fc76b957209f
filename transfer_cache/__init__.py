"""transfer_cache: extract transfer values once, cache them in HDF5, iterate fast on classifiers.

    import transfer_cache as tc
    result = tc.extract("sklearn:digits")            # efficientnet_lite0, weights ship offline
    with tc.open_cache(result.path) as cache:
        X, y = cache.features[:], cache.labels

The public functions are imported lazily, so ``import transfer_cache`` stays cheap (no TensorFlow start-up).
A stage module and its function share a name (``transfer_cache.extract``): ``tc.extract`` is always the function;
use ``importlib.import_module("transfer_cache.extract")`` or ``sys.modules`` for the module itself.
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types

from ._errors import ImageError, TransferCacheError

__version__ = "0.2.0"

# public name -> module that defines it
_LAZY = {
    "extract": "extract",
    "ExtractResult": "extract",
    "open_cache": "cache",
    "Cache": "cache",
    "open_source": "sources",
    "list_backbones": "backbones",
    "build_feature_model": "backbones",
    "fit": "fit",
    "export_model": "export",
    "predict": "predict",
    "write_report": "report",
    "merge": "merge",
    "export_vectors": "export_vectors",
    "import_vectors": "import_vectors",
}

__all__ = ["__version__", "ImageError", "TransferCacheError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'transfer_cache' has no attribute {name!r}")
    return getattr(_importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    """The public names, lazy ones included (``dir()`` and tab completion show what ``__getattr__`` serves)."""
    return sorted(__all__)


class _Package(_types.ModuleType):
    """Keeps ``tc.extract`` (and fit, predict, merge) the function once ``transfer_cache.extract`` the module is
    imported: the import system then binds the module to the package attribute of the same name, and only a module
    class can refuse that one write (a module's own ``__setattr__`` is not consulted). Reads stay plain.

    Importing the functions eagerly instead would bind them first, but costs ``import transfer_cache`` seconds
    (scikit-learn, SciPy, h5py) and makes every ``python -m transfer_cache.<stage>`` warn that its module was
    imported before it ran.
    """

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, _types.ModuleType) and _LAZY.get(name) == name:
            return  # the submodule stays reachable as sys.modules["transfer_cache.<name>"]
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
