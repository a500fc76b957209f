"""The child process that converts a feature model for OpenVINO (``runtimes.openvino.convert`` says why it is a child):
``python -m transfer_cache._openvino_child FOLDER CONFIG_JSON [PARENT_PID]``.

The configuration crosses the process boundary as JSON (``FeatureConfig.as_dict``). This entry point sits above
``feature_config`` (the runtimes sit below it and may not import it), so it rebuilds the same ``FeatureConfig`` here
and hands it to ``runtimes._openvino_convert.convert_into``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def convert_in_child(argv: list[str]) -> int:
    """Convert into ``argv[0]`` the model of the configuration ``argv[1]``; 3 (``USER_ERROR``) on a user mistake."""
    from .runtimes._openvino_convert import USER_ERROR, convert_into, die_with_parent

    die_with_parent(int(argv[2]) if len(argv) > 2 else None)
    from ._errors import TransferCacheError
    from .feature_config import FeatureConfig

    try:
        convert_into(Path(argv[0]), FeatureConfig(**json.loads(argv[1])))
    except TransferCacheError as exc:
        print(exc, file=sys.stderr)
        return USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(convert_in_child(sys.argv[1:]))
