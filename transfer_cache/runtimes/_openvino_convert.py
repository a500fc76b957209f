"""The child process that converts a feature model for OpenVINO (see ``openvino.convert`` for why it is a child):
``python -m transfer_cache.runtimes._openvino_convert FOLDER CONFIG_JSON``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# what defines the network the converted model computes (resize, dtype and augmentation happen outside it)
MODEL_FIELDS = ("backbone", "weights_sha256", "layers", "pooling", "input_size", "preprocessing", "compute_precision")


def _convert_into(folder: Path, config: dict) -> None:
    """Build the Keras model of ``config``, export it as a SavedModel and save its OpenVINO conversion in ``folder``."""
    import openvino as ov

    from ..backbones import build_feature_model_from_config

    model = build_feature_model_from_config(config)
    model.export(str(folder / "saved_model"), verbose=False)
    ov.save_model(ov.convert_model(str(folder / "saved_model")), str(folder / "model.xml"))
    shutil.rmtree(folder / "saved_model")
    (folder / "config.json").write_text(json.dumps({k: config[k] for k in MODEL_FIELDS}, indent=1) + "\n")


USER_ERROR = 3  # the exit code of a user mistake (weights not found ...): its one-line message is passed on as it is

if __name__ == "__main__":
    from .._errors import TransferCacheError

    try:
        _convert_into(Path(sys.argv[1]), json.loads(sys.argv[2]))
    except TransferCacheError as exc:
        print(exc, file=sys.stderr)
        sys.exit(USER_ERROR)
