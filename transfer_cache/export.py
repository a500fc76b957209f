"""Export a run as a model that classifies raw images: the cache's frozen feature extractor + the fitted head.

Two forms, both with a JSON description (``transfer_cache.export`` format) that remembers the cache's feature
configuration (resize policy, input size, crop, interpolation) and the class names, so ``predict`` prepares each
image exactly as extraction did:

* one Keras file ``NAME.keras`` for the ``dense``, ``logreg`` and ``linear_svm`` heads, its description stored
  inside it (the zip entry ``transfer_cache.json``, which Keras ignores: copying the one file is enough). A linear
  scikit-learn head becomes a Dense layer holding its (scaler- and temperature-folded) ``coef_``/``intercept_`` with
  softmax; ``pixels`` (the raw-image CNN) is exported alone, as it has no backbone.
  Input: a float32 batch (S, S, 3) of raw 0..255 RGB pixels; output: one probability per class.
* a folder ``NAME/`` for the other scikit-learn heads: ``feature_model.keras``, the head as ``head.joblib`` with
  its ``classifier.json`` and ``transfer_cache.json``. ``head.joblib`` is a **pickle**: loading it can run
  arbitrary code, so only load exports you trust (a warning is printed for pickles not written on this machine).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

from . import _atomic, _cli
from ._checks import check_file_target
from ._errors import TransferCacheError
from ._quiet_tensorflow import quiet_tensorflow
from .classifiers import CLASSIFIERS, load_classifier
from .feature_config import FeatureConfig
from .runs import has_model, json_text, read_run

__all__ = ["export_model", "load_exported", "read_description", "ExportedModel"]

EXPORT_FORMAT = "transfer_cache.export"
EXPORT_VERSION = 1
FOLDER_DESCRIPTION = "transfer_cache.json"
DESCRIPTION_NAME = FOLDER_DESCRIPTION  # the same entry inside a .keras file
_WHERE = "choose an OUT path on another disk"


def _feature_config(run) -> dict:
    """The cache's attributes, as fit recorded them (or from the cache itself for older runs)."""
    if run.feature_config:
        return dict(run.feature_config)
    from .cache import open_cache

    with open_cache(run.caches[0]["path"]) as cache:
        return dict(cache.config)


def _feature_model(config: dict, layer: str):
    """The cache's feature extractor with exactly one output: the layer the run was fitted on."""
    import keras

    from .backbones import build_feature_model_from_config

    features = FeatureConfig.from_attrs(config)
    model = build_feature_model_from_config(features)
    layers = list(features.layers)
    if len(layers) > 1:
        output = model.outputs[layers.index(layer)]
        model = keras.Model(model.inputs, output, name=f"{model.name}_{layer}")
    return model


def _description(run, config: dict, *, kind: str, classifier: str, files: list[str]) -> dict:
    """What ``predict`` needs beside the model; ``config`` (the cache's attributes as fit recorded them) is kept whole,
    and the fields that say how to prepare an image are read through its ``FeatureConfig``."""
    features = FeatureConfig.from_attrs(config)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "kind": kind,
        "classifier": classifier,
        "class_names": list(run.class_names),
        "run_id": run.recorded.run_id,
        "layer": run.layer,
        "fingerprint": run.fingerprint or features.fingerprint,
        "backbone": features.backbone,
        "input_size": int(features.input_size),
        "resize": features.resize,
        "crop_fraction": features.crop_fraction,
        "interpolation": features.interpolation,
        "decoding": features.decoding,
        "feature_config": config,
        "files": files,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _embed_description(model_file: Path, description: dict) -> None:
    """Put the description inside the .keras file (a zip archive; Keras ignores an entry it does not know), so the
    model is one self-contained file: copying it is enough for predict."""
    with zipfile.ZipFile(model_file, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(DESCRIPTION_NAME, json_text(description))


def _checked_out_path(out_path: Path, *, classifier: str) -> Path:
    """Where the export goes (a .keras file or a folder, by head), checked before TensorFlow starts."""
    if CLASSIFIERS[classifier].exports_as_keras:
        if out_path.suffix != ".keras":
            out_path = out_path.with_name(out_path.name + ".keras")
        if out_path.is_dir():
            raise TransferCacheError(
                f"{out_path} is a folder; classifier '{classifier}' exports as one .keras file: choose another OUT path"
            )
    elif out_path.suffix == ".keras":
        raise TransferCacheError(
            f"classifier '{classifier}' exports as a folder (feature model + joblib head), not one .keras file; "
            f"give a folder path such as {out_path.with_suffix('')}"
        )
    elif out_path.exists() and not (
        out_path.is_dir() and (not any(out_path.iterdir()) or (out_path / FOLDER_DESCRIPTION).exists())
    ):
        raise TransferCacheError(f"{out_path} exists and is not an earlier export; choose another output path")
    check_file_target(out_path, "OUT")
    return out_path


def export_model(run_dir: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write ``run_dir``'s backbone + head as one model taking raw images; returns the model file or folder.

    For heads that export as Keras (dense, logreg, linear_svm, pixels) ``out_path`` is one ``.keras`` file (the
    suffix is added when missing) holding its description; for the other heads it is a folder (see the module
    docstring). Every mistake (run, output path) is reported before TensorFlow starts.
    """
    run_dir = Path(run_dir)
    out_path = Path(out_path)
    run = read_run(run_dir)
    classifier = run.classifier
    if classifier not in CLASSIFIERS:
        raise TransferCacheError(f"{run_dir}/config.json names unknown classifier {classifier!r}")
    out_path = _checked_out_path(out_path, classifier=classifier)
    quiet_tensorflow()  # the work starts here: TensorFlow, with its start-up notices kept off the terminal
    import keras

    head = load_classifier(run.model_dir)
    config = _feature_config(run)

    if head.exports_as_keras:
        if head.input_kind == "pixels":  # the head is the whole model: it takes the (resized) images themselves
            config = {**config, "input_size": head.input_size}
            model = head.keras_head()
        else:
            features = _feature_model(config, run.layer)
            head_model = head.keras_head(tuple(features.outputs[0].shape[1:]))
            inputs = keras.Input(tuple(features.inputs[0].shape[1:]), dtype="float32", name="pixels")
            model = keras.Model(inputs, head_model(features(inputs)), name=f"transfer_cache_{classifier}_export")
        with _atomic.replacing(out_path, keep_suffix=True, where=_WHERE) as temporary:  # keras wants the suffix
            model.save(temporary)
            _embed_description(temporary, _description(run, config, kind="keras", classifier=classifier,
                                                       files=[out_path.name]))
        return out_path

    features = _feature_model(config, run.layer)
    # an earlier export at out_path is swapped out only once the new folder is complete
    with _atomic.replacing(out_path, folder=True, where=_WHERE) as temporary:
        shutil.copytree(run.model_dir, temporary)
        with _atomic.writing(temporary / "feature_model.keras"):
            features.save(temporary / "feature_model.keras")
        files = ["feature_model.keras"] + sorted(p.name for p in run.model_dir.iterdir())
        description = _description(run, config, kind="folder", classifier=classifier, files=files)
        with _atomic.writing(temporary / FOLDER_DESCRIPTION):
            (temporary / FOLDER_DESCRIPTION).write_text(json_text(description), encoding="utf-8")
    return out_path


# --------------------------------------------------------------------------- loading an export


def _register_custom_layers() -> None:
    """The feature models contain transfer_cache's Preprocess layer; make sure Keras knows it before loading."""
    from .backbones import preprocess_layer_class

    preprocess_layer_class()


class ExportedModel:
    """A loaded export: ``predict_proba(pixels)`` on float32 raw-RGB batches of ``input_size``, and its description."""

    def __init__(self, path: Path, description: dict, model, head=None):
        self.path = path
        self.description = description
        self.model = model  # the whole model (kind "keras") or the feature model (kind "folder")
        self.head = head

    @property
    def class_names(self) -> list[str]:
        return list(self.description["class_names"])

    @property
    def config(self) -> FeatureConfig:
        """The feature configuration the model was exported with: how prepare_image decodes and resizes an image."""
        recorded = FeatureConfig.from_attrs(self.description["feature_config"])
        return dataclasses.replace(recorded, input_size=int(self.description["input_size"]))

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        batch = np.asarray(pixels, dtype=np.float32)
        out = np.asarray(self.model(batch, training=False))
        if self.head is not None:
            out = self.head.predict_proba(out)
        return np.asarray(out, dtype=np.float64)


def read_description(path: str | os.PathLike) -> dict:
    """The description of the export at ``path``, read without TensorFlow: the entry inside a ``.keras`` file, an
    export folder's ``transfer_cache.json``, or the ``NAME.json`` that 0.2.0 wrote beside ``NAME.keras``."""
    path = Path(path)
    again = f"write it with python -m transfer_cache.export RUN {path}"
    if not path.exists():
        raise TransferCacheError(f"model {path} does not exist; {again}")
    if path.is_dir():
        where = path / FOLDER_DESCRIPTION
        if not where.is_file() and has_model(path):
            raise TransferCacheError(f"{path} is a run folder, not an exported model; export it first: "
                                     f"python -m transfer_cache.export {path} model.keras")
        if not where.is_file():
            raise TransferCacheError(f"{path} is not an export folder ({FOLDER_DESCRIPTION} is missing in it); {again}")
        try:
            text = where.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TransferCacheError(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}; {again}") from None
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                inside = DESCRIPTION_NAME in archive.namelist()
                text = archive.read(DESCRIPTION_NAME).decode("utf-8") if inside else None
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError):
            raise TransferCacheError(f"{path} is not a model exported by transfer_cache (not a .keras file); "
                                     f"{again}") from None
        where = f"{path} ({DESCRIPTION_NAME} inside it)"
        if text is None:
            beside = path.with_suffix(".json")  # an export of 0.2.0: the description was written beside the model
            if not beside.is_file():
                raise TransferCacheError(
                    f"{path} has no export description ({DESCRIPTION_NAME} is not inside it and {beside.name} is not "
                    f"beside it); {again}"
                )
            text, where = beside.read_text(encoding="utf-8"), beside
    try:
        description = json.loads(text)
    except ValueError:
        description = None
    if not isinstance(description, dict) or description.get("format") != EXPORT_FORMAT:
        raise TransferCacheError(f"{where} is not a transfer_cache export description; {again}")
    if int(description.get("format_version", 0)) > EXPORT_VERSION:
        raise TransferCacheError(
            f"{path} was exported in format {description['format_version']}, "
            f"newer than this transfer_cache reads; upgrade it"
        )
    return description


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """Open an export written by ``python -m transfer_cache.export`` (a ``.keras`` file, or an export folder)."""
    path = Path(path)
    description = read_description(path)  # a wrong path or file is reported before TensorFlow starts
    quiet_tensorflow()
    import keras

    _register_custom_layers()
    if description["kind"] == "keras":
        return ExportedModel(path, description, keras.saving.load_model(path, compile=False))
    features = keras.saving.load_model(path / "feature_model.keras", compile=False)
    return ExportedModel(path, description, features, head=load_classifier(path))


# --------------------------------------------------------------------------- command line

EPILOG = """examples:
  python -m transfer_cache.export runs/20261123-210823-logreg-c31a97 digits.keras
  python -m transfer_cache.predict digits.keras photos/ --out predictions.csv
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.export",
        "Write a fit run's backbone + head as one model that classifies raw image files.",
        EPILOG,
    )
    parser.add_argument("run_dir", metavar="RUN", help="a run folder written by python -m transfer_cache.fit")
    parser.add_argument("out_path", metavar="OUT",
                        help="the .keras file (dense, logreg, linear_svm, pixels) or folder to write")
    return parser


def _main(args) -> int:
    path = export_model(args.run_dir, args.out_path)
    what = "one file, its description inside" if path.is_file() else "a folder: copy all of it"
    print(f"exported {args.run_dir} -> {path} ({what}; python -m transfer_cache.predict {path} IMAGES...)")
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
