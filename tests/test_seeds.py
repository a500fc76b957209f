"""The seed workflows as documented: every README command of "Reproducing five transfer-learning tutorials" runs here.

Each test reads its seed's block from README.md, writes a tiny stand-in dataset in the article's layout, and runs
the documented extract / fit / report commands through the CLIs' ``main`` with only these overrides appended (the
last occurrence of an option wins): ``--weights none`` (no ImageNet download here), a smaller ``--input-size``
where the backbone allows it, fewer epochs, and tmp_path folders. Everything else (backbone, layer, pooling,
preprocessing, resize, split, head) is the README's, and the checks are on the cache's configuration and on the
run folders the fit writes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import pickle
import re
import shlex
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer_cache import TransferCacheError
from transfer_cache.cache import open_cache

README = Path(__file__).resolve().parents[1] / "README.md"


# --------------------------------------------------------------------------- README commands


def seed_commands(seed: str) -> list[list[str]]:
    """The `python -m transfer_cache.*` lines of the README block '### Seed <seed>', as argument lists."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Reproducing five transfer-learning tutorials", 1)[1]
    match = re.search(rf"### Seed {seed}\b.*?```bash\n(.*?)```", section, flags=re.S)
    assert match, f"README has no bash block for seed {seed}"
    lines = match.group(1).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.startswith("python -m transfer_cache.")]


def command(seed: str, module: str) -> list[str]:
    """The arguments of the one `python -m transfer_cache.<module>` line of a seed (positional first)."""
    found = [tokens[3:] for tokens in seed_commands(seed) if tokens[2] == f"transfer_cache.{module}"]
    assert len(found) == 1, f"seed {seed} should document one {module} command; found {len(found)}"
    return found[0]


def run_cli(module: str, args: list[str], capsys) -> str:
    """Run a CLI's main() in-process; fail with its stderr unless it exits 0; return its stdout."""
    import importlib

    main = importlib.import_module(f"transfer_cache.{module}").main
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, f"{module} {' '.join(args)} exited {code}: {err}"
    return out


def extract_and_fit(seed, source, tmp_path, capsys, *, extract_extra, fit_extra):
    """The seed's extract command on ``source``, then its fit command on the cache it wrote."""
    cache_dir, runs_dir = tmp_path / "caches", tmp_path / "runs"
    args = command(seed, "extract")
    out = run_cli(
        "extract", [str(source)] + args[1:] + ["--cache-dir", str(cache_dir), "--quiet"] + extract_extra, capsys
    )
    caches = sorted(cache_dir.glob("*.h5"))
    assert len(caches) == 1 and str(caches[0]) in out
    documented = command(seed, "fit")[0]  # the README's glob must name the cache extract wrote
    assert caches[0].match(Path(documented).name), f"README's {documented} does not match {caches[0].name}"
    fit_args = command(seed, "fit")
    out = run_cli("fit", [str(caches[0])] + fit_args[1:] + ["--runs-dir", str(runs_dir), "--quiet"] + fit_extra, capsys)
    runs = {}
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        config = json.loads((folder / "config.json").read_text())
        runs[config["classifier"]] = folder
    return caches[0], runs, out


def check_run(folder: Path, *, params: dict, split: str, n_train: int, n_test: int, dense: bool = True) -> dict:
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    for key, value in params.items():
        assert config["params"][key] == value, (key, config["params"][key], value)
    assert config["split"]["method"] == split
    assert (metrics["n_train"], metrics["n_test"]) == (n_train, n_test)
    assert sum(map(sum, metrics["confusion_matrix"])) == n_test
    with open(folder / "predictions.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == n_test
    if dense:
        history = json.loads((folder / "history.json").read_text())
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
        assert len(history["loss"]) == config["params"]["epochs"]
        assert (folder / "model" / "head.keras").is_file()
    return config


def check_cache(path: Path, **expected) -> dict:
    with open_cache(path) as cache:
        config = dict(cache.config)
        for key, value in expected.items():
            assert config[key] == value, (key, config[key], value)
        assert cache.features.shape[1] == config["feature_dim"]
        return config


# --------------------------------------------------------------------------- stand-in data


def _picture(rng, label: int, size: int, mode: str = "RGB") -> Image.Image:
    tint = np.zeros(3)
    tint[label % 3] = 90.0 + 30 * (label // 3)
    array = np.clip(rng.normal(100, 35, size=(size, size, 3)) + tint, 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert(mode)


def class_folders(root: Path, classes, per_class: int, *, seed: int, size: int = 32, mode: str = "RGB",
                  fmt: str = "png"):
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _picture(rng, label, size, mode).save(root / name / f"{name}.{i}.{fmt}")
    return root


# --------------------------------------------------------------------------- the README is complete


def test_readme_documents_every_seed_with_all_three_stages():
    for seed in ("000", "001", "002", "003", "004"):
        modules = [tokens[2] for tokens in seed_commands(seed)]
        assert modules[0] == "transfer_cache.datasets"
        assert "transfer_cache.extract" in modules and "transfer_cache.fit" in modules


# --------------------------------------------------------------------------- seed 000


@pytest.mark.slow  # builds a full-size keras.applications network
def test_seed_000_fashion_mnist_inception_mixed7(tmp_path, capsys):
    classes = ("ankle_boot", "bag", "trouser")
    data = tmp_path / "fashion_mnist"
    class_folders(data / "train", classes, 4, seed=0, size=28, mode="L")
    class_folders(data / "test", classes, 2, seed=1, size=28, mode="L")
    cache, runs, _ = extract_and_fit(
        "000", data, tmp_path, capsys,
        extract_extra=["--weights", "none", "--input-size", "75", "--augment", "1"],
        fit_extra=["--param", "epochs=2", "--param", "pixels.size=32"],
    )
    # mixed7 of InceptionV3 at 75x75 is a 3x3x768 map, flattened
    check_cache(cache, backbone="inception_v3", layers=["mixed7"], pooling="flatten", preprocessing="rescale",
                resize="squash", interpolation="nearest", input_size=75, feature_dim=3 * 3 * 768)
    with open_cache(cache) as opened:
        assert opened.config["augment"]["recipe"]["name"] == "imagedatagenerator"
        assert len(opened.view_rows) == 12  # one stored view of each training image (test images never)
    assert set(runs) == {"dense", "pixels"}
    check_run(runs["dense"], params={"hidden": [1024], "dropout": 0.2, "optimizer": "rmsprop", "learning_rate": 1e-4,
                                     "batch_size": 100}, split="source", n_train=12, n_test=6)
    check_run(runs["pixels"], params={"size": 32, "filters": [32, 32, 64], "hidden": [1024]}, split="source",
              n_train=12, n_test=6)


# --------------------------------------------------------------------------- seed 001


@pytest.mark.slow  # builds a full-size keras.applications network
def test_seed_001_dogs_vs_cats_vgg16_fc2_sigmoid(tmp_path, capsys):
    data = tmp_path / "dogscats"
    class_folders(data / "train", ("cats", "dogs"), 2, seed=2, fmt="jpg")
    class_folders(data / "valid", ("cats", "dogs"), 1, seed=3, fmt="jpg")
    # --batch-size 6: extract pads a short batch to the batch size, and VGG at 224 is costly per image
    cache, runs, _ = extract_and_fit(
        "001", data, tmp_path, capsys, extract_extra=["--weights", "none", "--batch-size", "6"], fit_extra=[],
    )
    check_cache(cache, backbone="vgg16", layers=["fc2"], preprocessing="caffe", input_size=224, resize="squash",
                interpolation="nearest", feature_dim=4096)
    config = check_run(runs["dense"], params={"hidden": [], "dropout": 0.5, "binary": "sigmoid", "optimizer": "adam",
                                              "learning_rate": 1e-3, "epochs": 1, "batch_size": 64},
                       split="source", n_train=4, n_test=2)
    import keras

    head = keras.saving.load_model(runs["dense"] / "model" / "head.keras", compile=False)
    assert head.output_shape == (None, 1)  # one sigmoid unit, as the article's Dense(1, activation='sigmoid')
    assert config["class_names"] == ["cats", "dogs"]


# --------------------------------------------------------------------------- seed 002


@pytest.mark.slow  # builds a full-size keras.applications network
def test_seed_002_flowers_efficientnet_b0_keras_split(tmp_path, capsys):
    import keras

    data = tmp_path / "flower_photos"
    class_folders(data, ("daisy", "dandelion", "roses", "sunflowers", "tulips"), 4, seed=4, fmt="jpg")
    (data / "LICENSE.txt").write_text("stand-in licence file, as in the real tarball\n")
    cache, runs, _ = extract_and_fit(
        "002", data, tmp_path, capsys, extract_extra=["--weights", "none", "--input-size", "64"], fit_extra=[],
    )
    check_cache(cache, backbone="efficientnet_b0", pooling="avg", input_size=64, resize="squash", feature_dim=1280)
    config = check_run(runs["dense"], params={"hidden": [], "batch_norm": True, "dropout": 0.2, "optimizer": "adam",
                                              "learning_rate": 1e-2, "epochs": 2, "batch_size": 32},
                       split="keras", n_train=16, n_test=4)
    assert config["split"]["test_size"] == 0.2 and config["seed"] == 123
    head = keras.saving.load_model(runs["dense"] / "model" / "head.keras", compile=False)
    kinds = [type(layer).__name__ for layer in head.layers]
    assert kinds == ["InputLayer", "BatchNormalization", "Dropout", "Dense"]
    # the validation rows are exactly the files Keras' own split gives the article
    subsets = {}
    for subset in ("training", "validation"):
        dataset = keras.utils.image_dataset_from_directory(
            data, validation_split=0.2, subset=subset, seed=123, image_size=(8, 8), verbose=False,
        )
        subsets[subset] = {str(Path(p).relative_to(data)) for p in dataset.file_paths}
    with open(runs["dense"] / "predictions.csv", newline="") as handle:
        validated = {row["path"] for row in csv.DictReader(handle)}
    assert validated == subsets["validation"]
    with open_cache(cache) as opened:
        assert set(opened.paths) - validated == subsets["training"]


def test_keras_split_matches_keras_with_nested_folders_and_other_files(tmp_path):
    import keras

    from transfer_cache.fit import keras_validation_split

    data = class_folders(tmp_path / "photos", ("b", "a", "C"), 7, seed=5, size=8)
    class_folders(data / "a" / "deeper", ("x",), 3, seed=6, size=8)  # Keras walks class folders recursively
    (data / "a" / "notes.txt").write_text("not an image")
    (data / ".hidden").mkdir()
    paths = [str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()]
    for seed in (123, 7):
        train, val = keras_validation_split(paths, validation_split=0.3, seed=seed)
        for subset, mine in (("training", train), ("validation", val)):
            dataset = keras.utils.image_dataset_from_directory(
                data, validation_split=0.3, subset=subset, seed=seed, image_size=(8, 8), verbose=False,
            )
            assert [paths[i] for i in mine] == [str(Path(p).relative_to(data)) for p in dataset.file_paths]


# --------------------------------------------------------------------------- seed 003


def _cifar_batch(path: Path, rng, n: int, key_type=bytes) -> None:
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    images = np.stack([np.asarray(_picture(rng, label, 32)) for label in labels])
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    content = {b"batch_label": b"stand-in", b"labels": labels, b"data": data,
               b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    path.write_bytes(pickle.dumps(content, protocol=4))


@pytest.mark.slow  # builds a full-size keras.applications network
def test_seed_003_cifar10_inception_transfer_values(tmp_path, capsys):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    data = tmp_path / "cifar-10-batches-py"
    data.mkdir()
    (data / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=4))
    rng = np.random.default_rng(7)
    _cifar_batch(data / "data_batch_1", rng, 30)
    _cifar_batch(data / "test_batch", rng, 20)
    cache, runs, out = extract_and_fit(
        "003", data, tmp_path, capsys, extract_extra=["--weights", "none", "--input-size", "75"],
        fit_extra=["--param", "epochs=2"],
    )
    check_cache(cache, backbone="inception_v3", pooling="avg", preprocessing="tf", input_size=75, feature_dim=2048)
    check_run(runs["dense"], params={"hidden": [1024], "dropout": 0.0, "optimizer": "adam", "learning_rate": 1e-4,
                                     "batch_size": 64}, split="source", n_train=30, n_test=20)
    # --print-confusion: the article's layout, one row per true class with its index and name
    matrix = json.loads((runs["dense"] / "metrics.json").read_text())["confusion_matrix"]
    assert "Confusion Matrix:" in out
    for k, name in enumerate(names):
        row = "[" + " ".join(f"{v:>3}" for v in matrix[k]) + f"] ({k}) {name}"
        assert row in out.splitlines()
    # PCA and t-SNE of the transfer values: the report command of the README, on the cache
    report_args = command("003", "report")
    assert Path(report_args[0]).name == Path(command("003", "fit")[0]).name
    page = tmp_path / "cifar.html"
    run_cli("report", [str(cache)] + report_args[1:] + ["--out", str(page)], capsys)
    html = page.read_text(encoding="utf-8")
    assert "PCA" in html and "t-SNE" in html


def test_print_confusion_layout_is_the_articles():
    from transfer_cache.fit import format_confusion

    text = format_confusion([[926, 6], [9, 921]], ["airplane", "automobile"])
    assert text.splitlines() == ["Confusion Matrix:", "[926   6] (0) airplane", "[  9 921] (1) automobile", " (0) (1)"]


# --------------------------------------------------------------------------- seed 004


@pytest.mark.slow  # builds a full-size keras.applications network
def test_seed_004_vehicles_vgg19_fc2_unstratified_ten_percent(tmp_path, capsys):
    from sklearn.model_selection import train_test_split

    data = tmp_path / "VehicleDataset" / "train"
    class_folders(data, ("qingqi", "rickshaw", "tanga"), 2, seed=8, fmt="jpg")
    cache, runs, _ = extract_and_fit(
        "004", data, tmp_path, capsys, extract_extra=["--weights", "none", "--batch-size", "6"],
        fit_extra=["--param", "epochs=3"],
    )
    check_cache(cache, backbone="vgg19", layers=["fc2"], preprocessing="rescale", input_size=224, resize="squash",
                feature_dim=4096)
    config = check_run(runs["dense"], params={"hidden": [], "dropout": 0.0, "optimizer": "rmsprop",
                                              "learning_rate": 1e-4, "batch_size": 32},
                       split="unstratified", n_train=5, n_test=math.ceil(0.1 * 6))
    assert config["seed"] == 42 and config["split"]["test_size"] == 0.1
    _, expected = train_test_split(np.arange(6), test_size=0.1, random_state=42)  # the article's call
    with open(runs["dense"] / "predictions.csv", newline="") as handle:
        assert sorted(int(row["row"]) for row in csv.DictReader(handle)) == sorted(expected.tolist())


# --------------------------------------------------------------------------- datasets (offline parts)


def _idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_datasets_fashion_mnist_from_idx_files(tmp_path, capsys):
    from transfer_cache.datasets import FASHION_CLASSES, FASHION_FILES

    rng = np.random.default_rng(9)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    sizes = {"train": 12, "test": 5}
    for split, (images_name, labels_name) in FASHION_FILES.items():
        (downloads / images_name).write_bytes(_idx(rng.integers(0, 256, size=(sizes[split], 28, 28))))
        (downloads / labels_name).write_bytes(_idx(np.arange(sizes[split]) % 10))
    out = run_cli(
        "datasets", ["fashion_mnist", "--dest", str(tmp_path / "data"), "--from", str(downloads), "--quiet"], capsys
    )
    root = tmp_path / "data" / "fashion_mnist"
    assert "17 files" in out and str(root) in out
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(FASHION_CLASSES)
    first = Image.open(root / "train" / FASHION_CLASSES[0] / "00000.png")
    assert first.mode == "L" and first.size == (28, 28)
    assert len(list((root / "test").rglob("*.png"))) == 5
    again = run_cli("datasets", ["fashion_mnist", "--dest", str(tmp_path / "data"), "--from", str(downloads)], capsys)
    assert "already" in again


def test_datasets_dogs_vs_cats_from_kaggle_zip_and_manual_steps(tmp_path, capsys):
    from transfer_cache.datasets import main

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as handle:
        for kind in ("cat", "dog"):
            for i in range(6):
                handle.writestr(f"train/{kind}.{i}.jpg", b"jpeg bytes " + bytes([i]))
    outer = tmp_path / "dogs-vs-cats.zip"
    with zipfile.ZipFile(outer, "w") as handle:
        handle.writestr("train.zip", inner.getvalue())
        handle.writestr("sampleSubmission.csv", "id,label\n")
    run_cli("datasets", ["dogs_vs_cats", "--dest", str(tmp_path / "data"), "--from", str(outer), "--quiet"], capsys)
    root = tmp_path / "data" / "dogscats"
    for kind in ("cats", "dogs"):
        assert len(list((root / "valid" / kind).iterdir())) == 3  # min(1000, half of the class)
        assert len(list((root / "train" / kind).iterdir())) == 3
    assert main(["dogs_vs_cats", "--dest", str(tmp_path / "elsewhere")]) == 1
    assert "Kaggle account" in capsys.readouterr().out


def test_datasets_cifar10_tarball_and_refusals(tmp_path, capsys):
    from transfer_cache.datasets import main

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("batches.meta", "data_batch_1", "test_batch"):
            payload = pickle.dumps({b"x": 1}, protocol=4)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    run_cli("datasets", ["cifar10", "--dest", str(tmp_path / "data"), "--from", str(archive)], capsys)
    assert sorted(p.name for p in (tmp_path / "data" / "cifar-10-batches-py").iterdir()) == [
        "batches.meta", "data_batch_1", "test_batch"]
    assert main(["cifar10", "--dest", str(tmp_path / "d2"), "--from", str(tmp_path / "missing.tgz")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"--from {tmp_path / 'missing.tgz'} does not exist; give the downloaded archive (or folder)")
    with pytest.raises(TransferCacheError, match=re.escape("dataset must be one of 'fashion_mnist', 'dogs_vs_cats', "
                                                           "'flowers', 'cifar10', 'vehicles'; got 'mnist'")):
        from transfer_cache.datasets import fetch

        fetch("mnist", dest=tmp_path)


def test_datasets_vehicles_from_a_cloned_folder(tmp_path, capsys):
    clone = tmp_path / "VehicleDataset-master"
    class_folders(clone / "train", ("qingqi", "rickshaw", "tanga"), 2, seed=10, size=8, fmt="jpg")
    run_cli("datasets", ["vehicles", "--dest", str(tmp_path / "data"), "--from", str(clone)], capsys)
    assert len(list((tmp_path / "data" / "VehicleDataset" / "train").rglob("*.jpg"))) == 6
    bad = class_folders(tmp_path / "wrong", ("cars",), 1, seed=11, size=8)
    from transfer_cache.datasets import VEHICLES_LAYOUT, fetch

    with pytest.raises(
        TransferCacheError, match=re.escape(f"{bad} does not have the seed's layout: {VEHICLES_LAYOUT}")
    ):
        fetch("vehicles", dest=tmp_path / "d3", source=bad)


def test_datasets_download_fails_fast_with_a_network_message(tmp_path, monkeypatch):
    import socket
    import time

    from transfer_cache import datasets

    with socket.socket() as probe:  # a port nothing listens on: the connection is refused at once, as offline
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/flower_photos.tgz"
    monkeypatch.setattr(datasets, "FLOWERS_URL", url)
    start = time.perf_counter()
    with pytest.raises(TransferCacheError, match=re.escape(f"could not download {url}: ")) as caught:
        datasets.fetch("flowers", dest=tmp_path / "data", progress=False)
    assert time.perf_counter() - start < 10
    assert "this command needs the network" in str(caught.value)
    assert not (tmp_path / "data" / "flower_photos").exists()
    assert not list((tmp_path / "data").glob(".downloads/*"))
