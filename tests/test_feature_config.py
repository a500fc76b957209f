"""One declaration of the extract options and of the cache's per-row tables, and every place that uses them derived
from it: a throwaway option or column added to the declaration reaches them all."""

from __future__ import annotations

import dataclasses
import inspect
import re

import h5py
import numpy as np
import pytest

from transfer_cache import TransferCacheError, _options
from transfer_cache.cache import TABLES, open_cache
from transfer_cache.extract import build_parser, extract, run_sharded_result
from transfer_cache.extract_options import ExtractOptions, feature_config, option_names
from transfer_cache.feature_config import UNHASHED_RUNTIME, FeatureConfig, fingerprint

from conftest import make_class_folder

TINY = dict(backbone="tiny", weights="none")


def test_extract_signature_is_the_declared_options():
    params = inspect.signature(extract).parameters
    declared = {f.name: f.default for f, _ in _options.declared(ExtractOptions)}
    assert list(params)[0] == "source"
    assert {name: p.default for name, p in params.items() if name != "source"} == declared


def test_every_option_is_one_cli_flag_with_its_default():
    actions = {action.dest: action for action in build_parser()._actions}
    for f, flag in _options.declared(ExtractOptions):
        action = actions[f.name]
        assert action.option_strings == [_options.cli_flag(f)]
        assert action.default == f.default, f.name
        assert action.help == flag.help, f.name
    assert build_parser().parse_args(["x", "--quiet"]).progress is False


def test_a_throwaway_option_is_one_field_that_reaches_the_signature_the_flags_and_the_shards():
    """Adding an option is one field: the keyword, the flag, its --help and the sharded forwarding follow."""
    import argparse

    @dataclasses.dataclass(frozen=True)
    class Scratch(ExtractOptions):
        colour: str = _options.option("red", "a throwaway option", group="run", metavar="NAME")

    def scratch_extract(source, **options):
        return _options.build(Scratch, options, function="scratch_extract")

    _options.takes(Scratch)(scratch_extract)
    assert inspect.signature(scratch_extract).parameters["colour"].default == "red"
    parser = argparse.ArgumentParser()
    _options.add_arguments(parser, Scratch)
    assert "a throwaway option" in parser.format_help()
    typed = _options.from_args(Scratch, parser.parse_args(["--colour", "blue"]))
    assert typed.colour == "blue" and scratch_extract("x", colour="green").colour == "green"
    assert typed.replace(shard="0/2").of_groups("run")["colour"] == "blue"  # what each shard receives
    with pytest.raises(TransferCacheError, match=re.escape("colur is not an option of scratch_extract(); the options")):
        scratch_extract("x", colur="blue")


def _changed(value):
    """Another value of the same type: what a different option would have put in the configuration."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return [*value, "other"]
    return f"{value}-other"


@pytest.mark.parametrize("runtime", ["tensorflow", "openvino"])
def test_every_field_that_changes_the_vectors_changes_the_fingerprint_and_nothing_else_does(runtime):
    """Each field of the resolved configuration, changed alone, gives a new fingerprint; run options do not."""
    config = feature_config(runtime=runtime).as_dict()
    base = fingerprint(config)
    assert set(config) == {f.name for f in dataclasses.fields(FeatureConfig)}
    for name, value in config.items():
        assert fingerprint({**config, name: _changed(value)}) != base, name
    for name in option_names("run"):
        assert fingerprint({**config, name: "anything"}) == base, name


def test_the_embedded_default_keeps_its_0_1_0_fingerprint():
    """`python -m transfer_cache.extract sklearn:digits` wrote fingerprint 2db0b89fddb4a7db in 0.1.0 (TensorFlow)."""
    assert feature_config(runtime="tensorflow").fingerprint == "2db0b89fddb4a7db"


@pytest.mark.slow
def test_the_readme_command_is_a_cache_hit_on_a_0_1_0_digits_cache(tmp_path):
    """The README's first command, run where 0.1.0 left its digits cache: a hit on that file (auto continues it),
    whichever runtime this machine would pick for a new cache."""
    import subprocess
    import sys

    made = extract("sklearn:digits", cache_dir=tmp_path, runtime="tensorflow", progress=False)
    assert made.path.name == "digits-8fc028.efficientnet_lite0.2db0b89fddb4a7db.h5"
    done = subprocess.run(
        [sys.executable, "-m", "transfer_cache.extract", "sklearn:digits", "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"cache hit: 1797 rows, nothing computed (0 failed images listed) -> {made.path}"


def test_unknown_vector_option_is_named():
    with pytest.raises(TransferCacheError, match=re.escape("batch_size is not an option of the feature configuration")):
        feature_config(batch_size=3)


def test_feature_config_round_trips_through_the_cache_attributes(tmp_path):
    root = make_class_folder(tmp_path / "images", per_class=2)
    result = extract(str(root), cache_dir=tmp_path / "caches", progress=False, augment=1, augment_recipe="flip", **TINY)
    with open_cache(result.path) as cache:
        read_back = cache.feature_config
    assert read_back == FeatureConfig.from_attrs(cache.config)
    assert read_back == feature_config(augment=1, augment_recipe="flip", **TINY)
    assert read_back.fingerprint == cache.fingerprint


def test_sharded_run_forwards_every_vector_and_run_option(tmp_path, monkeypatch):
    """Each shard's task receives the typed options whole: every vector and run option the user gave arrives."""
    import transfer_cache.distributed as distributed

    seen = {}

    def fake_run_tasks(task, specs, **engine):
        seen.update(task.args[1].of_groups("vectors", "run"))
        raise TransferCacheError("stop here")

    monkeypatch.setattr(distributed, "run_tasks", fake_run_tasks)
    root = make_class_folder(tmp_path / "images", per_class=1)
    given = dict(pooling="max", input_size=40, dtype="float16", batch_size=3, lock_timeout=1.5, runtime="tensorflow",
                 allow_outside_root=True, augment=1, augment_recipe="flip", augment_seed=4, layer="conv2")
    with pytest.raises(TransferCacheError, match="stop here"):
        extract(str(root), shards=2, cache_dir=tmp_path / "c", progress=False, **given, **TINY)
    assert sorted(seen) == sorted(option_names("vectors", "run"))
    assert {name: seen[name] for name in given} == given
    assert seen["cache_dir"] == str((tmp_path / "c").resolve())


def test_cache_tables_are_the_datasets_of_a_written_cache(tmp_path):
    """The declaration and the file agree: every HDF5 dataset of a cache belongs to a declared table."""
    root = make_class_folder(tmp_path / "images", per_class=2)
    path = extract(
        str(root), cache_dir=tmp_path / "caches", progress=False, augment=2, augment_recipe="flip", **TINY
    ).path
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
    declared = {table.node(column.name) for table in TABLES for column in table.columns}
    declared |= {table.node("features") for table in TABLES if table.features}
    assert sorted(names) == sorted(declared)


def test_merged_sharded_augmented_cache_equals_the_unsharded_one(tmp_path):
    """0.1.0's merge lost /augmented: a sharded run with views now has them, equal to a single run's."""
    root = make_class_folder(tmp_path / "images", per_class=3, splits=("train", "test"))
    options = dict(augment=2, augment_recipe="flip", **TINY)
    single = extract(str(root), cache_dir=tmp_path / "single", progress=False, **options).path
    merged = run_sharded_result(str(root), shards=3, engine="local", cache_dir=tmp_path / "sharded", **options).path
    with open_cache(single) as a, open_cache(merged) as b:
        assert a.n_views == b.n_views == 2
        assert a.ids == b.ids
        np.testing.assert_array_equal(a.view_rows, b.view_rows)
        np.testing.assert_array_equal(a.views[:], b.views[:])
        assert len(b.view_rows) == 9  # the nine training images, no test image
        assert set(b.split[b.view_rows]) == {"train"}


def test_a_cache_promising_views_it_lacks_is_damaged_and_recomputed(tmp_path, capsys):
    root = make_class_folder(tmp_path / "images", per_class=2)
    options = dict(augment=2, augment_recipe="flip", cache_dir=tmp_path / "caches", progress=False, **TINY)
    path = extract(str(root), **options).path
    with open_cache(path) as cache:
        views = cache.views[:]
    with h5py.File(path, "a") as f:  # what 0.1.0's merge wrote: views in the attributes, none in the file
        del f["augmented"]
    with pytest.raises(TransferCacheError, match=re.escape("its attributes promise /augmented")):
        open_cache(path)
    again = extract(str(root), **options)
    assert not again.hit and again.computed == 6
    assert "recomputing it" in capsys.readouterr().err
    with open_cache(again.path) as cache:
        np.testing.assert_allclose(cache.views[:], views, rtol=1e-6, atol=1e-6)


def test_runtime_enters_the_fingerprint_only_when_it_is_not_the_reference():
    base = feature_config(**TINY, runtime="tensorflow").as_dict()
    assert fingerprint(base) == fingerprint({k: v for k, v in base.items() if k != "runtime"})  # as 0.1.0 hashed it
    assert fingerprint({**base, "runtime": "openvino"}) != fingerprint(base)


def test_the_runtime_left_out_of_the_fingerprint_is_the_registry_reference():
    from transfer_cache.runtimes import reference_runtime

    assert reference_runtime() == UNHASHED_RUNTIME


def test_auto_continues_a_cache_another_runtime_made(tmp_path, monkeypatch):
    """"auto" reuses an existing cache of any runtime it could use, rather than computing everything again."""
    import transfer_cache.runtimes as runtimes
    from transfer_cache.runtimes import registry

    root = make_class_folder(tmp_path / "images", per_class=2)
    made = extract(str(root), cache_dir=tmp_path / "c", progress=False, runtime="tensorflow", **TINY)
    # a machine where "auto" prefers another runtime (as OpenVINO is preferred on a CPU)
    for module in (registry, runtimes):
        monkeypatch.setattr(module, "auto_candidates", lambda: ["elsewhere", "tensorflow"])
    assert feature_config(**TINY).runtime == "elsewhere"
    again = extract(str(root), cache_dir=tmp_path / "c", progress=False, runtime="auto", **TINY)
    assert again.hit and again.path == made.path


def test_an_unknown_runtime_is_refused_before_any_work(tmp_path):
    with pytest.raises(TransferCacheError, match=re.escape("runtime must be one of 'auto', 'openvino', 'tensorflow'")):
        extract(str(tmp_path), runtime="onnx", cache_dir=tmp_path / "c", progress=False, **TINY)
