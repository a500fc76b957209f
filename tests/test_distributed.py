"""Sharded extraction: the local engine, Dask (an in-process cluster fast, a LocalCluster of processes slow),
failures."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from transfer_cache import TransferCacheError
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract, run_sharded, run_sharded_result

from conftest import make_class_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A small image folder, a weights file for the tiny network, and the single-run cache to compare with.

    A weights file, not weights='none': random initialisation draws from Python's global random state, which other
    threads of a Dask worker (its event loop) also draw from, so 'none' models differ between worker tasks.
    """
    from transfer_cache.backbones import _build_base, get_spec

    tmp = tmp_path_factory.mktemp("dist")
    root = make_class_folder(tmp / "images", per_class=4)
    weights = tmp / "tiny.weights.h5"
    _build_base(get_spec("tiny"), 32, None, include_top=False).save_weights(weights)
    TINY.update(backbone="tiny", weights=str(weights))
    single = extract(str(root), cache_dir=tmp / "single", progress=False, **TINY).path
    return root, single


TINY: dict = {}  # filled by the images fixture, which every test uses


def _assert_same_cache(a_path, b_path):
    with open_cache(a_path) as a, open_cache(b_path) as b:
        np.testing.assert_array_equal(a.features[:], b.features[:])
        assert (a.ids, a.paths, a.labels.tolist(), list(a.split)) == (b.ids, b.paths, b.labels.tolist(), list(b.split))
        assert a.fingerprint == b.fingerprint


def test_local_engine_shards_then_merges(images, tmp_path):
    root, single = images
    result = run_sharded_result(str(root), shards=3, engine="local", cache_dir=tmp_path, **TINY)
    assert result.path == tmp_path / single.name
    assert [p.name for p in result.shard_paths] == [single.name.replace(".h5", f".shard{k}-of-3.h5") for k in range(3)]
    assert (result.rows, result.computed, result.reused) == (12, 12, 0)
    # the forward passes' own time, added up over the shards (not the wall time, which also holds hashing, model
    # building and the merge): one after the other here, so less than the wall time
    assert 0 < result.compute_seconds < result.seconds
    _assert_same_cache(single, result.path)
    # everything is there now: a second run computes nothing, and a plain extract is a cache hit
    again = run_sharded_result(str(root), shards=3, engine="local", cache_dir=tmp_path, **TINY)
    assert again.hit and again.computed == 0
    assert extract(str(root), cache_dir=tmp_path, progress=False, **TINY).hit


def test_failed_shard_is_named_after_retries_and_a_rerun_finishes_it(images, tmp_path):
    root, single = images
    blocker = tmp_path / single.name.replace(".h5", ".shard1-of-3.h5")
    blocker.mkdir()  # shard 1 cannot write its file: a directory is in the way
    with pytest.raises(TransferCacheError) as info:
        run_sharded(str(root), shards=3, engine="local", retries=1, cache_dir=tmp_path, **TINY)
    message = str(info.value)
    assert message.startswith(f"1 of 3 shards failed after 2 attempts (shard 1/3: TransferCacheError: {blocker} is a "
                              "folder, where this cache's file goes; move or rename it and run again")
    assert message.endswith(
        f"the 2 finished shard files are kept in {tmp_path}: fix the cause and run the same command again, which "
        "recomputes only the failed shards"
    )
    assert not (tmp_path / single.name).exists()
    blocker.rmdir()
    result = run_sharded_result(str(root), shards=3, engine="local", cache_dir=tmp_path, **TINY)
    assert result.computed == 4 and result.reused == 8  # only shard 1 was computed
    _assert_same_cache(single, result.path)


def test_dask_on_an_in_process_cluster(images, tmp_path):
    """The Dask path (submit, retries, gather, merge) against a scheduler address; workers are threads here."""
    distributed = pytest.importorskip("distributed")
    root, single = images
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        merged = run_sharded(
            str(root), shards=2, engine="dask", scheduler=cluster.scheduler_address, cache_dir=tmp_path, **TINY
        )
    _assert_same_cache(single, merged)


@pytest.mark.slow
def test_dask_local_cluster_of_two_worker_processes(images, tmp_path):
    """The default: a LocalCluster of 2 single-threaded worker processes (TensorFlow starts in each: ~40-60 s here)."""
    pytest.importorskip("distributed")
    root, single = images
    result = run_sharded_result(str(root), shards=4, engine="dask", workers=2, cache_dir=tmp_path, **TINY)
    assert result.computed == 12
    _assert_same_cache(single, result.path)


def test_unreachable_scheduler_is_a_clear_error(images, tmp_path):
    pytest.importorskip("distributed")
    root, _ = images
    with pytest.raises(TransferCacheError, match=re.escape("cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'")):
        run_sharded(str(root), shards=2, scheduler="tcp://127.0.0.1:9", cache_dir=tmp_path, **TINY)


def test_missing_dask_is_a_clear_error(images, tmp_path, monkeypatch):
    root, _ = images
    monkeypatch.setitem(sys.modules, "distributed", None)  # what an install without the [dask] extra looks like
    expected = (
        "engine 'dask' needs Dask distributed, which is not installed; pip install transfer_cache[dask] "
        "(or pip install 'dask[distributed]'), or use engine 'local'"
    )
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        run_sharded(str(root), shards=2, cache_dir=tmp_path, **TINY)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(shards=0), "shards must be a whole number of at least 1; got 0"),
        (dict(shards=2, engine="spark"), "engine must be one of 'local', 'dask'; got 'spark'"),
        (dict(shards=2, workers=0), "workers must be a whole number of at least 1; got 0"),
        (dict(shards=2, retries=-1), "retries must be a whole number of at least 0; got -1"),
        (dict(shards=2, shard="0/2"), "run_sharded sets shard itself for each shard; drop it from the extract options"),
        (dict(shards=2, pooling="mean"), "pooling must be one of 'avg', 'max', 'flatten', 'none'; got 'mean'"),
    ],
)
def test_arguments_are_checked_before_any_work(images, tmp_path, kwargs, expected):
    root, _ = images
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        run_sharded(str(root), cache_dir=tmp_path, **{**TINY, **kwargs})
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_source_object_is_refused(images, tmp_path):
    from transfer_cache.sources import open_source

    root, _ = images
    expected = "a sharded run needs the source as a spec string or path (each worker opens it itself); got a "
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        run_sharded(open_source(str(root)), shards=2, cache_dir=tmp_path, **TINY)


# --------------------------------------------------------------------------- through extract()


def test_extract_with_shards_runs_them_and_merges(images, tmp_path):
    root, single = images
    result = extract(str(root), shards=3, cache_dir=tmp_path, progress=False, **TINY)
    assert result.path == tmp_path / single.name and result.rows == 12 and result.computed == 12
    _assert_same_cache(single, result.path)
    assert extract(str(root), cache_dir=tmp_path, progress=False, **TINY).hit


def test_extract_cli_with_dask_engine(images, tmp_path, capsys):
    pytest.importorskip("distributed")
    from transfer_cache.extract import main

    root, single = images
    with __import__("distributed").LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        argv = [str(root), "--backbone", "tiny", "--weights", TINY["weights"], "--cache-dir", str(tmp_path), "--quiet",
                "--engine", "dask", "--scheduler", cluster.scheduler_address, "--shards", "2"]
        assert main(argv) == 0
    assert capsys.readouterr().out.startswith("12 rows written (12 computed, 0 reused), 0 failed, ")
    _assert_same_cache(single, tmp_path / single.name)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(engine="ray"), "engine must be one of 'local', 'dask'; got 'ray'"),
        (dict(workers=2), "--scheduler and --workers apply to --engine dask; add --engine dask or drop them"),
        (dict(shards=2, shard="0/2"),
         "give --shard K/N (extract one shard here) or --shards N (extract all and merge), not both"),
        (dict(shards=0), "shards must be a whole number of at least 1; got 0"),
        (dict(mixed_precision="yes"), "mixed_precision must be True or False; got 'yes'"),
    ],
)
def test_extract_engine_options_are_checked(images, tmp_path, kwargs, expected):
    root, _ = images
    with pytest.raises(TransferCacheError, match=re.escape(expected)):
        extract(str(root), cache_dir=tmp_path, progress=False, **TINY, **kwargs)


def test_mixed_precision_without_a_gpu_computes_in_float32(images, tmp_path, capsys):
    root, single = images
    result = extract(str(root), cache_dir=tmp_path, progress=False, mixed_precision=True, **TINY)
    assert "warning: --mixed-precision needs a GPU and none is visible; computing in float32" in capsys.readouterr().err
    _assert_same_cache(single, result.path)
    with open_cache(result.path) as cache:
        assert cache.config["compute_precision"] == "float32"


def test_mirrored_strategy_over_two_devices_keeps_batch_order(tmp_path):
    """Two logical CPUs stand in for two GPUs: the replicated forward pass equals the single-device one, row for row."""
    import subprocess
    import textwrap

    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from transfer_cache.backbones import build_feature_model
        from transfer_cache.runtimes.tensorflow import compiled_forward
        build = lambda: build_feature_model(backbone="tiny", weights="none", layers=["conv2", "conv3"])[0]
        one = compiled_forward(build)
        two = compiled_forward(build, devices=["/cpu:0", "/cpu:1"])
        for n in (7, 8, 1):
            x = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            for a, b in zip(one(x), two(x)):
                a, b = np.asarray(a), np.asarray(b)
                assert a.shape == b.shape == (n, a.shape[1]), (a.shape, b.shape)
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_sharded_run_checks_every_feature_option_before_any_worker_starts(tmp_path):
    from transfer_cache.extract import run_sharded

    with pytest.raises(
        TransferCacheError,
        match=re.escape("interpolation must be one of 'bilinear', 'bicubic', 'nearest', 'area'; got 'cubic'"),
    ):
        run_sharded(str(tmp_path), shards=2, engine="local", backbone="tiny", weights="none", interpolation="cubic",
                    cache_dir=tmp_path / "caches")
    assert not (tmp_path / "caches").exists() or not list((tmp_path / "caches").glob("*.h5"))
