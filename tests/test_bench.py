"""The benchmark command on tiny settings (it must run and write valid JSON), its test images, and memory flatness."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from transfer_cache import TransferCacheError
from transfer_cache.bench import main, memory_flatness, run_bench, vector_agreement, write_test_images

from conftest import write_synthetic_cache


def _median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@pytest.mark.slow  # starts a TensorFlow process per runtime, repeat and peer run
def test_bench_cli_with_tiny_settings_writes_valid_json(tmp_path, capsys):
    target = tmp_path / "bench.json"
    argv = ["--backbone", "tiny", "--weights", "none", "--images", "12", "--repeats", "2", "--batch-size", "4",
            "--parts", "backbone,extract,peer,decode,seeds,hvass,io", "--epochs", "1", "--hvass-images", "3",
            "--io-mb", "1", "--json", str(target), "--quiet"]
    assert main(argv) == 0
    report = json.loads(target.read_text())
    runtimes = report["runtimes"]
    assert runtimes[-1] == "tensorflow" and set(runtimes) <= {"openvino", "tensorflow"}
    assert (report["backbone"], report["images"], report["batch_size"], report["input_size"]) == ("tiny", 12, 4, 32)
    for name in runtimes:
        assert len(report["backbone_images_per_second"][name]["runs"]) == 2
        figures = report["extract"][name]
        assert len(figures["runs"]) == 2 and all(run["computed"] == 12 for run in figures["runs"])
        assert 0 < figures["first_batch_seconds"] < figures["wall_seconds"]
        assert report["pipeline_efficiency"][name] == pytest.approx(
            figures["images_per_second"] / report["backbone_images_per_second"][name]["median"])
        peers = report["extract"]["peer_wall_seconds"]["runs"]
        pairs = [p / run["wall_seconds"] for p, run in zip(peers, figures["runs"])]  # paired, then the median
        assert report["extract"]["speedup_over_peer"][name] == pytest.approx(_median(pairs))
        assert figures["wall_seconds"] == pytest.approx(_median([run["wall_seconds"] for run in figures["runs"]]))
    assert len(report["extract"]["peer_wall_seconds"]["runs"]) == 2
    decode = report["decode"]
    paired = [b / a for a, b in zip(decode["workers_1"]["runs"], decode["workers_2"]["runs"])]
    assert decode["scaling_2_over_1"] == pytest.approx(_median(paired))
    seeds = report["seeds_frozen_base"]
    assert seeds["epochs"] == 1
    assert seeds["speedup"] == pytest.approx(seeds["frozen_base_fit_seconds"] / seeds["extract_once_plus_head_seconds"])
    hvass = report["hvass_one_per_call"]
    assert hvass["images"] == 3
    assert hvass["speedup"] == pytest.approx(hvass["batched_extract_images_per_second"] / hvass["images_per_second"])
    synthetic = report["cache_read"]["synthetic_cache"]
    assert synthetic["megabytes"] == pytest.approx(1.0, rel=0.05) and synthetic["warm_mb_per_second"] > 0
    assert report["cache_read"]["extracted_cache"]["megabytes"] == pytest.approx(12 * 32 * 4 / 1e6)
    assert "memory" not in report
    out = capsys.readouterr().out
    assert "hand-written Keras loop: whole process (s)" in out and f"(JSON: {target})" in out


def test_the_memory_part_names_its_missing_dependency(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)  # what an install without the bench extra looks like
    message = ("the memory part needs psutil, which is not installed; pip install 'transfer_cache[bench]' "
               "(or pip install psutil), or leave memory out of --parts")
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        run_bench(backbone="tiny", weights="none", parts=("memory",))


def test_test_images_are_distinct_seeded_jpeg_crops(tmp_path):
    folder = write_test_images(tmp_path / "a", 10, seed=3)
    again = write_test_images(tmp_path / "b", 10, seed=3)
    files = sorted(folder.rglob("*.jpg"))
    assert len(files) == 10 and len({f.parent.name for f in files}) >= 5  # one class per sample photograph
    contents = [f.read_bytes() for f in files]
    assert len(set(contents)) == 10
    assert contents == [f.read_bytes() for f in sorted(again.rglob("*.jpg"))]
    for f in files:
        with Image.open(f) as image:
            assert image.format == "JPEG" and image.size == (500, 375)  # photo-like, not tiny synthetic images


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(images=0), "images must be a whole number of at least 1; got 0"),
        (dict(repeats=0), "repeats must be a whole number of at least 1; got 0"),
        (dict(memory_scale=1), "memory scale must be a whole number of at least 2; got 1"),
        (dict(parts=("gpu",)),
         "parts must name parts among 'backbone', 'extract', 'peer', 'decode', 'phone', 'first-run', 'seeds', "
         "'hvass', 'io', 'memory', 'rows'; got 'gpu'"),
        (dict(photo_images=0), "photo images must be a whole number of at least 1; got 0"),
        (dict(backbone="alexnet"), "unknown backbone 'alexnet'"),
    ],
)
def test_arguments_are_checked_first(kwargs, expected):
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        run_bench(**{"backbone": "tiny", "weights": "none", **kwargs})


def test_cli_reports_a_bad_json_folder(tmp_path, capsys):
    assert main(["--backbone", "tiny", "--weights", "none", "--json", str(tmp_path / "no" / "b.json")]) == 2
    assert "folder" in capsys.readouterr().err


@pytest.mark.slow
def test_peak_memory_stays_flat_from_1x_to_10x_images(tmp_path):
    """Loose on purpose: 10x the images may cost a little (row metadata), never 10x the memory."""
    figures = memory_flatness(options={"backbone": "tiny", "weights": "none", "batch_size": 32}, images=150, scale=10,
                              workdir=tmp_path)
    assert figures["images_scaled"] == 1500
    assert figures["peak_rss_mb_scaled"] < 1.25 * figures["peak_rss_mb_1x"], figures
    assert math.isfinite(figures["extra_mb_per_1000_images"])


def test_every_part_is_run_by_a_step():
    """A part named in PARTS (and so accepted by --parts) but served by no step would be skipped without a word."""
    from transfer_cache import bench

    assert {part for step in bench._STEPS for part in step.parts} == set(bench.PARTS)


def test_photo_sets_are_the_same_crops_at_phone_size_written_once(tmp_path):
    from transfer_cache._bench_images import PHONE_SIZE, SMALL_SIZE, photo_set

    phone = photo_set(tmp_path, 2, size=PHONE_SIZE)
    small = photo_set(tmp_path, 2, size=SMALL_SIZE)
    assert (phone.name, small.name) == ("photos-4032x3024-2", "photos-500x375-2")
    phone_files, small_files = sorted(phone.rglob("*.jpg")), sorted(small.rglob("*.jpg"))
    assert [f.relative_to(phone) for f in phone_files] == [f.relative_to(small) for f in small_files]
    for big, little in zip(phone_files, small_files):
        with Image.open(big) as a, Image.open(little) as b:
            assert (a.format, a.size, b.size) == ("JPEG", (4032, 3024), (500, 375))
            shrunk = np.asarray(a.convert("RGB").resize((500, 375), Image.Resampling.BOX), np.float64)
            difference = np.abs(shrunk - np.asarray(b.convert("RGB"), np.float64)).mean()
            assert difference < 6, difference  # the same crop; only the resampling and JPEG differ
    stamps = [f.stat().st_mtime_ns for f in phone_files]
    assert photo_set(tmp_path, 2, size=PHONE_SIZE) == phone  # kept: 12 MP photos are not written again
    assert [f.stat().st_mtime_ns for f in phone_files] == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos-4032x3024-2", "photos-500x375-2"]  # no temporary


def test_vector_agreement_matches_rows_by_digest(tmp_path):
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(6, 4)).astype("float32")
    ids = [f"{i:064x}" for i in range(6)]
    order = [3, 0, 5, 1, 4, 2]  # the other cache holds the same images in another order, slightly moved
    moved = reference[order] + rng.normal(scale=0.05, size=(6, 4)).astype("float32")
    a = write_synthetic_cache(tmp_path / "a.h5", features=moved, labels=[0] * 6, ids=[ids[i] for i in order])
    b = write_synthetic_cache(tmp_path / "b.h5", features=reference, labels=[0] * 6, ids=ids)
    figures = vector_agreement(a, b)
    want = [float(np.dot(moved[k], reference[i]) / (np.linalg.norm(moved[k]) * np.linalg.norm(reference[i])))
            for k, i in enumerate(order)]
    assert figures["images"] == 6
    assert figures["min_cosine"] == pytest.approx(min(want), abs=1e-6) and min(want) < 0.9999
    assert figures["median_cosine"] == pytest.approx(_median(want), abs=1e-6)
    assert figures["max_abs_difference"] == pytest.approx(float(np.abs(moved - reference[order]).max()), abs=1e-6)
    assert vector_agreement(b, b)["min_cosine"] == pytest.approx(1.0)


def test_alternated_runs_reverse_their_order_every_other_repeat():
    from transfer_cache._bench_timing import _alternated

    ran = []

    def side(name):
        def run(r):
            ran.append((name, r))
            return 10.0 * r + len(ran), {"computed": 1}
        return run

    runs = _alternated({"a": side("a"), "b": side("b")}, 3)
    assert ran == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert [run["wall_seconds"] for run in runs["a"]] == [1.0, 14.0, 25.0]
    assert [run["wall_seconds"] for run in runs["b"]] == [2.0, 13.0, 26.0]


def test_phone_and_first_run_parts_time_real_extractions(tmp_path, capsys):
    """Two photos, one pair each: the real whole processes of both parts (the embedded Lite0 on OpenVINO when it is
    installed, no TensorFlow), their figures consistent with their runs, and their rows in the table."""
    target = tmp_path / "bench.json"
    argv = ["--images", "1", "--repeats", "1", "--parts", "phone,first-run", "--photo-images", "2",
            "--workdir", str(tmp_path / "work"), "--json", str(target), "--quiet"]
    assert main(argv) == 0
    report = json.loads(target.read_text())
    photo = report["photo_size"]
    assert photo["images"] == 2 and photo["runtime"] in ("openvino", "tensorflow")
    phone, small = photo["phone"]["runs"][0], photo["small"]["runs"][0]
    assert phone["computed"] == small["computed"] == 2
    assert photo["ratio_wall"] == pytest.approx(small["wall_seconds"] / phone["wall_seconds"])
    assert photo["ratio_steady"] == pytest.approx(phone["images_per_second"] / small["images_per_second"])
    assert photo["phone"]["wall_images_per_second"] == pytest.approx(2 / phone["wall_seconds"])
    for name in ("phone", "small"):
        (key, decode), = photo[name]["decode"].items()
        assert key == f"workers_{os.cpu_count()}" and decode["median"] == decode["runs"][0] > 0
    with Image.open(next((tmp_path / "work" / "photo-size" / "photos-4032x3024-2").rglob("*.jpg"))) as image:
        assert image.size == (4032, 3024)
    first = report["first_run"]
    assert first["images"] == 2 and first["runtime"] == photo["runtime"]
    assert first["extra_seconds"] == pytest.approx(first["first"]["wall_seconds"] - first["warm"]["wall_seconds"])
    for kind in ("first", "warm"):
        assert 0 < first[kind]["first_batch_seconds"] < first[kind]["wall_seconds"]
    if first["runtime"] == "openvino":  # the first run made its own model in its empty folder
        assert any((tmp_path / "work" / "first-run" / "models-empty-0").rglob("model.xml"))
    out = capsys.readouterr().out
    assert f"phone size / 500x375, 2 photos, {photo['runtime']} (wall img/s)" in out
    assert f"first run / warm run, 2 photos, {first['runtime']} (s)" in out
    # again in the kept work folder: its earlier caches are cleared, not hits that would time nothing
    assert main([*argv[:5], "first-run", *argv[6:]]) == 0
    assert json.loads(target.read_text())["first_run"]["first"]["runs"][0]["computed"] == 2
