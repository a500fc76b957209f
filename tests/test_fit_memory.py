"""fit at scale: a head that declares ``sample_rows`` trains on a stratified sample and predicts every test row a
block at a time; a head whose rows do not fit in the available memory is refused in one line before loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transfer_cache import fit_memory
from transfer_cache._errors import TransferCacheError
from transfer_cache.classifiers import make_classifier
from transfer_cache.fit import fit, main
from transfer_cache.fit_memory import needed_bytes, plan_memory, streaming_heads

from test_fit import make_cache, read_csv


@pytest.fixture(autouse=True)
def _own_trust_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CACHE_TRUST_FILE", str(tmp_path / "trusted.txt"))


def test_logreg_above_its_sample_rows_trains_on_a_stratified_sample(tmp_path, monkeypatch, capsys):
    cache = make_cache(tmp_path / "c.h5", n=1500, d=8)
    (run,) = fit([cache], classifier="logreg", params=["sample_rows=300"], runs_dir=tmp_path / "runs", progress=True)
    note = ("logreg trains on at most 300 rows: fitted on a stratified sample of 300 of the 1,200 training rows; every "
            "test row is predicted (--param sample_rows=N trains on more, 0 on all)")
    assert f"note: {note}" in capsys.readouterr().err
    config = json.loads((run.run_dir / "config.json").read_text())
    assert note in config["notes"]
    assert run.metrics["n_train"] == 300 and run.metrics["n_test"] == 300
    assert len(read_csv(run.run_dir / "predictions.csv")) == 300
    assert run.accuracy > 0.95  # separable blobs: a sample of 300 is plenty


def test_a_sample_keeps_the_class_shares_and_the_test_rows_are_left_to_blocks():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    plan = plan_memory(make_classifier("logreg"), labels=labels, train=np.arange(1000), held=250, dim=1280, seed=0)
    assert not plan.blocks and plan.note is None and len(plan.train) == 1000
    head = make_classifier("logreg", params={"sample_rows": 100})
    plan = plan_memory(head, labels=labels, train=np.arange(1000), held=250, dim=1280, seed=0)
    assert plan.blocks and np.bincount(labels[plan.train]).tolist() == [60, 30, 10]


def test_a_head_whose_rows_do_not_fit_is_refused_before_loading():
    assert needed_bytes(1_000_000, 1280) == 1_000_000 * 1280 * 4 * 3
    assert streaming_heads() == ["sgd"]
    labels = np.arange(1_000_000) % 10
    with pytest.raises(TransferCacheError) as caught:
        plan_memory(make_classifier("svm"), labels=labels, train=np.arange(800_000), held=200_000, dim=1280, seed=0,
                    available=8_000_000_000)
    assert str(caught.value) == (
        "classifier 'svm' holds its rows in memory: 1,000,000 rows of 1280 values need about 15.4 GB with its "
        "working copies, and 8.0 GB is available; use --classifier sgd (it streams the rows from the cache), or fit "
        "on fewer rows"
    )
    plan = plan_memory(make_classifier("logreg"), labels=labels, train=np.arange(800_000), held=200_000, dim=1280,
                       seed=0, available=8_000_000_000)
    assert len(plan.train) == 50_000 and plan.blocks


def test_fit_refuses_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    """The available memory is the machine's: here it is set small, so 1,000 rows of 64 values cannot fit."""
    cache = make_cache(tmp_path / "c.h5", n=1000, d=64)
    monkeypatch.setattr(fit_memory, "available_bytes", lambda: 500_000)
    assert main([str(cache), "--classifier", "knn", "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("python -m transfer_cache.fit: error: classifier 'knn' holds its rows in memory: 1,000 rows of 64 "
                   "values need about 0.0 GB with its working copies, and 0.0 GB is available; use --classifier sgd "
                   "(it streams the rows from the cache), or fit on fewer rows")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    (run,) = fit([cache], classifier="sgd", runs_dir=tmp_path / "runs", progress=False)  # the way out works
    assert run.metrics["n_test"] == 200
