"""The report's page of a runs folder: every run of its index on one page, a leaderboard across caches (backbone x
layer x head), accuracy against fit time and against the cache's extraction cost, and a link to each run's page."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from . import analysis
from ._errors import TransferCacheError
from .cache import open_cache
from .html_page import Page, esc
from .maps_section import Maps
from .runs import index_path, read_index, read_run, run_cache_path


def _extraction_cost(cache) -> dict:
    """What a cache records of its last extraction, as the table shows it: images/s (the rate extract's summary
    printed), forward-pass seconds (and how many images they covered when not all rows), ms per image for the plot.
    Empty for caches that record none (before transfer_cache 0.2) or whose last extraction computed nothing."""
    seconds, computed = cache.info.extraction_seconds, cache.info.extraction_computed
    if seconds is None or not computed or float(seconds) <= 0:
        return {}
    seconds, computed = float(seconds), int(computed)
    of = "" if computed == len(cache) else f" ({computed} of {len(cache)} images)"
    return {"rate": f"{computed / seconds:.1f}", "seconds": f"{seconds:.2f}{of}",
            "ms_per_image": 1000 * seconds / computed}


def runs_page(runs_dir: Path, *, maps: Maps, progress: bool) -> Page:
    """Every run of ``runs/index.csv`` on one page (``maps`` and ``progress`` are the other pages' settings; this
    page draws no map of vectors)."""
    rows = read_index(runs_dir)
    if not rows:
        raise TransferCacheError(f"{index_path(runs_dir)} lists no runs yet; run python -m transfer_cache.fit first")
    page = Page(f"Runs in {runs_dir}", f"{len(rows)} runs, best first")
    page.hover = "hover any point for its run; each run's name links to its own page"
    table, points = _leaderboard(runs_dir, rows)
    page.heading("Leaderboard")
    page.table(table, header=("run", "head", "backbone", "layer", "runtime", "accuracy", "balanced acc.", "macro F1",
                              "fit s", "extract images/s", "forward pass s", "cache"), escape=False)
    page.note("extract images/s is the figure extract's summary line printed when the cache was last written: images "
              "through the backbone per second of forward pass. forward pass s is that forward pass alone, over the "
              "images that extraction computed (a resumed or updated cache reused the rest); the summary's total "
              "seconds also count hashing the images, loading the model and writing the file.")
    _accuracy_figures(page, points)
    page.figure(analysis.leaderboard_figure(runs_dir))
    return page


def _leaderboard(runs_dir: Path, rows: list[dict]) -> tuple[list, list]:
    """The table's rows (best first) and, per run, (index row, layer, ms per image of its cache's extraction)."""
    table, points = [], []
    caches: dict[str, tuple[dict, str]] = {}  # cache path -> (its last extraction's cost, runtime)
    for row in sorted(rows, key=lambda r: -np.nan_to_num(r["accuracy"], nan=-1.0)):
        run_dir = Path(row["run_dir"]) if Path(row["run_dir"]).is_dir() else runs_dir / row["run_id"]
        try:
            run = read_run(run_dir, with_predictions=False)
            layer = "" if run.layer is None else run.layer
            cache_path = str(run_cache_path(run))
        except TransferCacheError:
            layer, cache_path = "", ""
        if cache_path and cache_path not in caches:
            with contextlib.suppress(TransferCacheError, OSError):
                with open_cache(cache_path) as cache:
                    caches[cache_path] = (_extraction_cost(cache), cache.feature_config.runtime)
        cost, runtime = caches.get(cache_path, ({}, ""))
        page_file = run_dir / "report.html"
        target = page_file if page_file.is_file() else run_dir
        link = f'<a href="{esc(target.resolve().as_uri())}">{esc(row["run_id"])}</a>'
        table.append([link, esc(row["classifier"]), esc(row["backbone"]), esc(layer), esc(runtime),
                      f"{row['accuracy']:.4f}", f"{row['balanced_accuracy']:.4f}", f"{row['macro_f1']:.4f}",
                      f"{row['fit_seconds']:.2f}", cost.get("rate", ""), cost.get("seconds", ""),
                      esc(Path(cache_path).name if cache_path else row["cache"])])
        points.append((row, layer, cost.get("ms_per_image")))
    return table, points


def _accuracy_figures(page: Page, points: list) -> None:
    """Accuracy against fit time, and against the cache's extraction cost (left out when no cache records it)."""
    import plotly.graph_objects as go

    accuracies = [p[0]["accuracy"] for p in points if math.isfinite(p[0]["accuracy"])]
    low, high = (min(accuracies), max(accuracies)) if accuracies else (0.0, 1.0)
    pad = max(0.05, 0.1 * (high - low))
    accuracy_axis = dict(title="accuracy", range=[max(0.0, low - pad), min(1.0, high + pad)])
    for title, x_of, axis, unit in (
        ("Accuracy against fit time", lambda p: p[0]["fit_seconds"], "fit seconds", "s"),
        ("Accuracy against the cache's extraction cost", lambda p: p[2],
         "forward-pass milliseconds per image (the cache's last extraction)", "ms per image"),
    ):
        if not any(x_of(p) is not None for p in points):
            page.note(f"{title}: left out, no run's cache records it (caches written before transfer_cache 0.2 do not)")
            continue
        fig = go.Figure()
        for head in sorted({p[0]["classifier"] for p in points}):
            chosen = [p for p in points if p[0]["classifier"] == head and x_of(p) is not None]
            if chosen:
                fig.add_trace(go.Scatter(
                    x=[x_of(p) for p in chosen], y=[p[0]["accuracy"] for p in chosen], mode="markers", name=head,
                    text=[f"{p[0]['run_id']}<br>{p[0]['backbone']} {p[1]}" for p in chosen],
                    hovertemplate="%{text}<br>accuracy %{y:.4f}<br>%{x:.2f} " + unit + "<extra></extra>",
                    marker=dict(size=10), cliponaxis=False,  # a run at accuracy 1.0 sits on the axis' top, whole
                ))
        fig.update_layout(title=title, xaxis=dict(title=axis, type="log"), yaxis=accuracy_axis, height=420)
        page.figure(fig)
