"""Exported models classify raw image files exactly as fit classified the cached rows of the same images."""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer_cache._errors import TransferCacheError
from transfer_cache.export import export_model, load_exported, read_description
from transfer_cache.extract import extract
from transfer_cache.fit import fit
from transfer_cache.predict import main as predict_main
from transfer_cache.predict import predict

PARAMS = [
    "dense.epochs=3", "dense.hidden=16", "dense.learning_rate=1e-2",
    "pixels.epochs=2", "pixels.size=16", "pixels.hidden=16",
    "knn.n_neighbors=3", "random_forest.n_estimators=10",
]


@pytest.fixture(scope="module", autouse=True)
def trust_file(tmp_path_factory):
    """This module's own list of pickles written "on this machine" (not the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("trust") / "trusted.txt"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSFER_CACHE_TRUST_FILE", str(path))
        yield path


def overlapping_class_folder(root, *, classes=("cat", "dog", "fox"), per_class=10, tint=12.0):
    """root/<class>/*.png whose classes differ only by a faint colour tint, so probabilities are not all 0 or 1."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = rng.normal(110, 45, size=(28, 36, 3))
            array[..., label] += tint
            Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(root / name / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, trust_file):
    """A real folder of PNGs, extracted with the tiny backbone, and one run per head kind."""
    base = tmp_path_factory.mktemp("export")
    images = overlapping_class_folder(base / "images")
    # the exported model runs the Keras network, so it reproduces fit exactly on a cache the TensorFlow runtime made
    cache = extract(str(images), backbone="tiny", weights="none", cache_dir=base / "caches", progress=False,
                    runtime="tensorflow").path
    runs = fit(
        [cache], classifier="logreg,linear_svm,dense,knn,random_forest,pixels", params=PARAMS, test_size=0.5,
        runs_dir=base / "runs", progress=False,
    )
    return images, {run.classifier: run for run in runs}, base


def read_predictions(run):
    with open(run.run_dir / "predictions.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "classifier, kind",
    [("logreg", "keras"), ("linear_svm", "keras"), ("dense", "keras"), ("pixels", "keras"), ("knn", "folder"),
     ("random_forest", "folder")],
)
def test_export_predicts_the_image_files_as_fit_predicted_their_cached_rows(fitted, tmp_path, classifier, kind):
    images, runs, _ = fitted
    run = runs[classifier]
    out = export_model(run.run_dir, tmp_path / f"exported-{classifier}")
    assert out.is_file() == (kind == "keras") and out.is_dir() == (kind == "folder")
    if kind == "keras":  # one file: the description is inside it, nothing is written beside it
        assert out.suffix == ".keras" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    rows = read_predictions(run)
    names = run.metrics["class_names"]
    results = predict(out, [images / row["path"] for row in rows], batch_size=5)
    assert [r.path for r in results] == [str(images / row["path"]) for row in rows]
    for row, result in zip(rows, results):
        expected = [float(row[f"prob_{name}"]) for name in names]
        np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
        assert result.label == row["pred_name"]
    if kind == "folder":  # saturated kNN/forest probabilities say little: compare the vectors themselves
        from transfer_cache.cache import open_cache
        from transfer_cache.pipeline import prepare_image

        exported = load_exported(out)
        with open_cache(run_dir_cache(run)) as cache:
            where = {path: i for i, path in enumerate(cache.paths)}
            cached = cache.features[()][[where[row["path"]] for row in rows]]
        pixels = np.stack([prepare_image((images / row["path"]).read_bytes(), config=exported.config) for row in rows])
        np.testing.assert_allclose(np.asarray(exported.model(pixels.astype(np.float32))), cached, atol=1e-5)


def run_dir_cache(run):
    return json.loads((run.run_dir / "config.json").read_text())["caches"][0]["path"]


def test_export_description_remembers_the_feature_configuration(fitted, tmp_path):
    _, runs, _ = fitted
    out = export_model(runs["logreg"].run_dir, tmp_path / "m.keras")
    with zipfile.ZipFile(out) as archive:
        description = json.loads(archive.read("transfer_cache.json"))
    assert read_description(out) == description
    assert description["class_names"] == ["cat", "dog", "fox"]
    assert (description["input_size"], description["resize"], description["backbone"]) == (32, "squash", "tiny")
    assert description["kind"] == "keras" and description["classifier"] == "logreg"
    model = load_exported(out)
    assert model.model.inputs[0].shape[1:] == (32, 32, 3)
    pixels_out = export_model(runs["pixels"].run_dir, tmp_path / "p")
    assert read_description(pixels_out)["input_size"] == 16


def test_folder_heads_refuse_a_keras_file_name(fitted, tmp_path):
    _, runs, _ = fitted
    with pytest.raises(TransferCacheError, match=re.escape(
        f"classifier 'knn' exports as a folder (feature model + joblib head), not one .keras file; give a folder "
        f"path such as {tmp_path / 'm'}"
    )):
        export_model(runs["knn"].run_dir, tmp_path / "m.keras")


def test_predict_cli_prints_writes_csv_and_skips_bad_images(fitted, tmp_path, capsys):
    images, runs, _ = fitted
    out = export_model(runs["knn"].run_dir, tmp_path / "knn-model")
    bad = tmp_path / "more" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png at all")
    shutil.copy(images / "dog" / "dog_000.png", tmp_path / "more" / "dog.png")
    csv_path = tmp_path / "out.csv"
    code = predict_main([str(out), str(images / "cat"), str(tmp_path / "more"), "--top", "2", "--out", str(csv_path),
                         "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 10 + 1 + 1  # 10 cats, the good file of "more", the summary
    assert re.fullmatch(r"\S+cat_000\.png\s+\w+\s+\d\.\d{4}\s+\w+\s+\d\.\d{4}", lines[0])
    assert lines[-1].startswith("11 images classified, 1 skipped, in ")
    assert f"skipped {bad}: " in captured.err
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert list(rows[0])[:5] == ["path", "class", "probability", "top", "error"]
    broken = [r for r in rows if r["path"] == str(bad)][0]
    assert broken["error"] and broken["class"] == ""


def test_predict_cli_bad_model_exits_2_with_one_line(tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert predict_main([str(tmp_path / "missing.keras"), str(image)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"python -m transfer_cache.predict: error: model {tmp_path / 'missing.keras'} does not exist; write it with "
        f"python -m transfer_cache.export RUN {tmp_path / 'missing.keras'}\n"
    )


def test_loading_a_folder_export_from_elsewhere_warns_about_the_pickle(fitted, tmp_path, monkeypatch, capsys):
    images, runs, _ = fitted
    out = export_model(runs["random_forest"].run_dir, tmp_path / "rf")
    capsys.readouterr()
    monkeypatch.setenv("TRANSFER_CACHE_TRUST_FILE", str(tmp_path / "someone-else.txt"))
    predict(out, [images / "cat" / "cat_000.png"])
    assert "is a joblib pickle not written by a run on this machine" in capsys.readouterr().err


def test_export_cli_writes_a_model_predict_can_use(fitted, tmp_path, capsys):
    from transfer_cache.export import main as export_main

    images, runs, _ = fitted
    out = tmp_path / "logreg.keras"
    assert export_main([str(runs["logreg"].run_dir), str(out)]) == 0
    assert capsys.readouterr().out == (
        f"exported {runs['logreg'].run_dir} -> {out} (one file, its description inside; "
        f"python -m transfer_cache.predict {out} IMAGES...)\n"
    )
    assert predict_main([str(out), str(images / "cat"), "--quiet"]) == 0
    assert export_main([str(tmp_path / "no-run"), str(tmp_path / "x.keras")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m transfer_cache.export: error: ") and "Traceback" not in err


def test_a_copied_keras_export_alone_still_predicts(fitted, tmp_path, capsys):
    """Copying the one .keras file elsewhere is enough: its description travels inside it."""
    images, runs, _ = fitted
    out = export_model(runs["dense"].run_dir, tmp_path / "made" / "dense.keras")
    elsewhere = tmp_path / "elsewhere" / "copied.keras"
    elsewhere.parent.mkdir()
    shutil.copy(out, elsewhere)
    capsys.readouterr()
    assert predict_main([str(elsewhere), str(images / "cat" / "cat_000.png"), "--quiet"]) == 0
    copied = predict(elsewhere, [images / "cat" / "cat_000.png"])[0]
    original = predict(out, [images / "cat" / "cat_000.png"])[0]
    np.testing.assert_array_equal(copied.probabilities, original.probabilities)


def _without_description(source, target):
    """A copy of an exported .keras file without its transfer_cache.json entry (a plain Keras model file)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            if item.filename != "transfer_cache.json":
                new.writestr(item, old.read(item.filename))
        return json.loads(old.read("transfer_cache.json"))


def test_an_export_of_0_2_0_with_its_json_beside_it_still_loads(fitted, tmp_path):
    images, runs, _ = fitted
    out = export_model(runs["logreg"].run_dir, tmp_path / "new.keras")
    old = tmp_path / "old.keras"
    description = _without_description(out, old)
    (tmp_path / "old.json").write_text(json.dumps(description))
    assert read_description(old) == description
    image = images / "dog" / "dog_001.png"
    np.testing.assert_array_equal(predict(old, [image])[0].probabilities, predict(out, [image])[0].probabilities)


def test_a_keras_file_without_description_names_the_file_and_the_command(fitted, tmp_path, capsys):
    images, runs, _ = fitted
    plain = tmp_path / "plain.keras"
    _without_description(export_model(runs["logreg"].run_dir, tmp_path / "m.keras"), plain)
    assert predict_main([str(plain), str(images / "cat" / "cat_000.png")]) == 2
    assert capsys.readouterr().err == (
        f"python -m transfer_cache.predict: error: {plain} has no export description "
        f"(transfer_cache.json is not inside it and plain.json is not beside it); "
        f"write it with python -m transfer_cache.export RUN {plain}\n"
    )
    folder = tmp_path / "not-an-export"
    folder.mkdir()
    assert predict_main([str(folder), str(images / "cat" / "cat_000.png")]) == 2
    assert capsys.readouterr().err == (
        f"python -m transfer_cache.predict: error: {folder} is not an export folder (transfer_cache.json is missing in "
        f"it); write it with python -m transfer_cache.export RUN {folder}\n"
    )


def test_export_into_a_folder_that_is_a_file_is_one_line_exit_2(fitted, tmp_path, capsys):
    from transfer_cache.export import main as export_main

    _, runs, _ = fitted
    (tmp_path / "a_file").write_text("")
    for classifier, out in (("logreg", "m.keras"), ("knn", "knn-model")):
        target = tmp_path / "a_file" / out
        assert export_main([str(runs[classifier].run_dir), str(target)]) == 2
        assert capsys.readouterr().err == (
            f"python -m transfer_cache.export: error: cannot write {target}: {tmp_path / 'a_file'} is a file, not a "
            "folder; choose another OUT path\n"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_the_description_reads_the_image_fields_through_the_feature_config():
    """The backbone and the fields predict prepares each image with come from the cache's FeatureConfig; the recorded
    configuration is kept whole (source and all); a run without a fingerprint gets the configuration's."""
    from transfer_cache import export as export_module
    from transfer_cache.feature_config import FeatureConfig
    from transfer_cache.runs import Run

    from conftest import synthetic_attrs

    config = synthetic_attrs(input_size=24, resize="center-crop", crop_fraction=0.875, interpolation="bicubic")
    recorded = {"class_names": ["a", "b"], "run_id": "r1", "layer": "conv3"}
    run = Run(run_dir=Path("runs/r1"), config=recorded, metrics={})
    described = export_module._description(run, config, kind="keras", classifier="logreg", files=["m.keras"])
    assert {key: described[key] for key in ("backbone", "input_size", "resize", "crop_fraction", "interpolation")} == {
        "backbone": "tiny", "input_size": 24, "resize": "center-crop", "crop_fraction": 0.875,
        "interpolation": "bicubic",
    }
    assert described["feature_config"] == config and described["feature_config"]["source"] == "sklearn:digits"
    assert described["fingerprint"] == FeatureConfig.from_attrs(config).fingerprint
    with_fingerprint = Run(run_dir=Path("runs/r1"), config={**recorded, "fingerprint": "0123456789abcdef"}, metrics={})
    assert export_module._description(with_fingerprint, config, kind="keras", classifier="logreg", files=[])[
        "fingerprint"] == "0123456789abcdef"
