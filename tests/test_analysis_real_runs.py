"""analysis on run folders made for real (tiny backbone extraction, then transfer_cache.fit): the figures match the
files, the gallery re-reads the images through the source, the leaderboard matches the index."""

from __future__ import annotations

import numpy as np
import pytest

from transfer_cache import analysis
from transfer_cache.cache import open_cache

from test_analysis import (  # noqa: F401 (single_openmp_thread: autouse)
    CLASSES,
    colour_of,
    decode_data_uri,
    make_real_runs,
    scatter_points,
    single_openmp_thread,
)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    return make_real_runs(tmp_path_factory.mktemp("real"))


def test_real_runs_figures_match_their_files(real_runs):
    cache_path, run_dirs = real_runs
    for run_dir in run_dirs:
        run = analysis.load_run(run_dir)
        heatmap = analysis.confusion_matrix_figure(run["metrics"]).data[0]
        assert np.asarray(heatmap.z).tolist() == run["metrics"]["confusion_matrix"]
        assert list(heatmap.x) == run["config"]["class_names"] == list(CLASSES)
        assert len(run["predictions"]["row"]) == run["metrics"]["n_test"]
    dense = analysis.load_run(run_dirs[1])
    assert dense["history"] is not None
    curves = {trace.name: list(trace.y) for trace in analysis.training_curves_figure(run_dirs[1]).data}
    assert set(curves) == set(dense["history"])
    for name, values in dense["history"].items():
        assert curves[name] == pytest.approx(values)
    with open_cache(cache_path) as cache:
        assert scatter_points(analysis.pca_figure(cache)) == len(cache) == 48


def test_real_run_gallery_rereads_images_through_the_source(real_runs):
    _, run_dirs = real_runs
    for run_dir in run_dirs:
        items = analysis.misclassified(run_dir, limit=100)
        images = [t for t in analysis.misclassified_figure(run_dir, limit=100).data if t.type == "image"]
        assert len(images) == len(items)
        for trace, item in zip(images, items):
            label = CLASSES.index(item["path"].split("/")[0])
            assert tuple(decode_data_uri(trace.source)[0, 0]) == colour_of(label, int(item["path"][-6:-4]))


def test_real_leaderboard_matches_the_index(real_runs):
    _, run_dirs = real_runs
    index = analysis.read_index(run_dirs[0].parent)
    fig = analysis.leaderboard_figure(run_dirs[0].parent)
    assert len(index) == 2
    best = max(index, key=lambda r: (r["accuracy"], r["run_id"] == min(x["run_id"] for x in index)))
    assert fig.data[0].x[-1] == pytest.approx(best["accuracy"])
    assert {float(v) for v in fig.data[0].x} == {r["accuracy"] for r in index}
