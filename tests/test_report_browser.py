"""The report's pages opened in a real headless Chromium: every figure draws, the thumbnails show, and no JavaScript
error reaches the page's red box."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from transfer_cache import report

from test_analysis import make_real_runs, single_openmp_thread  # noqa: F401 (autouse)
from test_report import embedded_figures, title_of

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _chromium(url: str, user_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={user_dir}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *extra, url],
        capture_output=True, text=True, timeout=180,
    )


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason="needs /usr/bin/chromium (Debian package 'chromium'); CI installs it")
def test_report_renders_in_headless_chromium(tmp_path):
    """A real run (tiny backbone extraction, dense head fitted by transfer_cache.fit) opened in a real browser."""
    # dense: has training curves and, with 3 epochs on random features, mistakes
    _, (run_dir,) = make_real_runs(tmp_path / "real", classifiers=("dense",))
    out = report.write_report(run_dir, sample=30)
    page = out.read_text()
    n_figures = len(embedded_figures(page))
    gallery = next(f for f in embedded_figures(page) if title_of(f).startswith("Misclassified"))
    n_thumbnails = sum(t["type"] == "image" for t in gallery["data"])

    dumped = _chromium(out.as_uri(), tmp_path / "profile", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    rendered = re.findall(r'<div[^>]*class="[^"]*\bjs-plotly-plot\b[^"]*"', dom)
    assert len(rendered) == n_figures >= 7  # 8 with UMAP installed
    assert len(re.findall(r'<svg[^>]*class="main-svg"', dom)) >= n_figures
    assert len(re.findall(r"<image[^>]+data:image/png;base64", dom)) >= n_thumbnails > 0
    errors = re.search(r'<div id="tc-js-errors"([^>]*)>.*?<ul>(.*?)</ul>', dom, re.S)
    assert errors is not None and errors.group(2) == "" and "hidden" in errors.group(1), errors and errors.group(2)
    assert "Uncaught" not in dumped.stderr

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "run_report.png"
    shot = _chromium(out.as_uri(), tmp_path / "profile2", f"--screenshot={screenshot}", "--window-size=1280,2000",
                     "--hide-scrollbars")
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    shutil.copy(out, ARTIFACTS / "run_report.html")


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason="needs /usr/bin/chromium (Debian package 'chromium'); CI installs it")
def test_the_runs_page_renders_in_headless_chromium(tmp_path):
    """python -m transfer_cache.report runs/: every run of the index on one page, opened in a real browser."""
    _, run_dirs = make_real_runs(tmp_path / "real", classifiers=("logreg", "knn"))
    runs_dir = run_dirs[0].parent
    done = subprocess.run([sys.executable, "-m", "transfer_cache.report", str(runs_dir), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = runs_dir / "index.html"
    assert done.stdout.startswith(f"report: wrote {out} ") and "for runs" in done.stdout
    page = out.read_text()
    for run_dir in run_dirs:
        assert run_dir.name in page  # a link to each run
    titles = [title_of(f) for f in embedded_figures(page)]
    assert titles[:2] == ["Accuracy against fit time", "Accuracy against the cache's extraction cost"]
    dumped = _chromium(out.as_uri(), tmp_path / "profile", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert len(re.findall(r'<div[^>]*class="[^"]*\bjs-plotly-plot\b[^"]*"', dom)) == len(titles) == 3
    errors = re.search(r'<div id="tc-js-errors"([^>]*)>.*?<ul>(.*?)</ul>', dom, re.S)
    assert errors is not None and errors.group(2) == "" and "hidden" in errors.group(1), errors and errors.group(2)
    assert "Uncaught" not in dumped.stderr
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(out, ARTIFACTS / "runs_page.html")
