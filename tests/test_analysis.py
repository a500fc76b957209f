"""analysis.py: figures carry exactly the data of the cache and the run folder they were drawn from.

The helpers at the top (real PNG folders, real HDF5 caches, real fitted run folders) are shared with test_report.py,
test_report_browser.py and test_analysis_real_runs.py.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer_cache import analysis
from transfer_cache._errors import TransferCacheError
from transfer_cache.cache import Rows, open_cache, write_cache

from conftest import synthetic_attrs

CLASSES = ("cat", "dog", "fox")


# --------------------------------------------------------------------------- shared helpers


def colour_of(label: int, index: int) -> tuple[int, int, int]:
    """A colour unique to each image, so a thumbnail proves which file it came from."""
    return (30 + 90 * label, 10 + 6 * index, 250 - 6 * index)


def make_image_folder(root: Path, *, per_class: int = 12, size=(20, 14)) -> list[tuple[str, int]]:
    """root/<class>/img_XX.png, each a solid colour; returns (relative path, label) in sorted order."""
    items = []
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            relative = f"{name}/img_{index:02d}.png"
            Image.new("RGB", size, colour_of(label, index)).save(root / relative)
            items.append((relative, label))
    return sorted(items)


def base_attrs(**overrides) -> dict:
    return synthetic_attrs(**{"layers": ["features"], "preprocessing": "none", "class_names": list(CLASSES),
                              "source": "synthetic", **overrides})


def make_blob_cache(
    path: Path,
    *,
    labels,
    paths=None,
    dim: int = 16,
    seed: int = 0,
    spread: float = 2.0,
    test_every: int = 4,
    source_root: Path | None = None,
    failed=(),
    **attrs,
) -> Path:
    """A real cache of Gaussian blobs (one centre per class); every ``test_every``-th row is in the test split."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    centres = rng.normal(0.0, 3.0, size=(len(CLASSES), dim))
    features = (centres[np.maximum(labels, 0)] + rng.normal(0.0, spread, size=(len(labels), dim))).astype(np.float32)
    paths = (list(paths) if paths is not None
             else [f"{CLASSES[max(label, 0)]}/img_{i:05d}.png" for i, label in enumerate(labels)])
    if source_root is not None:
        digests = [hashlib.sha256((source_root / p).read_bytes()).hexdigest() for p in paths]
        attrs.setdefault("source", f"folder:{source_root}")
        attrs.setdefault("source_root", str(source_root))
    else:
        digests = [hashlib.sha256(p.encode()).hexdigest() for p in paths]
    split = ["test" if i % test_every == 0 else "train" for i in range(len(labels))]
    rows = Rows(ids=digests, paths=paths, labels=labels.tolist(), split=split, failed=list(failed))
    return write_cache(path, attrs=base_attrs(**attrs), rows=rows, features=[features])


def make_folder_cache(tmp_path: Path, *, per_class: int = 12, spread: float = 2.0,
                      name="cache.h5") -> tuple[Path, Path]:
    root = tmp_path / "images"
    items = make_image_folder(root, per_class=per_class)
    path = make_blob_cache(tmp_path / name, labels=[label for _, label in items], paths=[p for p, _ in items],
                           spread=spread, source_root=root)
    return path, root


def _metrics(y_test: np.ndarray, pred: np.ndarray, names: list, *, n_train: int, fit_seconds: float) -> dict:
    """metrics.json as fit writes it, for a run's test rows."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    k = len(names)
    precision, recall, f1, support = precision_recall_fscore_support(y_test, pred, labels=range(k), zero_division=0)
    return {
        "accuracy": float((pred == y_test).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro")),
        "per_class": {names[c]: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                                 "support": int(support[c])} for c in range(k)},
        "confusion_matrix": confusion_matrix(y_test, pred, labels=range(k)).tolist(),
        "class_names": names,
        "n_train": int(n_train),
        "n_test": int(len(y_test)),
        "fit_seconds": fit_seconds,
        "predict_seconds": 0.001,
    }


def make_run(runs_dir: Path, cache_path: Path, *, classifier: str = "logreg", history: dict | None = None) -> Path:
    """A run folder in the interfaces.md format, from a real scikit-learn fit on the cache's train/test split."""
    from sklearn.linear_model import LogisticRegression

    with open_cache(cache_path) as cache:
        X = cache.features[:]
        y = cache.labels
        split = cache.split
        names = list(cache.class_names)
        paths = list(cache.paths)
        fingerprint = cache.fingerprint
        backbone = cache.config["backbone"]
    train = np.flatnonzero(split == "train")
    test = np.flatnonzero(split == "test")
    started = time.perf_counter()
    model = LogisticRegression(max_iter=200, C=0.05).fit(X[train], y[train])
    fit_seconds = time.perf_counter() - started
    proba = model.predict_proba(X[test])
    pred = model.classes_[proba.argmax(axis=1)]
    metrics = _metrics(y[test], pred, names, n_train=len(train), fit_seconds=fit_seconds)
    created = dt.datetime.now()
    run_id = f"{created:%Y%m%d-%H%M%S}-{classifier}-{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:6]}"
    run_dir = runs_dir / run_id
    (run_dir / "model").mkdir(parents=True)
    config = {
        "run_id": run_id, "classifier": classifier, "params": {"C": 0.05, "max_iter": 200},
        "caches": [{"path": str(cache_path), "fingerprint": fingerprint, "rows": int(len(y))}],
        "layer": "features", "split": {"method": "source", "test_size": None, "seed": 0, "cv": 0}, "seed": 0,
        "created": created.isoformat(timespec="seconds"), "versions": {"transfer_cache": "0.1.0"},
        "backbone": backbone, "class_names": names,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    with open(run_dir / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "cache", "path", "true_label", "true_name", "pred_label", "pred_name", "confidence",
                         *[f"prob_{n}" for n in names]])
        for i, row in enumerate(test):
            writer.writerow([row, 0, paths[row], y[row], names[y[row]], pred[i], names[pred[i]], proba[i].max(),
                             *proba[i]])
    if history is not None:
        (run_dir / "history.json").write_text(json.dumps(history))
    index = runs_dir / "index.csv"
    new = not index.exists()
    with open(index, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["run_id", "created", "classifier", "backbone", "fingerprint", "cache", "accuracy",
                             "balanced_accuracy", "macro_f1", "n_train", "n_test", "fit_seconds", "run_dir"])
        writer.writerow([run_id, config["created"], classifier, backbone, fingerprint, str(cache_path),
                         metrics["accuracy"], metrics["balanced_accuracy"], metrics["macro_f1"], metrics["n_train"],
                         metrics["n_test"], fit_seconds, str(run_dir)])
    return run_dir


def decode_data_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def scatter_points(fig) -> int:
    return sum(len(trace.x) for trace in fig.data)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def single_openmp_thread():
    """t-SNE's OpenMP threads spin and slow down badly on a shared, busy 2-core machine; one thread is steady."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture
def blob_cache(tmp_path) -> Path:
    labels = np.repeat(np.arange(3), 40)
    return make_blob_cache(tmp_path / "blobs.h5", labels=labels)


@pytest.fixture
def folder_run(tmp_path) -> tuple[Path, Path]:
    cache_path, _ = make_folder_cache(tmp_path, per_class=16, spread=8.0)
    return make_run(tmp_path / "runs", cache_path), cache_path


# --------------------------------------------------------------------------- PCA, variance, t-SNE


def test_pca_all_rows_matches_sklearn_and_hover_shows_paths(blob_cache):
    from sklearn.decomposition import PCA

    fig = analysis.pca_figure(str(blob_cache))
    with open_cache(blob_cache) as cache:
        expected = PCA(n_components=2, random_state=0).fit_transform(cache.features[:])
        paths = cache.paths
        labels = cache.labels
    assert scatter_points(fig) == 120
    assert [trace.name for trace in fig.data] == list(CLASSES)
    assert "all 120 rows" in fig.layout.title.text
    for trace in fig.data:
        rows = np.asarray(trace.customdata)
        assert (labels[rows] == CLASSES.index(trace.name)).all()
        assert list(trace.text) == [paths[r] for r in rows]
        np.testing.assert_allclose(trace.x, expected[rows, 0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(trace.y, expected[rows, 1], rtol=1e-4, atol=1e-4)
        assert "%{text}" in trace.hovertemplate and trace.name in trace.hovertemplate
    assert re.fullmatch(r"PC1 \(\d+\.\d%\)", fig.layout.xaxis.title.text)


def test_pca_sample_is_seeded_and_stated(blob_cache):
    fig = analysis.pca_figure(blob_cache, sample=50, seed=3)
    again = analysis.pca_figure(blob_cache, sample=50, seed=3)
    other = analysis.pca_figure(blob_cache, sample=50, seed=4)
    assert scatter_points(fig) == 50
    assert "sampled 50 of 120 rows" in fig.layout.title.text
    rows = sorted(np.concatenate([t.customdata for t in fig.data]).tolist())
    assert rows == sorted(np.concatenate([t.customdata for t in again.data]).tolist())
    assert rows != sorted(np.concatenate([t.customdata for t in other.data]).tolist())
    assert rows == analysis.sample_rows(120, 50, 3).tolist()


def test_pca_3d_and_unlabelled_rows(tmp_path):
    labels = np.array([0, 1, 2, -1] * 10)
    path = make_blob_cache(tmp_path / "u.h5", labels=labels)
    fig = analysis.pca_figure(path, dims=3)
    assert {trace.type for trace in fig.data} == {"scatter3d"}
    assert [trace.name for trace in fig.data] == [*CLASSES, "unlabelled"]
    assert len(fig.data[-1].x) == 10
    assert fig.layout.scene.zaxis.title.text.startswith("PC3")


def test_read_rows_reads_blockwise_the_same_rows(blob_cache, monkeypatch):
    import transfer_cache.cache as cache_module

    monkeypatch.setattr(cache_module, "_READ_BLOCK_BYTES", 16 * 4 * 7)  # 7 rows per block: many blocks
    rows = analysis.sample_rows(120, 33, 1)
    with open_cache(blob_cache) as cache:
        np.testing.assert_array_equal(analysis.read_rows(cache, rows), cache.features[:][rows])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dims": 4}, "dims must be 2 or 3; got 4"),
        ({"sample": 0}, "sample must be a whole number of at least 1; got 0"),
        ({"layer": "fc2"}, "has no layer 'fc2'; it holds ['features']"),
    ],
)
def test_pca_validation(blob_cache, kwargs, message):
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        analysis.pca_figure(blob_cache, **kwargs)


def test_pca_of_missing_cache_says_so(tmp_path):
    with pytest.raises(TransferCacheError, match=re.escape(f"cache file {tmp_path / 'nope.h5'} does not exist")):
        analysis.pca_figure(tmp_path / "nope.h5")


def test_explained_variance_is_capped_by_the_data(blob_cache):
    fig = analysis.explained_variance_figure(blob_cache, n_components=50)
    bars, cumulative = fig.data
    assert len(bars.x) == 16  # 16-d vectors: no more components than dimensions
    assert "first 16 principal components" in fig.layout.title.text
    np.testing.assert_allclose(cumulative.y[-1], 100.0, rtol=1e-4)
    np.testing.assert_allclose(np.cumsum(bars.y), cumulative.y, rtol=1e-4)
    assert list(bars.y) == sorted(bars.y, reverse=True)


def test_tsne_is_seeded_sampled_and_validated(blob_cache):
    fig = analysis.tsne_figure(blob_cache, sample=60, perplexity=10, pca_dims=8, seed=0)
    again = analysis.tsne_figure(blob_cache, sample=60, perplexity=10, pca_dims=8, seed=0)
    assert scatter_points(fig) == 60
    assert "sampled 60 of 120 rows" in fig.layout.title.text and "PCA to 8 dims" in fig.layout.title.text
    for a, b in zip(fig.data, again.data):
        np.testing.assert_allclose(a.x, b.x, rtol=1e-5)
    # well separated blobs stay separated: each point's nearest t-SNE neighbour mostly shares its class
    coords = np.concatenate([np.column_stack([t.x, t.y]) for t in fig.data])
    classes = np.concatenate([[t.name] * len(t.x) for t in fig.data])
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (classes[d.argmin(1)] == classes).mean() > 0.8
    with pytest.raises(TransferCacheError,
                       match=re.escape("perplexity must be less than the number of points (60); got 60")):
        analysis.tsne_figure(blob_cache, sample=60, perplexity=60)


def test_class_counts_per_split(tmp_path):
    labels = np.array([0] * 8 + [1] * 4 + [2] * 12 + [-1] * 2)
    path = make_blob_cache(tmp_path / "c.h5", labels=labels, test_every=2,
                           failed=[("cat/bad.png", "empty file (0 bytes)")])
    fig = analysis.class_counts_figure(path)
    by_split = {trace.name: list(trace.y) for trace in fig.data}
    assert list(fig.data[0].x) == [*CLASSES, "unlabelled"]
    assert by_split == {"train": [4, 2, 6, 1], "test": [4, 2, 6, 1]}
    assert "26 rows, 3 classes, 1 failed" in fig.layout.title.text


def test_class_similarity_matches_numpy(tmp_path, monkeypatch):
    # streamed in blocks of 5 rows
    monkeypatch.setattr(__import__("transfer_cache.cache").cache, "_READ_BLOCK_BYTES", 16 * 4 * 5)
    labels = np.array([0, 1, 2, -1, 2, 2] * 7)
    path = make_blob_cache(tmp_path / "s.h5", labels=labels)
    fig = analysis.class_similarity_figure(path)
    with open_cache(path) as cache:
        X = cache.features[:].astype(np.float64)
    labelled = labels >= 0
    means = np.stack([X[labels == k].mean(0) for k in range(3)]) - X[labelled].mean(0)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_allclose(fig.data[0].z, means @ means.T, atol=1e-5)
    assert list(fig.data[0].x) == list(CLASSES)
    assert "35 labelled rows" in fig.layout.title.text
    one_class = make_blob_cache(tmp_path / "one.h5", labels=[0] * 5)
    with pytest.raises(TransferCacheError, match=re.escape("class similarity needs labelled rows of at least 2 "
                                                           "classes; the cache has 1")):
        analysis.class_similarity_figure(one_class)


# --------------------------------------------------------------------------- run folders


def test_load_run_reads_every_file(folder_run):
    run_dir, _ = folder_run
    run = analysis.load_run(run_dir)
    assert run["config"]["run_id"] == run_dir.name
    p = run["predictions"]
    assert p["row"].dtype == np.int64 and p["confidence"].dtype == np.float64
    assert len(p["row"]) == run["metrics"]["n_test"]
    assert set(p) >= {"prob_cat", "prob_dog", "prob_fox"}
    np.testing.assert_allclose(p["prob_cat"] + p["prob_dog"] + p["prob_fox"], 1.0, rtol=1e-6)
    assert run["history"] is None


def test_load_run_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(TransferCacheError, match=re.escape(f"{tmp_path} is not a run folder: config.json is missing")):
        analysis.load_run(tmp_path)


def test_confusion_matrix_cells_equal_metrics(folder_run):
    run_dir, _ = folder_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fig = analysis.confusion_matrix_figure(metrics)
    heatmap = fig.data[0]
    assert np.asarray(heatmap.z).tolist() == metrics["confusion_matrix"]
    assert list(heatmap.x) == list(CLASSES) and list(heatmap.y) == list(CLASSES)
    assert heatmap.texttemplate == "%{z}"
    assert fig.layout.yaxis.autorange == "reversed"  # first class on top, as printed by seed 003
    assert (np.asarray(analysis.confusion_matrix_figure(analysis.load_run(run_dir)).data[0].z).tolist()
            == metrics["confusion_matrix"])
    normalised = analysis.confusion_matrix_figure(run_dir, normalize=True).data[0]
    counts = np.asarray(metrics["confusion_matrix"])
    np.testing.assert_allclose(normalised.z, counts / counts.sum(1, keepdims=True))
    assert np.asarray(normalised.customdata).tolist() == metrics["confusion_matrix"]


def test_confusion_matrix_rejects_inconsistent_metrics():
    metrics = {"confusion_matrix": [[1, 2], [3, 4]], "class_names": ["a", "b", "c"]}
    with pytest.raises(TransferCacheError,
                       match=re.escape("confusion_matrix has shape (2, 2) but there are 3 class names")):
        analysis.confusion_matrix_figure(metrics)


def test_per_class_accuracy_is_recall(folder_run):
    run_dir, _ = folder_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    bars = analysis.per_class_accuracy_figure(metrics).data[0]
    np.testing.assert_allclose(bars.y, [metrics["per_class"][n]["recall"] for n in CLASSES])
    assert [int(c[0]) for c in bars.customdata] == [metrics["per_class"][n]["support"] for n in CLASSES]


def test_misclassified_gallery_shows_the_right_images(folder_run):
    run_dir, _ = folder_run
    run = analysis.load_run(run_dir)
    p = run["predictions"]
    wrong = int((p["true_label"] != p["pred_label"]).sum())
    assert wrong >= 3, "the fixture must produce mistakes to test the gallery"
    fig = analysis.misclassified_figure(run_dir, limit=24)
    images = [t for t in fig.data if t.type == "image"]
    assert len(images) == min(24, wrong)
    items = analysis.misclassified(run, limit=24)
    confidences = [item["confidence"] for item in items]
    assert confidences == sorted(confidences, reverse=True)
    titles = [a.text for a in fig.layout.annotations]
    for trace, item, title in zip(images, items, titles):
        assert trace.name == item["path"]
        thumb = decode_data_uri(trace.source)
        label = CLASSES.index(item["path"].split("/")[0])
        index = int(item["path"][-6:-4])
        assert tuple(thumb[0, 0]) == colour_of(label, index)  # the thumbnail is that file's image
        assert max(thumb.shape[:2]) == 96
        assert f"true <b>{item['true_name']}</b>" in title and f"pred <b>{item['pred_name']}</b>" in title
    assert f"{len(images)} shown of {wrong} wrong" in fig.layout.title.text
    assert len([t for t in analysis.misclassified_figure(run_dir, limit=2).data if t.type == "image"]) == 2


def test_misclassified_reads_from_source_root_when_the_source_is_unknown(tmp_path):
    root = tmp_path / "images"
    items = make_image_folder(root, per_class=16)
    cache_path = make_blob_cache(tmp_path / "c.h5", labels=[label for _, label in items], paths=[p for p, _ in items],
                                 spread=8.0, source_root=root, source="gone:elsewhere")
    run_dir = make_run(tmp_path / "runs", cache_path)
    images = [t for t in analysis.misclassified_figure(run_dir).data if t.type == "image"]
    assert images and all(decode_data_uri(t.source).shape[1] == 96 for t in images)


def test_run_cache_with_another_fingerprint_is_refused(folder_run, tmp_path):
    run_dir, cache_path = folder_run
    labels = np.repeat(np.arange(3), 16)
    make_blob_cache(cache_path, labels=labels, pooling="max")  # replaced by another configuration
    with pytest.raises(TransferCacheError, match=re.escape(f"cache {cache_path} has fingerprint")):
        analysis.misclassified_figure(run_dir)


def test_training_curves_plot_history():
    history = {"loss": [1.0, 0.6, 0.4], "accuracy": [0.5, 0.7, 0.8], "val_loss": [1.1, 0.8, 0.7],
               "val_accuracy": [0.45, 0.6, 0.66]}
    fig = analysis.training_curves_figure(history)
    curves = {trace.name: list(trace.y) for trace in fig.data}
    assert curves == history
    assert {trace.xaxis for trace in fig.data if "loss" in trace.name} == {"x2"}
    assert [trace.line.dash for trace in fig.data] == ["solid", "dash", "solid", "dash"]
    with pytest.raises(TransferCacheError, match=re.escape("history must be Keras History.history")):
        analysis.training_curves_figure({})


def test_leaderboard_sorts_runs_from_the_index(tmp_path):
    runs = tmp_path / "runs"
    good, _ = make_folder_cache(tmp_path / "a", per_class=12, spread=1.0)
    poor, _ = make_folder_cache(tmp_path / "b", per_class=12, spread=8.0)
    make_run(runs, poor, classifier="poor")
    make_run(runs, good, classifier="good")
    index = analysis.read_index(runs)
    fig = analysis.leaderboard_figure(runs)
    accuracy = fig.data[0]
    assert accuracy.name == "accuracy"
    best = max(index, key=lambda r: r["accuracy"])
    assert accuracy.y[-1].startswith(best["classifier"])  # best on top
    assert sorted(accuracy.x) == sorted(r["accuracy"] for r in index)
    assert "2 runs" in fig.layout.title.text
    with pytest.raises(TransferCacheError,
                       match=re.escape("sort_by must be one of 'accuracy', 'balanced_accuracy', 'macro_f1'; got 'f1'")):
        analysis.leaderboard_figure(runs, sort_by="f1")
    with pytest.raises(TransferCacheError, match=re.escape(f"no runs index at {tmp_path / 'index.csv'}")):
        analysis.leaderboard_figure(tmp_path)


# --------------------------------------------------------------------------- real extract + fit run folders


def make_real_runs(base: Path, classifiers=("logreg", "dense")) -> tuple[Path, list[Path]]:
    """Extract a PNG folder with the tiny backbone and fit (by default) logreg and a 3-epoch dense head with
    transfer_cache.fit."""
    from transfer_cache.extract import extract
    from transfer_cache.fit import fit

    make_image_folder(base / "images", per_class=16)
    result = extract(str(base / "images"), backbone="tiny", weights="none", cache_dir=base / "caches", progress=False)
    params = {name: ({"epochs": 3} if name == "dense" else {}) for name in classifiers}
    runs = fit([result.path], classifier=list(classifiers), params=params, runs_dir=base / "runs",
               progress=False)
    return Path(result.path), [Path(r.run_dir) for r in runs]


def test_umap_beside_tsne_is_seeded_and_shows_every_sampled_row(blob_cache):
    """Also: no warning reaches the caller (umap-learn warned "n_jobs value 1 overridden to 1" on every seeded call)."""
    import warnings

    pytest.importorskip("umap", reason="UMAP is the optional extra transfer_cache[umap]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = analysis.umap_figure(blob_cache, sample=60, seed=3)
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    again = analysis.umap_figure(blob_cache, sample=60, seed=3)
    assert sum(len(trace.x) for trace in first.data) == 60
    assert first.layout.title.text.startswith("UMAP of")
    for a, b in zip(first.data, again.data):
        np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-5)
