"""The bench's rows part: a synthetic cache of N rows shaped like the real cache in its work folder, and inspect,
neighbors and fit logreg on it as whole processes with their peak RSS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transfer_cache._bench_rows import timed_command
from transfer_cache.bench import main
from transfer_cache.cache import open_cache

from conftest import write_synthetic_cache


def test_rows_part_times_the_light_stage_on_a_synthetic_cache(tmp_path, capsys):
    work = tmp_path / "bench"
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    X = np.maximum(rng.uniform(0, 3, (3, 24))[labels] + 0.5 * rng.standard_normal((60, 24)), 0).astype(np.float32)
    real = write_synthetic_cache(work / "rows" / "real" / "real.h5", features=X, labels=labels,
                                 class_names=("a", "b", "c"))  # the real cache the part finds in its work folder
    target = tmp_path / "bench.json"
    argv = ["--backbone", "tiny", "--weights", "none", "--images", "1", "--parts", "rows", "--rows", "900",
            "--workdir", str(work), "--json", str(target), "--quiet"]
    assert main(argv) == 0
    figures = json.loads(target.read_text())["rows"]
    assert figures["rows"] == 900 and figures["feature_dim"] == 24 and figures["real_cache_seconds"] is None
    assert figures["planted"] == {"duplicates": 2, "leakage": figures["planted"]["leakage"],
                                  "conflicts": figures["planted"]["conflicts"], "flipped": 18}
    for command in ("inspect", "neighbors", "fit_logreg"):
        assert figures[command]["wall_seconds"] > 0 and 50 < figures[command]["peak_rss_mb"] < 4000
    with open_cache(work / "rows" / "synthetic-900.h5") as synthetic, open_cache(real) as like:
        assert synthetic.fingerprint == like.fingerprint and len(synthetic) == 900
    assert (work / "rows" / "inspect" / "label_issues.csv").exists()
    assert len(list((work / "rows" / "runs").glob("*-logreg-*"))) == 1
    out = capsys.readouterr().out
    assert "synthetic cache of 900 rows x 24" in out
    assert "  fit logreg on 900 rows: whole process (s) / peak RSS (MB)" in out


def test_a_failing_command_names_itself(tmp_path):
    with pytest.raises(RuntimeError, match=r"python -m transfer_cache.fit .*missing.h5 ended with 2: .*missing.h5"):
        timed_command("transfer_cache.fit", str(tmp_path / "missing.h5"))
