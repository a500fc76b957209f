"""One error type for user mistakes, so every CLI can print a message and exit 2 without a traceback."""


class TransferCacheError(Exception):
    """A problem the user can fix: the message says what happened, what was expected, and how to fix it."""

    exit_code = 2


class ImageError(TransferCacheError):
    """An image that cannot be read; the extraction skips it and records the reason."""
