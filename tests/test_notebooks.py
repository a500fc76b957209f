"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel (tiny backbone, small data via env
variables)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_analysis import make_image_folder

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, workdir: Path, monkeypatch, **env) -> nbformat.NotebookNode:
    """Execute a copy of the notebook in ``workdir`` (the kernel inherits ``env``); nbclient raises on any cell
    error."""
    for key, value in env.items():
        monkeypatch.setenv(f"TRANSFER_CACHE_NB_{key}", str(value))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # t-SNE's spinning OpenMP threads crawl on a busy 2-core machine
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_notebooks_are_committed_without_outputs():
    assert {p.name for p in NOTEBOOKS} >= {"explore_cache.ipynb", "compare_classifiers.ipynb"}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs"


def test_notebooks_take_their_parameters_from_the_environment():
    for path in NOTEBOOKS:
        first_code = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
        for name in ("BACKBONE", "WEIGHTS", "SOURCE", "CACHE_DIR"):
            assert f'os.environ.get("TRANSFER_CACHE_NB_{name}"' in first_code, (path.name, name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    make_image_folder(tmp_path / "images", per_class=10)
    notebook = run_notebook(
        path, tmp_path, monkeypatch, BACKBONE="tiny", WEIGHTS="none", SOURCE=tmp_path / "images",
        CACHE_DIR=tmp_path / "caches", RUNS_DIR=tmp_path / "runs", SAMPLE=25, EPOCHS=2, CLASSIFIERS="logreg,dense",
    )
    caches = list((tmp_path / "caches").glob("*.h5"))
    assert len(caches) == 1 and ".tiny." in caches[0].name
    text = outputs_text(notebook)
    assert "30 rows" in text
    figures = [
        o for c in notebook.cells for o in c.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})
    ]
    assert len(figures) >= 4
    if path.stem == "compare_classifiers":
        index = (tmp_path / "runs" / "index.csv").read_text().splitlines()
        assert len(index) == 3  # header + logreg + dense
        assert list((tmp_path / "runs").glob("*/report.html"))
    else:
        assert (tmp_path / "caches" / "explore_report.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_embedded_demo(path, tmp_path, monkeypatch):
    """The defaults a user gets: sklearn:digits through EfficientNet-Lite0 with its shipped ImageNet weights."""
    run_notebook(path, tmp_path, monkeypatch, CACHE_DIR=tmp_path / "caches", RUNS_DIR=tmp_path / "runs", SAMPLE=500,
                 EPOCHS=5)
    assert len(list((tmp_path / "caches").glob("digits-*.efficientnet_lite0.*.h5"))) == 1
