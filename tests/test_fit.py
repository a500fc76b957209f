"""fit(): splits, run folders, the index, leaderboards and the CLI, on small synthetic caches written with
write_cache."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from transfer_cache._errors import TransferCacheError
from transfer_cache.classifiers.sklearn_heads import KNN
from transfer_cache.fit import INDEX_COLUMNS, fit, main

from conftest import write_synthetic_cache

CLASSES = ["ant", "bee", "cow"]


@pytest.fixture(autouse=True)
def _own_trust_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CACHE_TRUST_FILE", str(tmp_path / "trusted.txt"))


def make_cache(path, *, n=200, seed=0, split=None, labels=None, backbone="tiny", pooling="avg", layers=("feat",),
               d=16, class_names=CLASSES):
    """Three separable Gaussian blobs as a real cache file (one feature array per layer)."""
    rng = np.random.default_rng(seed)
    k = len(class_names)
    y = np.arange(n) % k if labels is None else np.asarray(labels)
    centers = np.random.default_rng(99).normal(0.0, 4.0, size=(k, d))
    features = [(centers[np.maximum(y, 0)] + rng.normal(0, 1.0, size=(n, d))).astype(np.float32) for _ in layers]
    return write_synthetic_cache(
        path, features=features, labels=y, ids=[f"{seed:08x}{i:056x}" for i in range(n)],
        paths=[f"img/{seed}_{i:04d}.png" for i in range(n)], split=split, backbone=backbone, pooling=pooling,
        layers=list(layers), class_names=list(class_names),
    )


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_run_folder_and_index_are_as_specified(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    runs = tmp_path / "runs"
    (result,) = fit([cache], classifier="logreg", runs_dir=runs, progress=False)

    assert re.fullmatch(r"\d{8}-\d{6}-logreg-[0-9a-f]{6}", result.run_id)
    assert result.run_dir == runs / result.run_id
    assert sorted(p.name for p in result.run_dir.iterdir()) == ["config.json", "metrics.json", "model",
                                                                 "predictions.csv"]
    config = json.loads((result.run_dir / "config.json").read_text())
    for key in ("run_id", "classifier", "params", "caches", "layer", "split", "seed", "created", "versions", "backbone",
                "class_names"):
        assert key in config
    assert config["caches"][0]["path"] == str(cache.resolve()) and config["caches"][0]["rows"] == 200
    assert config["split"] == {"method": "stratified", "test_size": 0.2, "seed": 0, "cv": 0}
    assert {"transfer_cache", "tensorflow", "keras", "scikit-learn", "numpy", "h5py"} <= set(config["versions"])
    assert config["params"]["C"] == 1.0 and config["class_names"] == CLASSES and config["backbone"] == "tiny"

    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "class_names",
                "n_train", "n_test", "fit_seconds", "predict_seconds"):
        assert key in metrics
    assert (metrics["n_train"], metrics["n_test"]) == (160, 40)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 40
    assert set(metrics["per_class"]) == set(CLASSES)
    assert sum(v["support"] for v in metrics["per_class"].values()) == 40

    rows = read_csv(result.run_dir / "predictions.csv")
    assert list(rows[0]) == ["row", "cache", "path", "true_label", "true_name", "pred_label", "pred_name", "confidence",
                             "prob_ant", "prob_bee", "prob_cow"]
    assert len(rows) == 40
    accuracy = np.mean([r["true_label"] == r["pred_label"] for r in rows])
    assert accuracy == pytest.approx(metrics["accuracy"])
    counted = np.zeros((3, 3), int)
    for r in rows:
        counted[int(r["true_label"]), int(r["pred_label"])] += 1
        assert r["path"] == f"img/0_{int(r['row']):04d}.png"
        assert CLASSES[int(r["true_label"])] == r["true_name"] and int(r["true_label"]) == int(r["row"]) % 3
    np.testing.assert_array_equal(counted, matrix)

    (index_row,) = read_csv(runs / "index.csv")
    assert tuple(index_row) == INDEX_COLUMNS
    assert index_row["run_id"] == result.run_id and index_row["run_dir"] == str(result.run_dir.resolve())
    assert float(index_row["accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert index_row["fingerprint"] == config["caches"][0]["fingerprint"]


def test_several_classifiers_give_a_sorted_leaderboard_and_append_to_the_index(tmp_path, capsys):
    cache = make_cache(tmp_path / "c.h5")
    runs = tmp_path / "runs"
    assert main([str(cache), "--classifier", "logreg,knn,random_forest", "--runs-dir", str(runs), "--quiet",
                 "--param", "knn.n_neighbors=3", "--param", "n_estimators=20"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    table = [line for line in out if re.match(r"\s+\d+\s+\w", line)]
    assert [line.split()[1] for line in table] and len(table) == 3
    scores = [float(line.split()[2]) for line in table]
    assert scores == sorted(scores, reverse=True)
    assert out[-1].startswith("3 runs in ") and "(160 train / 40 test rows); best " in out[-1]
    index = read_csv(runs / "index.csv")
    assert [r["classifier"] for r in index] == ["logreg", "knn", "random_forest"]
    knn_config = json.loads((runs / index[1]["run_id"] / "config.json").read_text())
    assert knn_config["params"] == {"n_neighbors": 3, "weights": "uniform", "metric": "euclidean"}
    main([str(cache), "--classifier", "knn", "--runs-dir", str(runs), "--quiet"])
    assert len(read_csv(runs / "index.csv")) == 4


def test_stratified_split_is_reproducible_from_its_seed(tmp_path):
    cache = make_cache(tmp_path / "c.h5")

    def test_rows(seed):
        (run,) = fit([cache], classifier="knn", seed=seed, runs_dir=tmp_path / "runs", progress=False)
        return sorted(int(r["row"]) for r in read_csv(run.run_dir / "predictions.csv"))

    first, again, other = test_rows(3), test_rows(3), test_rows(4)
    assert first == again and first != other
    labels = np.arange(200) % 3
    assert np.bincount(labels[first]).tolist() == [14, 13, 13]  # stratified: 40 rows in class proportion


def test_source_split_is_used_when_the_cache_has_one(tmp_path):
    split = ["train"] * 150 + ["test"] * 50
    cache = make_cache(tmp_path / "c.h5", split=split)
    (run,) = fit([cache], classifier="logreg", runs_dir=tmp_path / "runs", progress=False)
    assert (run.metrics["n_train"], run.metrics["n_test"]) == (150, 50)
    assert json.loads((run.run_dir / "config.json").read_text())["split"]["method"] == "source"
    assert sorted(int(r["row"]) for r in read_csv(run.run_dir / "predictions.csv")) == list(range(150, 200))
    (forced,) = fit([cache], classifier="logreg", split="stratified", runs_dir=tmp_path / "runs", progress=False)
    assert forced.metrics["n_test"] == 40


def test_train_val_split_without_test_tests_on_val(tmp_path):
    cache = make_cache(tmp_path / "c.h5", split=["train"] * 170 + ["val"] * 30)
    (run,) = fit([cache], classifier="logreg", runs_dir=tmp_path / "runs", progress=False)
    assert (run.metrics["n_train"], run.metrics["n_test"]) == (170, 30)


def test_cross_validation_reports_folds_and_predicts_every_row_once(tmp_path, capsys):
    cache = make_cache(tmp_path / "c.h5")
    assert main([str(cache), "--classifier", "logreg", "--cv", "4", "--runs-dir", str(tmp_path / "runs"),
                 "--quiet"]) == 0
    assert re.search(r"\(cv \d\.\d{4} ± \d\.\d{4} over 4 folds\)", capsys.readouterr().out)
    (row,) = read_csv(tmp_path / "runs" / "index.csv")
    metrics = json.loads((tmp_path / "runs" / row["run_id"] / "metrics.json").read_text())
    assert len(metrics["cv_scores"]) == 4
    assert metrics["cv_accuracy_mean"] == pytest.approx(np.mean(metrics["cv_scores"]))
    assert metrics["n_test"] == 200
    rows = read_csv(tmp_path / "runs" / row["run_id"] / "predictions.csv")
    assert sorted(int(r["row"]) for r in rows) == list(range(200))


def test_grid_search_records_the_best_parameters(tmp_path):
    """The grid's scores and winner equal scikit-learn's own GridSearchCV on the same rows and folds (an oracle that
    shares no code with fit); 25% flipped labels make the number of neighbours matter."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(3)
    n, truth = 300, np.arange(300) % 3
    X = (np.random.default_rng(99).normal(0, 2.0, size=(3, 8))[truth]
         + rng.normal(0, 1.5, size=(n, 8))).astype(np.float32)
    noisy = np.where(rng.random(n) < 0.25, rng.integers(0, 3, n), truth)
    cache = write_synthetic_cache(tmp_path / "c.h5", features=X, labels=noisy, class_names=CLASSES, layers=["feat"])
    (run,) = fit([cache], classifier="knn", grid=["n_neighbors=1,5,15"], cv=3, runs_dir=tmp_path / "runs",
                 progress=False)
    config = json.loads((run.run_dir / "config.json").read_text())

    train, _ = train_test_split(np.arange(n), test_size=0.2, random_state=0, stratify=noisy)
    train = np.sort(train)
    oracle = GridSearchCV(KNeighborsClassifier(), {"n_neighbors": [1, 5, 15]},
                          cv=StratifiedKFold(3, shuffle=True, random_state=0),
                          scoring="accuracy").fit(X[train], noisy[train])
    assert len(set(np.round(oracle.cv_results_["mean_test_score"], 6))) == 3  # the grid really discriminates
    assert config["grid_best_params"] == {"n_neighbors": oracle.best_params_["n_neighbors"]}
    assert config["params"]["n_neighbors"] == oracle.best_params_["n_neighbors"]
    np.testing.assert_allclose([r["mean_accuracy"] for r in config["grid_results"]],
                               oracle.cv_results_["mean_test_score"])
    assert config["split"]["method"] == "stratified"


def test_two_caches_with_the_same_fingerprint_are_concatenated(tmp_path):
    a = make_cache(tmp_path / "a.h5", n=90, seed=1)
    b = make_cache(tmp_path / "b.h5", n=60, seed=2)
    (run,) = fit([a, b], classifier="logreg", runs_dir=tmp_path / "runs", progress=False)
    assert run.metrics["n_train"] + run.metrics["n_test"] == 150
    rows = read_csv(run.run_dir / "predictions.csv")
    assert {r["cache"] for r in rows} == {"0", "1"}
    assert all(r["path"].startswith(f"img/{int(r['cache']) + 1}_") for r in rows)


def test_test_cache_gives_train_and_test_and_class_names_merge_by_name(tmp_path):
    train = make_cache(tmp_path / "train.h5", n=120, seed=1)
    test = make_cache(tmp_path / "test.h5", n=30, seed=2, class_names=["ant", "bee", "cow"])
    (run,) = fit([train], test_cache=test, classifier="logreg", runs_dir=tmp_path / "runs", progress=False)
    assert (run.metrics["n_train"], run.metrics["n_test"]) == (120, 30)
    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["split"]["method"] == "caches" and [c["role"] for c in config["caches"]] == ["train", "test"]
    assert run.accuracy >= 0.9


def test_caches_of_different_fingerprints_are_refused_with_the_exact_message(tmp_path):
    a = make_cache(tmp_path / "a.h5")
    b = make_cache(tmp_path / "b.h5", pooling="max")
    from transfer_cache.cache import open_cache

    with open_cache(a) as ca, open_cache(b) as cb:
        fa, fb = ca.fingerprint, cb.fingerprint
    message = (
        f"caches have different feature configurations: {a} (fingerprint {fa}, backbone tiny) vs {b} (fingerprint "
        f"{fb}, backbone tiny); extract both with the same --backbone/--layer/--pooling/--input-size"
    )
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        fit([a, b], classifier="logreg", runs_dir=tmp_path / "runs", progress=False)
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        fit([a], test_cache=b, classifier="logreg", runs_dir=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_unlabelled_rows_are_left_out_with_a_note(tmp_path, capsys):
    labels = np.arange(200) % 3
    labels[:20] = -1
    cache = make_cache(tmp_path / "c.h5", labels=labels)
    (run,) = fit([cache], classifier="knn", runs_dir=tmp_path / "runs", progress=True)
    assert run.metrics["n_train"] + run.metrics["n_test"] == 180
    assert "note: 20 unlabelled rows (label -1) are left out of training and testing" in capsys.readouterr().err
    assert json.loads((run.run_dir / "config.json").read_text())["notes"][0].startswith("20 unlabelled rows")


def test_a_multi_layer_cache_needs_a_layer(tmp_path):
    cache = make_cache(tmp_path / "c.h5", layers=("low", "high"))
    with pytest.raises(TransferCacheError, match=re.escape(
        f"cache {cache} holds several layers (low, high); choose one with --layer NAME"
    )):
        fit([cache], classifier="knn", runs_dir=tmp_path / "runs", progress=False)
    (run,) = fit([cache], classifier="knn", layer="high", runs_dir=tmp_path / "runs", progress=False)
    assert json.loads((run.run_dir / "config.json").read_text())["layer"] == "high"


def test_sgd_streams_from_hdf5_blocks(tmp_path, monkeypatch):
    """While SGD trains, every read of the features from HDF5 is one block of at most chunk_rows rows."""
    import h5py

    from transfer_cache.classifiers.sklearn_heads import SGD

    cache = make_cache(tmp_path / "c.h5", n=900)
    reads, training = [], []
    original_getitem, original_fit_stream = h5py.Dataset.__getitem__, SGD.fit_stream

    def spying_getitem(dataset, key):
        out = original_getitem(dataset, key)
        if training and dataset.name.startswith("/features"):
            reads.append(len(out))
        return out

    def spying_fit_stream(head, chunks, **kwargs):
        training.append(True)
        try:
            return original_fit_stream(head, chunks, **kwargs)
        finally:
            training.clear()

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spying_getitem)
    monkeypatch.setattr(SGD, "fit_stream", spying_fit_stream)
    (run,) = fit([cache], classifier="sgd", params=["chunk_rows=128", "epochs=3"], runs_dir=tmp_path / "runs",
                 progress=False)
    assert run.accuracy >= 0.9 and run.metrics["n_train"] == 720
    assert reads and max(reads) <= 128
    # a scaler pass and three epochs, each reading the 900-row cache once in blocks (test rows are read and skipped)
    assert sum(reads) == 900 * (1 + 3)


def test_dense_writes_history(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    (run,) = fit([cache], classifier="dense", params=["epochs=2", "hidden=16"], runs_dir=tmp_path / "runs",
                 progress=False)
    history = json.loads((run.run_dir / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"} and len(history["loss"]) == 2
    assert (run.run_dir / "model" / "head.keras").exists()


def test_an_interrupted_run_leaves_no_folder_and_no_index_row(tmp_path, monkeypatch):
    cache = make_cache(tmp_path / "c.h5")
    runs = tmp_path / "runs"
    fit([cache], classifier="logreg", runs_dir=runs, progress=False)

    def killed(self, folder):  # fault injection: the process is interrupted while the model is being written
        raise KeyboardInterrupt

    monkeypatch.setattr(KNN, "_save", killed)
    with pytest.raises(KeyboardInterrupt):
        fit([cache], classifier="knn", runs_dir=runs, progress=False)
    assert [p.name for p in runs.iterdir() if "knn" in p.name] == []
    assert [r["classifier"] for r in read_csv(runs / "index.csv")] == ["logreg"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--classifier", "nope"],
         "unknown classifier 'nope'; choose from dense, pixels, logreg, linear_svm, svm, knn, random_forest, mlp, sgd"),
        (["--classifier", "knn", "--param", "foo=1"],
         "unknown parameter 'foo' for classifier 'knn'; it accepts n_neighbors, weights, metric"),
        (["--classifier", "dense", "--param", "epochs=-5"],
         "parameter 'epochs' of classifier 'dense' must be an integer of at least 1; got -5"),
        (["--classifier", "logreg,svm", "--param", "C=0"],
         "parameter 'C' of classifier 'logreg' must be a number greater than 0; got 0.0"),
        (["--test-size", "1.5"], "test size must be a fraction between 0 and 1, e.g. 0.2; got 1.5"),
        (["--cv", "1"], "cv must be 0 (no cross-validation) or a number of folds >= 2; got 1"),
        (["--split", "random"],
         "split must be one of 'auto', 'source', 'stratified', 'unstratified', 'keras', 'cv', 'caches'; got 'random'"),
        (["--split", "source"],
         "--split source needs train and test (or val) rows in the cache; its rows have splits ['']; use --split "
         "stratified"),
        (["--classifier", "knn,logreg", "--grid", "C=1,2"], "--grid searches one classifier; got 2 (knn, logreg)"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    cache = make_cache(tmp_path / "c.h5")
    assert main([str(cache), "--runs-dir", str(tmp_path / "runs"), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"python -m transfer_cache.fit: error: {message}\n"
    assert not (tmp_path / "runs" / "index.csv").exists()



def test_the_options_declaration_is_the_one_source_of_keywords_flags_and_defaults():
    """fit()'s keywords, the parser's destinations and the typed object all come from FitOptions: an option added to a
    subclass of the declaration reaches the flags, the typed object and a signature with no other edit."""
    import dataclasses
    import inspect
    import types

    from transfer_cache import _options
    from transfer_cache.fit import build_parser
    from transfer_cache.fit_options import FitCommand, FitOptions

    def dests(parser):
        return [name for name in vars(parser.parse_args(["c.h5"])) if name not in ("caches", "debug")]

    signature = inspect.signature(fit).parameters
    keywords = [name for name, p in signature.items() if p.kind is p.KEYWORD_ONLY]
    assert keywords == _options.names(FitOptions) == [f.name for f in dataclasses.fields(FitOptions)]
    assert {name: signature[name].default for name in keywords} == dataclasses.asdict(FitOptions())
    assert dests(build_parser()) == _options.names(FitCommand) == keywords + ["print_confusion"]
    assert _options.from_args(FitCommand, build_parser().parse_args(["c.h5"])) == FitCommand()  # the same defaults
    typed = _options.from_args(FitCommand, build_parser().parse_args(
        ["c.h5", "--validation-split", "0.3", "--quiet", "--param", "C=1", "--param", "knn.n_neighbors=3",
         "--seed", "4"]
    ))
    assert (typed.test_size, typed.progress, typed.params, typed.seed) == (0.3, False, ["C=1", "knn.n_neighbors=3"], 4)

    @dataclasses.dataclass(frozen=True)
    class Extra(FitCommand):
        throwaway: int = _options.option(7, "a throwaway option", group="rows", type=int)

    parser = build_parser(Extra)
    assert dests(parser) == dests(build_parser()) + ["throwaway"]
    assert re.search(r"--throwaway THROWAWAY\s+a throwaway option", parser.format_help())
    assert _options.from_args(Extra, parser.parse_args(["c.h5", "--throwaway", "3"])).throwaway == 3
    copy = types.FunctionType(fit.__code__, fit.__globals__, "fit", fit.__defaults__, fit.__closure__)
    assert list(inspect.signature(_options.takes(Extra)(copy)).parameters)[-2:] == ["print_confusion", "throwaway"]


def test_an_unknown_keyword_is_named_with_the_options(tmp_path):
    message = ("bogus is not an option of fit(); the options are: classifier, params, grid, n_jobs, layer, test_size, "
               "seed, cv, split, test_cache, views, runs_dir, report, progress")
    with pytest.raises(TransferCacheError, match=re.escape(message) + "$"):
        fit([tmp_path / "c.h5"], bogus=1)

def test_cli_missing_cache_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.h5"), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "nope.h5 does not exist; run python -m transfer_cache.extract first" in err


def test_report_flag_writes_a_report_per_run(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=90)
    (run,) = fit([cache], classifier="knn", report=True, runs_dir=tmp_path / "runs", progress=False)
    assert run.report is not None and run.report.exists() and run.report.stat().st_size > 0


def test_index_heals_after_a_kill_between_rename_and_listing(tmp_path):
    """A finished run folder that a killed fit never listed is added by the next fit; dead temporaries are swept."""
    import shutil
    import subprocess
    import sys

    cache = make_cache(tmp_path / "c.h5")
    runs = tmp_path / "runs"
    first = fit([cache], classifier="logreg", runs_dir=runs, progress=False)[0]
    orphan = runs / "20000101-000000-knn-abcdef"
    shutil.copytree(first.run_dir, orphan)  # as if renamed into place, then killed before the index row
    config = json.loads((orphan / "config.json").read_text())
    config.update(run_id=orphan.name, classifier="knn", created="2000-01-01T00:00:00+00:00")
    (orphan / "config.json").write_text(json.dumps(config))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = runs / f".20000101-000001-svm-abcdef.tmp-{dead.stdout.strip()}"
    stale.mkdir()
    (stale / "config.json").write_text("{")

    fit([cache], classifier="logreg", runs_dir=runs, progress=False)
    rows = read_csv(runs / "index.csv")
    assert [r["classifier"] for r in rows] == ["logreg", "knn", "logreg"]
    assert rows[1]["run_id"] == orphan.name and rows[1]["run_dir"] == str(orphan.resolve())
    assert not stale.exists()


def test_dense_head_can_stream_from_hdf5(tmp_path):
    """stream=true trains from HDF5 blocks (memory stays flat) and learns like the in-memory head."""
    cache = make_cache(tmp_path / "c.h5")
    params = ["epochs=15", "learning_rate=0.01", "hidden=16"]
    streamed = fit([cache], classifier="dense", params=params + ["stream=true"], runs_dir=tmp_path / "runs",
                   progress=False)[0]
    in_memory = fit([cache], classifier="dense", params=params, runs_dir=tmp_path / "runs", progress=False)[0]
    assert streamed.params["stream"] is True
    assert len(json.loads((streamed.run_dir / "history.json").read_text())["loss"]) == 15
    assert streamed.metrics["accuracy"] >= in_memory.metrics["accuracy"] - 0.1
    assert streamed.metrics["accuracy"] > 0.8


@pytest.mark.slow
def test_every_registered_head_fits_a_real_cache_with_its_defaults(tmp_path):
    """No --param at all (the raw-pixel baseline once crashed so): each head trains, and its run records its
    defaults."""
    from transfer_cache.classifiers import CLASSIFIERS
    from transfer_cache.extract import extract

    from conftest import make_class_folder

    images = make_class_folder(tmp_path / "images", per_class=12)
    cache = extract(str(images), backbone="tiny", weights="none", cache_dir=tmp_path / "caches", runtime="tensorflow",
                    progress=False).path
    results = fit([cache], classifier=list(CLASSIFIERS), runs_dir=tmp_path / "runs", progress=False)
    assert [r.classifier for r in results] == list(CLASSIFIERS)
    for result in results:
        declared = {key: list(spec.default) if isinstance(spec.default, tuple) else spec.default
                    for key, spec in CLASSIFIERS[result.classifier].spec.items()}
        config = json.loads((result.run_dir / "config.json").read_text())
        assert config["params"] == declared == result.params, result.classifier
        assert result.metrics["n_test"] == 8 and len(read_csv(result.run_dir / "predictions.csv")) == 8
