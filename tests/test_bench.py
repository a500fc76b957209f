"""The benchmark command on tiny settings (it must run and write valid JSON), its test images, and memory flatness."""

from __future__ import annotations

import json
import math
import re

import pytest
from PIL import Image

from transfer_cache import TransferCacheError
from transfer_cache.bench import main, memory_flatness, run_bench, write_test_images


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
         "parts must name parts among 'backbone', 'extract', 'peer', 'decode', 'seeds', 'hvass', 'io', 'memory', "
         "'rows'; got 'gpu'"),
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
