"""Every head fits and scores on seeded Gaussian blobs; parameters parse and fail with exact messages."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from transfer_cache._errors import TransferCacheError
from transfer_cache.classifiers import (
    CLASSIFIERS,
    is_trusted_pickle,
    load_classifier,
    make_classifier,
    parse_grid,
    parse_params,
)

FEATURE_HEADS = [name for name, klass in CLASSIFIERS.items() if klass.input_kind == "features"]
FAST = {"dense": {"epochs": 8, "learning_rate": 1e-2, "hidden": "32", "batch_size": 64}}


@pytest.fixture(autouse=True)
def _own_trust_file(tmp_path, monkeypatch):
    """Keep the list of trusted pickles inside the test's folder."""
    monkeypatch.setenv("TRANSFER_CACHE_TRUST_FILE", str(tmp_path / "trusted.txt"))


def blobs(n=200, d=16, k=3, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 4.0, size=(k, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    X = (centers[y] + rng.normal(0.0, spread, size=(n, d))).astype(np.float32)
    return X, y.astype(np.int64)


@pytest.mark.parametrize("name", FEATURE_HEADS)
def test_each_head_fits_scores_and_round_trips(name, tmp_path):
    X, y = blobs()
    head = make_classifier(name, FAST.get(name), seed=0).fit(X[:150], y[:150])
    proba = head.predict_proba(X[150:])
    assert proba.shape == (50, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.mean(head.predict(X[150:]) == y[150:]) >= 0.9
    head.save(tmp_path / "model")
    again = load_classifier(tmp_path / "model")
    assert type(again) is type(head)
    assert again.params == head.params
    np.testing.assert_allclose(again.predict_proba(X[150:]), proba, atol=1e-6)


@pytest.mark.parametrize("name, params", [("logreg", {}), ("linear_svm", {}), ("knn", {}), ("random_forest", {}),
                                          ("sgd", {}), ("sgd", {"loss": "hinge"}), ("sgd", {"loss": "modified_huber"})])
def test_class_absent_from_training_gets_zero_probability(name, params):
    X, y = blobs()
    head = make_classifier(name, params).fit(X, y, n_classes=4)
    proba = head.predict_proba(X[:20])
    assert proba.shape == (20, 4)
    assert np.all(proba[:, 3] < 1e-12)


def test_logreg_probabilities_are_sklearns_and_a_softmax_of_the_folded_weights():
    X, y = blobs(seed=1)
    head = make_classifier("logreg", {"C": 0.5}).fit(X, y)
    expected = head.estimator_.predict_proba(head.scaler_.transform(X))
    np.testing.assert_allclose(head.predict_proba(X), expected, atol=1e-6)
    W, b = head.dense_weights()
    logits = X.astype(np.float64) @ W + b
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(head.predict_proba(X), softmax / softmax.sum(1, keepdims=True), atol=1e-12)


def test_binary_logreg_folds_into_two_softmax_columns():
    X, y = blobs(k=2, seed=3, spread=3.0)
    head = make_classifier("logreg").fit(X, y)
    assert head.dense_weights()[0].shape == (16, 2)
    np.testing.assert_allclose(head.predict_proba(X), head.estimator_.predict_proba(head.scaler_.transform(X)),
                               atol=1e-6)


def test_linear_svm_temperature_is_fitted_and_softens_overconfidence():
    X, y = blobs(seed=2, spread=3.0)
    head = make_classifier("linear_svm").fit(X, y)
    assert head.temperature_ > 0 and head.temperature_ != 1.0
    decision = head.estimator_.decision_function(head._scaled(X))  # unit length by default
    z = decision / head.temperature_
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(head.predict_proba(X), expected / expected.sum(1, keepdims=True), atol=1e-6)


def test_linear_heads_load_from_npz_without_unpickling(tmp_path):
    X, y = blobs()
    head = make_classifier("logreg").fit(X, y)
    head.save(tmp_path / "m")
    (tmp_path / "m" / "head.joblib").unlink()  # the safe format alone is enough
    np.testing.assert_allclose(load_classifier(tmp_path / "m").predict_proba(X), head.predict_proba(X), atol=1e-12)


def test_untrusted_pickle_warns_and_trusted_one_does_not(tmp_path, monkeypatch, capsys):
    X, y = blobs()
    make_classifier("knn").fit(X, y).save(tmp_path / "m")
    assert is_trusted_pickle(tmp_path / "m" / "head.joblib")
    load_classifier(tmp_path / "m")
    assert "pickle" not in capsys.readouterr().err
    monkeypatch.setenv("TRANSFER_CACHE_TRUST_FILE", str(tmp_path / "other-machine.txt"))
    load_classifier(tmp_path / "m")
    err = capsys.readouterr().err
    assert "is a joblib pickle not written by a run on this machine" in err
    assert len(err.strip().splitlines()) == 1


def test_sgd_streams_chunks_and_never_sees_all_rows_at_once():
    X, y = blobs(n=1200)
    sizes = []

    def chunks():
        for start in range(0, 1000, 100):
            sizes.append(100)
            yield X[start : start + 100], y[start : start + 100]

    head = make_classifier("sgd", {"epochs": 3}).fit_stream(chunks, n_classes=3)
    assert max(sizes) == 100 and len(sizes) == 10 * (1 + 3)  # one scaler pass + three epochs
    assert np.mean(head.predict(X[1000:]) == y[1000:]) >= 0.9


def test_dense_is_reproducible_from_its_seed_and_keeps_history():
    X, y = blobs()
    a = make_classifier("dense", {"epochs": 3, "hidden": "32"}, seed=7).fit(X[:150], y[:150], X[150:], y[150:])
    b = make_classifier("dense", {"epochs": 3, "hidden": "32"}, seed=7).fit(X[:150], y[:150], X[150:], y[150:])
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-6)
    assert set(a.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(a.history["loss"]) == 3


def test_dense_seed_002_head_and_sigmoid_binary_head():
    X, y = blobs()
    seed_002 = make_classifier(
        "dense", {"hidden": "none", "batch_norm": "true", "optimizer": "adam", "learning_rate": "1e-2", "epochs": 5}
    ).fit(X, y)
    kinds = [type(layer).__name__ for layer in seed_002.model_.layers]
    assert kinds == ["InputLayer", "BatchNormalization", "Dropout", "Dense"]
    assert np.mean(seed_002.predict(X) == y) >= 0.9
    X2, y2 = blobs(k=2, seed=5)
    binary = make_classifier("dense", {"binary": "sigmoid", "epochs": 20, "learning_rate": 1e-3,
                                       "class_weight": "balanced", "batch_size": 64}).fit(X2, y2)
    assert binary.model_.outputs[0].shape[-1] == 1
    proba = binary.predict_proba(X2)
    assert proba.shape == (200, 2) and np.mean(np.argmax(proba, 1) == y2) >= 0.9
    with pytest.raises(TransferCacheError, match=re.escape(
        "binary=sigmoid needs exactly two classes; this data has 3; drop --param binary=sigmoid"
    )):
        make_classifier("dense", {"binary": "sigmoid", "epochs": 1}).fit(X, y)


def test_dense_early_stopping_stops_before_the_epoch_limit():
    X, y = blobs()
    head = make_classifier("dense", {"epochs": 60, "early_stopping": 2, "learning_rate": 5e-2, "hidden": "16",
                                     "batch_size": 150}).fit(
        X[:150], y[:150], X[150:], y[150:]
    )
    assert len(head.history["loss"]) < 60


def test_pixels_cnn_learns_coloured_images():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    images = rng.integers(0, 60, size=(90, 16, 16, 3)).astype(np.uint8)
    images[np.arange(90), :, :, y] += 150
    head = make_classifier("pixels", {"size": 16, "epochs": 8, "learning_rate": 1e-3,
                                      "hidden": "32"}).fit(images[:60], y[:60])
    assert np.mean(head.predict(images[60:]) == y[60:]) >= 0.9


def test_parse_params_types_and_routing():
    parsed = parse_params(["dense", "knn"], ["hidden=1024,256", "dropout=0.5", "batch_norm=true", "knn.n_neighbors=3"])
    assert parsed["dense"] == {"hidden": (1024, 256), "dropout": 0.5, "batch_norm": True}
    assert parsed["knn"] == {"n_neighbors": 3}
    assert parse_params("random_forest", ["max_depth=none", "max_features=0.5"])["random_forest"] == {
        "max_depth": None, "max_features": 0.5,
    }
    assert make_classifier("dense", {"hidden": "none"}).params["hidden"] == []


@pytest.mark.parametrize(
    "names, items, message",
    [
        ("knn", ["foo=1"], "unknown parameter 'foo' for classifier 'knn'; it accepts n_neighbors, weights, metric"),
        ("knn", ["n_neighbors=abc"],
         "parameter 'n_neighbors' of classifier 'knn' must be an integer of at least 1; got 'abc'"),
        ("knn", ["weights=far"],
         "parameter 'weights' of classifier 'knn' must be one of 'uniform', 'distance'; got 'far'"),
        ("dense", ["batch_norm=maybe"],
         "parameter 'batch_norm' of classifier 'dense' must be true or false; got 'maybe'"),
        ("dense", ["hidden=12,x"],
         "parameter 'hidden' of classifier 'dense' must be a comma-separated list of integers of at least 1 (or none); "
         "got '12,x'"),
        ("dense", ["hidden=64,-2"],
         "parameter 'hidden' of classifier 'dense' must be a comma-separated list of integers of at least 1 (or none); "
         "got '64,-2'"),
        ("dense", ["epochs=-5"], "parameter 'epochs' of classifier 'dense' must be an integer of at least 1; got -5"),
        ("dense", ["dropout=1"], "parameter 'dropout' of classifier 'dense' must be a number in [0, 1); got 1.0"),
        ("dense", ["learning_rate=0"],
         "parameter 'learning_rate' of classifier 'dense' must be a number greater than 0; got 0.0"),
        ("dense", ["early_stopping=-1"],
         "parameter 'early_stopping' of classifier 'dense' must be an integer of at least 0; got -1"),
        ("logreg", ["C=-0.5"], "parameter 'C' of classifier 'logreg' must be a number greater than 0; got -0.5"),
        ("logreg", ["C=nan"], "parameter 'C' of classifier 'logreg' must be a number greater than 0; got 'nan'"),
        ("svm", ["gamma=0"],
         "parameter 'gamma' of classifier 'svm' must be a number greater than 0 or one of 'scale', 'auto'; got 0.0"),
        ("random_forest", ["max_features=1.5"],
         "parameter 'max_features' of classifier 'random_forest' must be a number in (0, 1] or one of 'sqrt', 'log2'; "
         "got 1.5"),
        ("random_forest", ["max_depth=0"],
         "parameter 'max_depth' of classifier 'random_forest' must be an integer of at least 1 or none; got 0"),
        ("mlp", ["alpha=-1e-3"], "parameter 'alpha' of classifier 'mlp' must be a number of at least 0; got -0.001"),
        ("knn", ["n_neighbors=0"],
         "parameter 'n_neighbors' of classifier 'knn' must be an integer of at least 1; got 0"),
        ("logreg", ["C"], "--param must look like key=value; got 'C'"),
        (["logreg", "knn"], ["foo=1"],
         "unknown parameter 'foo': none of logreg, knn accepts it; use name.key=value for one classifier"),
        (["logreg", "knn"], ["knn.C=1"],
         "unknown parameter 'C' for classifier 'knn'; it accepts n_neighbors, weights, metric"),
        ("nope", [],
         "unknown classifier 'nope'; choose from dense, pixels, logreg, linear_svm, svm, knn, random_forest, mlp, sgd"),
    ],
)
def test_parameter_mistakes_have_exact_messages(names, items, message):
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        parse_params(names, items)


def test_grid_is_parsed_and_searchable_with_gridsearchcv():
    from sklearn.model_selection import GridSearchCV

    assert parse_grid("dense", ["hidden=1024;512,256", "dropout=0.1,0.2"]) == {
        "hidden": [(1024,), (512, 256)], "dropout": [0.1, 0.2],
    }
    X, y = blobs()
    grid = parse_grid("knn", ["n_neighbors=1,7"])
    search = GridSearchCV(make_classifier("knn"), grid, cv=3).fit(X, y, n_classes=3)
    assert search.best_params_["n_neighbors"] in (1, 7)
    assert search.best_estimator_.predict_proba(X[:5]).shape == (5, 3)


def test_unfitted_and_bad_label_mistakes():
    X, y = blobs()
    with pytest.raises(TransferCacheError, match=re.escape("classifier 'logreg' is not fitted yet; call fit first")):
        make_classifier("logreg").predict(X)
    with pytest.raises(TransferCacheError,
                       match=re.escape("training labels must be >= 0 (-1 marks unlabelled rows: leave them out)")):
        make_classifier("logreg").fit(X, np.full(len(X), -1))
    with pytest.raises(TransferCacheError, match=re.escape("n_neighbors=50 is more than the 10 training rows; "
                                                           "pass a smaller --param n_neighbors=K")):
        make_classifier("knn", {"n_neighbors": 50}).fit(X[:10], y[:10])


def test_capability_flags_are_declared_by_every_head_and_replace_name_checks():
    from transfer_cache.classifiers.base import Classifier

    for name, klass in CLASSIFIERS.items():
        assert issubclass(klass, Classifier) and klass.name == name
        assert klass.input_kind in ("features", "pixels"), name
    assert {n for n, k in CLASSIFIERS.items() if k.exports_as_keras} == {"dense", "logreg", "linear_svm", "pixels"}
    assert {n for n, k in CLASSIFIERS.items() if k.is_linear} == {"logreg", "linear_svm"}
    assert make_classifier("sgd").streams and not make_classifier("dense").streams
    assert make_classifier("dense", {"stream": "true"}).streams


def test_a_new_head_is_one_registration(tmp_path):
    """A throwaway head registered in a test is usable by name: nothing else lists the heads."""
    from transfer_cache.classifiers import registry
    from transfer_cache.classifiers.sklearn_heads import KNN

    class Nearest(KNN):
        name = "nearest_test_head"

    registry.register(Nearest)
    try:
        X, y = blobs()
        head = make_classifier("nearest_test_head", {"n_neighbors": "1"}).fit(X, y)
        assert head.predict(X[:5]).tolist() == y[:5].tolist()
        assert parse_params("nearest_test_head", ["n_neighbors=3"]) == {"nearest_test_head": {"n_neighbors": 3}}
        Nearest.summary = "a throwaway"
        assert "nearest_test_head (a throwaway; raw vectors)." in registry.classifier_help()
    finally:
        registry.CLASSIFIERS.pop("nearest_test_head")


def test_the_constructor_stores_and_fit_validates():
    """scikit-learn's convention: a bad value is kept by the constructor and refused by fit, with the same message."""
    from transfer_cache.classifiers.sklearn_heads import KNN

    X, y = blobs()
    head = KNN(n_neighbors="many")
    assert head.get_params()["n_neighbors"] == "many"
    message = "parameter 'n_neighbors' of classifier 'knn' must be an integer of at least 1; got 'many'"
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        head.fit(X, y)
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        make_classifier("knn", {"n_neighbors": "many"})  # the factory checks up front, before any work


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_fitting_leaves_the_global_random_state_alone(name):
    import random

    X, y = blobs(n=120)
    if CLASSIFIERS[name].input_kind == "pixels":
        X = np.random.default_rng(0).integers(0, 256, size=(60, 16, 16, 3), dtype=np.uint8)
        y = np.arange(60) % 3
    params = {"dense": {"epochs": 2, "hidden": "8"}, "pixels": {"size": 16, "epochs": 1, "hidden": "8"},
              "random_forest": {"n_estimators": 5}, "mlp": {"max_iter": 20}}.get(name, {})
    np.random.seed(1234)
    random.seed(1234)
    numpy_before, python_before = np.random.get_state(), random.getstate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP's convergence warning on 20 iterations
        first = make_classifier(name, params, seed=5).fit(X, y).predict_proba(X[:10])
    numpy_after, python_after = np.random.get_state(), random.getstate()
    assert python_after == python_before
    assert numpy_after[0] == numpy_before[0] and np.array_equal(numpy_after[1], numpy_before[1])
    assert numpy_after[2:] == numpy_before[2:]
    second = make_classifier(name, params, seed=5).fit(X, y).predict_proba(X[:10])
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)  # its own seed makes it repeatable


def test_fit_help_lists_every_registered_head_and_split():
    import os
    import subprocess
    import sys

    from transfer_cache.classifiers import CLASSIFIERS, classifier_help
    from transfer_cache.splits import split_names

    shown = subprocess.run([sys.executable, "-m", "transfer_cache.fit", "--help"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "400"}).stdout
    listed = next(line for line in shown.splitlines() if line.startswith("classifiers: "))
    assert listed == classifier_help() and all(name in listed for name in CLASSIFIERS)
    assert "sgd (out of core; standardised)" in listed and "pixels (raw-pixel CNN baseline)" in listed
    assert "linear_svm (unit length)" in listed and "logreg (standardised)" in listed and "knn (raw vectors)" in listed
    assert ", ".join(split_names()) in shown


# --------------------------------------------------------------------------- declared ranges and defaults

DECLARED = [(name, key, spec) for name, klass in CLASSIFIERS.items() for key, spec in klass.spec.items()]
NUMERIC = ("int", "float", "int_or_none", "float_or_choice", "ints")


def _outside(spec, end: str):
    """A value just outside the declared interval at ``end`` ("low" or "high"), as a command-line string."""
    bound = getattr(spec.interval, end)
    included = spec.interval.closed in (("both", "left") if end == "low" else ("both", "right"))
    step = (1 if spec.kind in ("int", "int_or_none", "ints") else 0.5) if included else 0
    value = str(bound - step if end == "low" else bound + step)
    return f"{bound},{value}" if spec.kind == "ints" else value  # one bad item in a list ("0" alone means none)


@pytest.mark.parametrize("name, key, spec", [d for d in DECLARED if d[2].kind in NUMERIC], ids=lambda v: str(v)[:20])
def test_every_numeric_parameter_declares_a_range(name, key, spec):
    assert spec.interval is not None and spec.interval.low is not None, f"{name}.{key} has no lower bound"


@pytest.mark.parametrize("name, key, spec", DECLARED, ids=lambda v: str(v)[:20])
def test_every_default_is_inside_its_own_declaration(name, key, spec):
    from transfer_cache.classifiers._params import coerce

    assert coerce(name, key, spec, spec.default) is spec.default


BOUNDS = [(name, key, spec, end) for name, key, spec in DECLARED if spec.interval is not None for end in ("low", "high")
          if getattr(spec.interval, end) is not None]


@pytest.mark.parametrize("name, key, spec, end", BOUNDS, ids=lambda v: str(v)[:20])
def test_a_value_beyond_each_declared_bound_is_refused_with_the_generated_message(name, key, spec, end):
    from transfer_cache.classifiers._params import coerce

    text = _outside(spec, end)
    shown = text if spec.kind == "ints" else coerce(name, key, type(spec)(spec.default, spec.kind, spec.choices), text)
    message = f"parameter '{key}' of classifier '{name}' must be {spec.expected()}; got {shown!r}"
    with pytest.raises(TransferCacheError, match=re.escape(message) + "$"):
        parse_params(name, [f"{key}={text}"])
    with pytest.raises(TransferCacheError, match=re.escape(message) + "$"):  # the estimator protocol refuses it at fit
        CLASSIFIERS[name](**{key: text}).fit(*blobs(n=30))


def test_interval_ends_words_and_nan():
    from transfer_cache.classifiers._params import Interval, at_least, greater_than

    half_open = Interval(0, 1, closed="left")
    assert [half_open.holds(v) for v in (-0.1, 0, 0.5, 1, float("nan"))] == [False, True, True, False, False]
    assert half_open.words() == "in [0, 1)" and Interval(0, 1, closed="right").words() == "in (0, 1]"
    assert (Interval(0.5, 2.5).words() == "in [0.5, 2.5]"
            and Interval(None, 3, closed="neither").words() == "less than 3")
    assert at_least(1).words() == "of at least 1" and greater_than(0).words() == "greater than 0"
    assert not greater_than(0).holds(0) and at_least(1).holds(1)
    with pytest.raises(ValueError):
        Interval(0, 1, closed="open")


def test_heads_and_commands_word_their_ranges_through_one_interval():
    """The heads' ranges and the commands' whole numbers are worded by the same Interval (old imports still work)."""
    from transfer_cache import _checks
    from transfer_cache.classifiers import _params

    assert (_params.Interval, _params.at_least, _params.greater_than) == (
        _checks.Interval, _checks.at_least, _checks.greater_than)
    for least in (0, 1, 2):
        message = f"k must be a whole number {_checks.at_least(least).words()}; got {least - 1}"
        assert message == f"k must be a whole number of at least {least}; got {least - 1}"
        with pytest.raises(TransferCacheError, match=re.escape(message) + "$"):
            _checks.whole_number(least - 1, "k", at_least=least)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_get_params_reports_the_declared_defaults_and_clone_keeps_them(name):
    from sklearn.base import clone

    klass = CLASSIFIERS[name]
    defaults = {key: spec.default for key, spec in klass.spec.items()}
    head = make_classifier(name, seed=3)
    assert head.get_params() == {"seed": 3, "n_jobs": 1, **defaults}
    key = next(iter(klass.spec))
    given = CLASSIFIERS[name](**{key: "given"}).get_params()
    assert given[key] == "given" and {k: v for k, v in given.items() if k != key} == {"seed": 0, "n_jobs": 1, **{
        k: v for k, v in defaults.items() if k != key}}
    assert clone(head).get_params() == head.get_params()
    assert head.params == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}


def test_a_head_saved_before_a_parameter_existed_loads_with_the_behaviour_it_had(tmp_path):
    """classifier.json of an older linear_svm has no unit_length: it standardised raw rows, and must still do so."""
    import json

    X, y = blobs()
    head = make_classifier("linear_svm", {"unit_length": False, "standardize": True}).fit(X, y)
    head.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "classifier.json").read_text())
    del meta["params"]["unit_length"]
    (tmp_path / "m" / "classifier.json").write_text(json.dumps(meta))
    again = load_classifier(tmp_path / "m")
    assert again.params["unit_length"] is False
    np.testing.assert_allclose(again.predict_proba(X), head.predict_proba(X), atol=1e-12)


@pytest.mark.parametrize("name", ["logreg", "linear_svm"])
def test_unit_length_linear_heads_are_a_softmax_of_the_normalised_rows_and_export_so(name):
    X, y = blobs(seed=4)
    X = X * np.random.default_rng(0).uniform(0.5, 3.0, size=(len(X), 1)).astype(np.float32)  # rows of varied length
    head = make_classifier(name, {"unit_length": True, "standardize": True}).fit(X, y)
    W, b = head.dense_weights()
    unit = X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    logits = unit @ W + b
    expected = np.exp(logits - logits.max(1, keepdims=True))
    # rows normalised in float32
    np.testing.assert_allclose(head.predict_proba(X), expected / expected.sum(1, keepdims=True), atol=1e-6)
    exported = head.keras_head((X.shape[1],))
    np.testing.assert_allclose(np.asarray(exported(X)), head.predict_proba(X), atol=1e-5)
