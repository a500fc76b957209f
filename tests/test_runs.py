"""runs: the run folder and the index, written and read by one module."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re

import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.runs import (
    INDEX_COLUMNS,
    append_index,
    index_row,
    load_run,
    misclassified,
    new_run_id,
    prediction_header,
    read_index,
    read_run,
    rebuild_index,
    run_of,
    write_json,
    write_run,
)


def _write(runs_dir, run_id, *, accuracy=0.5, created="2026-01-01T00:00:00+00:00"):
    config = {"run_id": run_id, "created": created, "classifier": "knn", "backbone": "tiny", "fingerprint": "f" * 16,
              "caches": [{"path": "/c.h5", "role": "train"}], "params": {"k": np.int64(3)}}
    metrics = {"accuracy": accuracy, "balanced_accuracy": accuracy, "macro_f1": accuracy, "n_train": 8, "n_test": 2,
               "fit_seconds": 0.25}
    predictions = (["row", "cache", "path", "true_label", "true_name", "pred_label", "pred_name", "confidence",
                    "prob_a"],
                   [[0, 0, "a.png", 0, "a", 0, "a", "1", "1"]])
    return write_run(runs_dir, run_id, config=config, metrics=metrics, predictions=predictions, history={"loss": [1.0]},
                     save_model=lambda folder: folder.mkdir())


def test_a_run_folder_round_trips(tmp_path):
    folder = _write(tmp_path, "r1", accuracy=0.75)
    run = load_run(folder)
    assert run["config"]["params"] == {"k": 3}  # numpy values become plain JSON
    assert run["metrics"]["accuracy"] == 0.75 and run["history"] == {"loss": [1.0]}
    assert run["predictions"]["path"].tolist() == ["a.png"] and run["predictions"]["prob_a"].tolist() == [1.0]
    (row,) = read_index(tmp_path)
    assert row["run_id"] == "r1" and row["accuracy"] == 0.75 and row["n_train"] == 8
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "history.json", "metrics.json", "model",
                                                        "predictions.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name]


def test_a_run_reads_as_a_typed_run(tmp_path):
    folder = _write(tmp_path, "r1")
    run = read_run(folder)
    assert (run.run_id, run.classifier, run.backbone, run.params) == ("r1", "knn", "tiny", {"k": 3})
    assert run.caches == [{"path": "/c.h5", "role": "train"}] and run.created == "2026-01-01T00:00:00+00:00"
    assert (run.split, run.layer, run.versions) == ({}, None, {})  # what this config does not record
    assert run.model_dir == folder / "model" and run.model_dir.is_dir() and run.history == {"loss": [1.0]}
    assert run.n_predicted == 1 and run.mistakes().tolist() == []
    loaded = load_run(folder)
    assert set(loaded) == {"run_dir", "config", "metrics", "predictions", "history"} and loaded["config"] == run.config
    assert run_of(loaded).config == run.config and run_of(run) is run and run_of(folder).metrics == run.metrics
    assert prediction_header(["a"]) == ["row", "cache", "path", "true_label", "true_name", "pred_label", "pred_name",
                                        "confidence", "prob_a"]


def test_misclassified_are_the_wrong_labelled_rows_most_confident_first(tmp_path):
    header = prediction_header(["a", "b"])
    rows = [[0, 0, "x.png", 0, "a", 1, "b", "0.6", "0.4", "0.6"],
            [1, 0, "y.png", 1, "b", 0, "a", "0.9", "0.9", "0.1"],
            [2, 0, "z.png", 1, "b", 1, "b", "0.8", "0.2", "0.8"],
            [3, 0, "u.png", -1, "", 0, "a", "0.99", "0.99", "0.01"]]  # unlabelled
    folder = write_run(tmp_path, "r1", config={"run_id": "r1", "created": "2026", "classifier": "knn"},
                       metrics={"accuracy": 0.5, "balanced_accuracy": 0.5, "macro_f1": 0.5, "n_train": 4, "n_test": 4,
                                "fit_seconds": 0.1},
                       predictions=(header, rows), history=None, save_model=lambda f: f.mkdir())
    assert read_run(folder).mistakes().tolist() == [0, 1]  # the unlabelled row is no mistake
    assert [(m["path"], m["confidence"]) for m in misclassified(folder)] == [("y.png", 0.9), ("x.png", 0.6)]
    assert [m["path"] for m in misclassified(folder, limit=1)] == ["y.png"]


def test_run_ids_sort_by_time_and_never_collide():
    now = dt.datetime(2026, 11, 24, 3, 4, 5, tzinfo=dt.timezone.utc)
    ids = {new_run_id("logreg", now) for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"20261124-030405-logreg-[0-9a-f]{6}", i) for i in ids)


def test_json_is_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_json(path, {"version": 1})

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temporary left behind


def test_the_index_lists_a_finished_run_a_killed_fit_did_not_list(tmp_path):
    _write(tmp_path, "r1", created="2026-01-01T00:00:00+00:00")
    _write(tmp_path, "r2", created="2026-01-02T00:00:00+00:00")
    # a fit killed between the rename and the append: r2's folder exists but its row does not
    with open(tmp_path / "index.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["run_id"] != "r2"]
    with open(tmp_path / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    dead = tmp_path / ".r3.tmp-999999999"  # the half-written folder of a fit that died
    dead.mkdir()
    (dead / "config.json").write_text("{")
    _write(tmp_path, "r4", created="2026-01-03T00:00:00+00:00")
    assert [row["run_id"] for row in read_index(tmp_path)] == ["r1", "r2", "r4"]
    assert not dead.exists()


def test_reading_a_damaged_or_missing_run_says_what_to_do(tmp_path):
    with pytest.raises(TransferCacheError, match=re.escape(f"run folder {tmp_path / 'nope'} does not exist")):
        load_run(tmp_path / "nope")
    folder = _write(tmp_path, "r1")
    (folder / "metrics.json").write_text("{broken")
    with pytest.raises(TransferCacheError, match=re.escape("metrics.json is not valid JSON")):
        load_run(folder)
    with pytest.raises(TransferCacheError, match=re.escape(f"no runs index at {tmp_path / 'empty' / 'index.csv'}")):
        read_index(tmp_path / "empty")


def test_index_row_is_rebuilt_from_the_folder(tmp_path):
    folder = _write(tmp_path, "r1", accuracy=0.125)
    row = index_row(folder)
    assert set(row) == set(INDEX_COLUMNS) and row["accuracy"] == "0.125000" and row["cache"] == "/c.h5"
    append_index(tmp_path, row)  # listed twice on purpose: the index keeps what it is given
    assert [r["run_id"] for r in read_index(tmp_path)] == ["r1", "r1"]


# --------------------------------------------------------------------------- a damaged index


def _damage(index, how: str) -> None:
    text = index.read_text()
    if how == "random bytes":
        index.write_bytes(np.random.default_rng(0).bytes(400))
    elif how == "cut short":
        index.write_text(text[: text.index("r2") + 30])  # the last row stops inside its "created" field
    elif how == "not a number":
        index.write_text(text.replace("0.500000", "high", 1))
    else:  # a column gone, as an edit in a spreadsheet may leave it
        rows = list(csv.DictReader(text.splitlines()))
        with open(index, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[c for c in INDEX_COLUMNS if c != "accuracy"],
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


DAMAGE = [
    ("random bytes", "byte 1 is not UTF-8 text"),
    ("cut short", "line 3 has 3 fields, not 13: cut short or edited"),
    ("not a number", "line 2: accuracy 'high' is not a number"),
    ("missing column", "its header lacks accuracy"),
]


@pytest.mark.parametrize("how, why", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_index_is_refused_naming_it_and_the_rebuild(tmp_path, how, why):
    """Each used to surface as UnicodeDecodeError, TypeError, ValueError or KeyError in the reader's callers."""
    _write(tmp_path, "r1", created="2026-01-01T00:00:00+00:00")
    _write(tmp_path, "r2", created="2026-01-02T00:00:00+00:00")
    index = tmp_path / "index.csv"
    _damage(index, how)
    message = (f"the runs index {index} is damaged ({why}); rebuild it from the run folders with "
               f"python -m transfer_cache.report {tmp_path} --rebuild-index (the damaged file is kept beside it)")
    with pytest.raises(TransferCacheError, match=f"^{re.escape(message)}$"):
        read_index(tmp_path)
    damaged = index.read_bytes()
    rebuilt, listed, kept = rebuild_index(tmp_path)
    assert (rebuilt, listed) == (index, 2) and kept.read_bytes() == damaged  # nothing the user had is lost
    assert kept.name.startswith("index.csv.old-")
    assert [(r["run_id"], r["accuracy"]) for r in read_index(tmp_path)] == [("r1", 0.5), ("r2", 0.5)]


def test_a_fit_appending_to_a_damaged_index_lists_every_run_anew(tmp_path):
    _write(tmp_path, "r1", created="2026-01-01T00:00:00+00:00")
    index = tmp_path / "index.csv"
    index.write_bytes(b"\xff\xfe garbage")
    _write(tmp_path, "r2", created="2026-01-02T00:00:00+00:00")  # used to fail with UnicodeDecodeError
    assert [row["run_id"] for row in read_index(tmp_path)] == ["r1", "r2"]
    (kept,) = tmp_path.glob("index.csv.old-*")
    assert kept.read_bytes() == b"\xff\xfe garbage"


def test_an_index_without_its_last_newline_gets_the_next_row_on_a_line_of_its_own(tmp_path):
    _write(tmp_path, "r1")
    index = tmp_path / "index.csv"
    index.write_text(index.read_text().rstrip("\n"))
    _write(tmp_path, "r2")
    assert [row["run_id"] for row in read_index(tmp_path)] == ["r1", "r2"]


def test_rebuilding_twice_keeps_both_old_copies(tmp_path):
    _write(tmp_path, "r1")
    first, second = rebuild_index(tmp_path)[2], rebuild_index(tmp_path)[2]
    assert first != second and first.is_file() and second.is_file()
    with pytest.raises(TransferCacheError, match=re.escape(f"runs folder {tmp_path / 'nope'} does not exist")):
        rebuild_index(tmp_path / "nope")
