"""The child process that converts a feature model for OpenVINO (see ``openvino.convert`` for why it is a child):
``python -m transfer_cache.runtimes._openvino_convert FOLDER CONFIG_JSON``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# what defines the network the converted model computes (resize, dtype and augmentation happen outside it)
MODEL_FIELDS = ("backbone", "weights_sha256", "layers", "pooling", "input_size", "preprocessing", "compute_precision")
CONVERSION = 2  # how the model is converted (2: the Keras model in memory, float32 weights); part of its key


def _convert_into(folder: Path, config: dict) -> None:
    """Build the Keras model of ``config``, convert it in memory and save the OpenVINO model in ``folder``, its outputs
    named ``output_0`` ... in the Keras model's order (checked on a seeded batch, which also checks the conversion).

    Converting the Keras model itself, rather than an exported SavedModel, skips the export (about 5 s for Lite0). The
    weights are saved in float32: ``save_model`` would store them as float16 by default, which moved Lite0's vectors by
    up to 0.03 from TensorFlow's on real photos; in float32 they stay within 1e-5.
    """
    import numpy as np
    import openvino as ov

    from ..backbones import build_feature_model_from_config

    model = build_feature_model_from_config(config)
    converted = ov.convert_model(model)
    size = int(config["input_size"])
    probe = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype(np.float32)
    expected = model(probe, training=False)
    expected = [np.asarray(t) for t in (expected if isinstance(expected, (list, tuple)) else [expected])]
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled({0: probe})
    got = [np.asarray(results[output]) for output in compiled.outputs]
    for i, want in enumerate(expected):
        errors = [np.abs(g - want).max() if g.shape == want.shape else np.inf for g in got]
        j = int(np.argmin(errors))
        if not errors[j] <= 1e-3 * max(1.0, float(np.abs(want).max())):
            raise RuntimeError(f"the OpenVINO conversion of output {i} differs from TensorFlow's by {errors[j]}")
        converted.outputs[j].get_tensor().set_names({f"output_{i}"})
    ov.save_model(converted, str(folder / "model.xml"), compress_to_fp16=False)
    (folder / "config.json").write_text(json.dumps({k: config[k] for k in MODEL_FIELDS}, indent=1) + "\n")


USER_ERROR = 3  # the exit code of a user mistake (weights not found ...): its one-line message is passed on as it is

if __name__ == "__main__":
    from .._errors import TransferCacheError

    try:
        _convert_into(Path(sys.argv[1]), json.loads(sys.argv[2]))
    except TransferCacheError as exc:
        print(exc, file=sys.stderr)
        sys.exit(USER_ERROR)
