"""transfer_cache: extract transfer values once, cache them in HDF5, iterate fast on classifiers."""

__version__ = "0.1.0"

from ._errors import ImageError, TransferCacheError  # noqa: E402

__all__ = ["__version__", "ImageError", "TransferCacheError"]
