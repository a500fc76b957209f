"""One self-contained HTML page for a run folder or a cache: opens offline, mails as one file.

plotly.js is embedded once (the first figure carries it, the others reuse it), thumbnails are inline PNG data
URIs, and large caches are sampled (seeded, stated in each title), so a report of a 2000-point cache stays a few
megabytes, most of it plotly.js itself. ``python -m transfer_cache.report RUN_OR_CACHE`` writes it.

A small script at the top of the page lists any JavaScript error in a red box, so a figure that fails to draw
is visible to the reader (and to the headless-browser test) instead of silently blank.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import _atomic, _cli
from ._errors import ImageError, TransferCacheError
from .analysis import ImageFinder, thumbnail_png
from .cache import open_cache

DEFAULT_SAMPLE = 2000
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.metrics td.num { font-size: 1.2em; font-weight: 600; }
.note { color: #555; font-size: .92em; } .figure { margin: 1em 0 2em; }
#tc-js-errors { background: #fde8e8; border: 1px solid #e45756; padding: .5em 1em; color: #a00; }
code { background: #f4f6f8; padding: 0 .2em; }
"""

_ERROR_BOX = """<div id="tc-js-errors" hidden><b>Some figures failed to render:</b><ul></ul></div>
<script>
(function () {
  function show(message) {
    var box = document.getElementById("tc-js-errors");
    var item = document.createElement("li");
    item.textContent = String(message);
    box.querySelector("ul").appendChild(item);
    box.hidden = false;
  }
  window.addEventListener("error", function (event) { show(event.message || event); });
  window.addEventListener("unhandledrejection", function (event) { show("unhandled promise rejection: " + event.reason); });
})();
</script>"""


# --------------------------------------------------------------------------- static export


def save_png(fig, path: str | os.PathLike, *, width: int | None = None, height: int | None = None, scale: float = 1.0) -> Path:
    """Write a figure as a PNG (needs the optional kaleido package, which drives a headless browser)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise TransferCacheError("static image export needs the kaleido package: pip install kaleido") from None
    path = Path(path)
    with _atomic.replacing(path, keep_suffix=True) as temporary:
        fig.write_image(str(temporary), format="png", width=width, height=height, scale=scale)
    return path


# --------------------------------------------------------------------------- page building blocks


def _esc(value) -> str:
    return html.escape(str(value))


def _table(rows, *, header=None, css_class="") -> str:
    parts = [f'<table class="{css_class}">' if css_class else "<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            text = f"{cell:.4f}" if isinstance(cell, float) else _esc(cell)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _kv_table(pairs) -> str:
    """A two-column table; rows without a value are left out."""
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in pairs
                               if v not in (None, "")) + "</table>"


class Page:
    """Sections of HTML and figures, rendered in order with plotly.js embedded by the first figure only."""

    def __init__(self, title: str, subtitle: str):
        self.title = title
        self.subtitle = subtitle
        self.blocks: list = []
        self.figures = 0
        self.hover = ""  # what hovering a point shows, said in the footer only when the page has such points

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h2>{_esc(text)}</h2>")

    def html(self, fragment: str) -> None:
        self.blocks.append(fragment)

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{_esc(text)}</p>')

    def table(self, rows, *, header=None, escape: bool = True) -> None:
        """A table; with ``escape=False`` the cells are HTML already (thumbnails, links)."""
        if escape:
            self.blocks.append(_table(rows, header=header))
            return
        head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        self.blocks.append(f"<table>{head}{body}</table>")

    def figure(self, fig) -> None:
        self.blocks.append(fig)
        self.figures += 1

    def render(self) -> str:
        body = []
        first = True
        for block in self.blocks:
            if isinstance(block, str):
                body.append(block)
                continue
            body.append('<div class="figure">' + block.to_html(
                full_html=False, include_plotlyjs=first, config=_PLOTLY_CONFIG, default_width="100%",
            ) + "</div>")
            first = False
        created = _dt.datetime.now().isoformat(timespec="seconds")
        from . import __version__

        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{_ERROR_BOX}\n"
            f"<h1>{_esc(self.title)}</h1>\n<p class=\"sub\">{_esc(self.subtitle)}</p>\n"
            + "\n".join(body)
            + f'\n<p class="note">Written by transfer_cache {_esc(__version__)} on {_esc(created)}. '
            f"Self-contained: opens offline{'; ' + _esc(self.hover) if self.hover else ''}.</p>\n</body>\n</html>\n"
        )


def _cache_pairs(cache) -> list:
    config = cache.config
    versions = config.get("versions") or {}
    return [
        ("file", cache.path),
        ("rows", len(cache)),
        ("classes", f"{len(cache.class_names)}: {', '.join(map(str, cache.class_names[:30]))}"
                    + (" ..." if len(cache.class_names) > 30 else "")),
        ("failed images", len(cache.failed)),
        ("source", config.get("source", "")),
        ("backbone", f"{config.get('backbone')} (weights {config.get('weights')})"),
        ("layers", ", ".join(cache.layers)),
        ("pooling / feature size", f"{config.get('pooling')} / {config.get('feature_dim')}"),
        ("input", f"{config.get('input_size')} px, resize {config.get('resize')} "
                  f"(crop {config.get('crop_fraction')}, {config.get('interpolation')}), preprocessing {config.get('preprocessing')}"),
        ("dtype", config.get("dtype")),
        ("fingerprint", cache.fingerprint),
        ("created", config.get("created", "")),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict) else versions),
    ]


# the fewest points each map is drawn for by default: below them the map is not worth its cost (t-SNE of a handful of
# points is noise; UMAP's first call compiles its numba code, about 20 s, to show what t-SNE already shows)
TSNE_MIN_POINTS = 10
UMAP_MIN_POINTS = 500


def _scatter_section(page: Page, cache, *, layer, sample: int, seed: int, tsne: bool, variance: bool, tick, n_jobs=None,
                     umap: bool | None = None) -> None:
    """PCA, then t-SNE and UMAP (``umap``: None draws it from UMAP_MIN_POINTS points on, True always, False never)."""
    from . import analysis

    n = len(cache)
    if n < 3:
        page.note(f"PCA and t-SNE need at least 3 rows; this cache has {n}.")
        return
    page.hover = "hover any point for its image path"
    page.heading("Transfer values: PCA")
    page.note("Principal components of the cached vectors, coloured by class. Well separated clusters mean a simple "
              "classifier will do well on these transfer values.")
    page.figure(analysis.pca_figure(cache, layer=layer, sample=sample, seed=seed))
    tick()
    if variance:
        page.figure(analysis.explained_variance_figure(cache, layer=layer, sample=sample, seed=seed))
    tick()
    points = min(n, sample)
    if not tsne:
        page.note("t-SNE skipped (--no-tsne).")
    elif points < TSNE_MIN_POINTS:
        page.note(f"t-SNE left out: {points} points, fewer than {TSNE_MIN_POINTS}; PCA above shows them all.")
    else:
        perplexity = float(min(30.0, max(2.0, (points - 1) // 3)))
        page.heading("Transfer values: t-SNE")
        page.note(f"t-SNE after PCA to at most 50 dimensions (perplexity {perplexity:g}, seed {seed}): neighbourhoods, "
                  "not distances, are meaningful.")
        try:
            page.figure(analysis.tsne_figure(cache, layer=layer, sample=sample, perplexity=perplexity, seed=seed, n_jobs=n_jobs))
        except TransferCacheError as exc:  # every vector the same: no map to draw
            page.note(f"Left out: {exc}")
    if umap is False:
        page.note("UMAP skipped (--no-umap).")
    elif not analysis.umap_available():
        page.note("UMAP left out: pip install 'transfer_cache[umap]' adds it beside t-SNE.")
    elif points <= 15:
        page.note(f"UMAP left out: {points} points; its 15 neighbours need at least 16.")
    elif umap is None and points < UMAP_MIN_POINTS:
        page.note(f"UMAP left out: {points} points, fewer than {UMAP_MIN_POINTS}, where it shows what t-SNE shows and "
                  "its first run costs about 20 s of compiling; --umap draws it anyway.")
    else:
        page.heading("Transfer values: UMAP")
        try:
            page.figure(analysis.umap_figure(cache, layer=layer, sample=sample, seed=seed))
        except TransferCacheError as exc:
            page.note(f"Left out: {exc}")
    tick()


# --------------------------------------------------------------------------- the two reports


def _findings_section(page: Page, path: Path) -> None:
    from .findings import inspect_caches

    page.heading("What the vectors say about the data")
    page.note(f"Duplicates, likely label errors and outliers; python -m transfer_cache.inspect {path.name} writes them "
              "as CSV files too.")
    try:
        findings = inspect_caches(path, check_vectors=False)  # _cache_page scanned this file's vectors on opening it
    except TransferCacheError as exc:
        page.note(f"Left out: {exc}")
        return
    findings_sections(page, findings, top=12)


def _cache_page(path: Path, *, sample: int, seed: int, tsne: bool, progress: bool, n_jobs=None, umap=None) -> Page:
    from . import analysis
    from .cache import open_cache

    with open_cache(path, check_vectors=True) as cache, _bar(5, progress) as bar:  # noqa: SIM117
        cache.require_rows("report on")
        page = Page(f"Cache report: {path.name}", f"{len(cache)} images through {cache.config.get('backbone')} "
                                                    f"({', '.join(cache.layers)}), fingerprint {cache.fingerprint}")
        page.heading("Configuration")
        page.html(_kv_table(_cache_pairs(cache)))
        page.heading("Classes")
        page.figure(analysis.class_counts_figure(cache))
        if len(set(cache.labels[cache.labels >= 0].tolist())) >= 2:
            page.note("How alike the classes look to the backbone: cosine similarity of each class's mean transfer "
                      "vector, after removing the overall mean. High off-diagonal values predict confusions.")
            page.figure(analysis.class_similarity_figure(cache))
        bar.update()
        _scatter_section(page, cache, layer=None, sample=sample, seed=seed, tsne=tsne, variance=True, tick=bar.update,
                         n_jobs=n_jobs, umap=umap)
        _findings_section(page, path)
        failed_images_section(page, cache.failed)
        bar.update()
    return page


def failed_images_section(page: Page, rows, *, header=("path", "reason"), shown: int = 1000) -> None:
    """The images extraction could not decode: they are in no figure or finding, so a page says which they are."""
    page.heading(f"Failed images ({len(rows)})")
    if not rows:
        page.note("Every image was read.")
        return
    if len(rows) > shown:
        page.note(f"first {shown} of {len(rows)} shown")
    page.table(list(rows)[:shown], header=header)


def _run_page(run_dir: Path, *, sample: int, seed: int, tsne: bool, progress: bool, n_jobs=None, umap=None) -> Page:
    from . import analysis
    from .runs import load_run, open_run_cache

    run = load_run(run_dir)
    config, metrics = run["config"], run["metrics"]
    with _bar(7, progress) as bar:
        page = Page(
            f"Run report: {config.get('run_id', run_dir.name)}",
            f"{config.get('classifier')} on {config.get('backbone')} transfer values, "
            f"{metrics.get('n_train')} training and {metrics.get('n_test')} test images",
        )
        page.heading("Metrics")
        summary = [[metrics.get("accuracy"), metrics.get("balanced_accuracy"), metrics.get("macro_f1"),
                    metrics.get("n_train"), metrics.get("n_test"), metrics.get("fit_seconds"), metrics.get("predict_seconds")]]
        page.html(_table(summary, header=("accuracy", "balanced accuracy", "macro F1", "train", "test", "fit s", "predict s"),
                         css_class="metrics"))
        if metrics.get("cv_scores"):
            scores = [float(s) for s in metrics["cv_scores"]]
            mean = sum(scores) / len(scores)
            std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
            page.note(f"{len(scores)}-fold cross-validation accuracy {mean:.4f} ± {std:.4f}: " + ", ".join(f"{s:.4f}" for s in scores))
        split = config.get("split") or {}
        page.html(_kv_table([
            ("classifier", config.get("classifier")),
            ("parameters", json.dumps(config.get("params", {}), sort_keys=True)),
            ("split", ", ".join(f"{k} {v}" for k, v in split.items()) if isinstance(split, dict) else split),
            ("layer", config.get("layer")),
            ("caches", "; ".join(f"{c.get('path')} ({c.get('rows')} rows, fingerprint {c.get('fingerprint')})"
                                 for c in config.get("caches", []))),
            ("created", config.get("created")),
            ("versions", ", ".join(f"{k} {v}" for k, v in (config.get("versions") or {}).items())),
            ("run folder", run_dir),
        ]))
        per_class = metrics.get("per_class") or {}
        if per_class:
            rows = [[name, *(float(per_class[name].get(k, float("nan"))) for k in ("precision", "recall", "f1")),
                     int(per_class[name].get("support", 0))] for name in metrics.get("class_names", per_class) if name in per_class]
            page.html(_table(rows, header=("class", "precision", "recall", "F1", "support")))
        bar.update()

        page.heading("Confusion matrix")
        page.figure(analysis.confusion_matrix_figure(metrics))
        page.figure(analysis.confusion_matrix_figure(metrics, normalize=True))
        page.figure(analysis.per_class_accuracy_figure(metrics))
        bar.update()

        if run["history"]:
            page.heading("Training curves")
            page.figure(analysis.training_curves_figure(run["history"]))
        bar.update()

        try:
            cache = open_run_cache(run)
        except TransferCacheError as exc:
            page.heading("Misclassified images and transfer values")
            page.note(f"Left out: {exc}")
            bar.update(4)
            return page
        with cache:
            if run["predictions"] is not None:
                page.heading("Misclassified test images")
                page.figure(analysis.misclassified_figure(run))
            bar.update()
            _scatter_section(page, cache, layer=config.get("layer"), sample=sample, seed=seed, tsne=tsne, variance=False,
                             tick=bar.update, n_jobs=n_jobs, umap=umap)
    return page


def _extraction_cost(cache) -> dict:
    """What a cache records of its last extraction, as the table shows it: images/s (the rate extract's summary
    printed), forward-pass seconds (and how many images they covered when not all rows), ms per image for the plot.
    Empty for caches that record none (before transfer_cache 0.2) or whose last extraction computed nothing."""
    seconds, computed = cache.config.get("extraction_seconds"), cache.config.get("extraction_computed")
    if seconds is None or not computed or float(seconds) <= 0:
        return {}
    seconds, computed = float(seconds), int(computed)
    of = "" if computed == len(cache) else f" ({computed} of {len(cache)} images)"
    return {"rate": f"{computed / seconds:.1f}", "seconds": f"{seconds:.2f}{of}", "ms_per_image": 1000 * seconds / computed}


def _runs_page(runs_dir: Path, *, sample: int, seed: int, tsne: bool, progress: bool, n_jobs=None, umap=None) -> Page:
    """Every run of ``runs/index.csv`` on one page: a leaderboard across caches (backbone x layer x head), accuracy
    against fit time and against the cache's extraction cost, and a link to each run's own page."""
    import plotly.graph_objects as go

    from . import analysis
    from .cache import open_cache
    from .runs import load_run, read_index, run_cache_path

    rows = read_index(runs_dir)
    if not rows:
        raise TransferCacheError(f"{runs_dir / 'index.csv'} lists no runs yet; run python -m transfer_cache.fit first")
    page = Page(f"Runs in {runs_dir}", f"{len(rows)} runs, best first")
    page.hover = "hover any point for its run; each run's name links to its own page"
    table, points = [], []
    caches: dict[str, tuple[dict, str]] = {}  # cache path -> (its last extraction's cost, runtime)
    for row in sorted(rows, key=lambda r: -np.nan_to_num(r["accuracy"], nan=-1.0)):
        run_dir = Path(row["run_dir"]) if Path(row["run_dir"]).is_dir() else runs_dir / row["run_id"]
        try:
            config = load_run(run_dir)["config"]
            layer = config.get("layer", "")
            cache_path = str(run_cache_path({"config": config, "metrics": {}, "run_dir": run_dir}))
        except TransferCacheError:
            layer, cache_path = "", ""
        if cache_path and cache_path not in caches:
            with contextlib.suppress(TransferCacheError, OSError):
                with open_cache(cache_path) as cache:
                    caches[cache_path] = (_extraction_cost(cache), cache.config.get("runtime", ""))
        cost, runtime = caches.get(cache_path, ({}, ""))
        page_file = run_dir / "report.html"
        target = page_file if page_file.is_file() else run_dir
        link = f'<a href="{_esc(target.resolve().as_uri())}">{_esc(row["run_id"])}</a>'
        table.append([link, _esc(row["classifier"]), _esc(row["backbone"]), _esc(layer), _esc(runtime),
                      f"{row['accuracy']:.4f}", f"{row['balanced_accuracy']:.4f}", f"{row['macro_f1']:.4f}",
                      f"{row['fit_seconds']:.2f}", cost.get("rate", ""), cost.get("seconds", ""),
                      _esc(Path(cache_path).name if cache_path else row["cache"])])
        points.append((row, layer, cost.get("ms_per_image")))
    page.heading("Leaderboard")
    page.table(table, header=("run", "head", "backbone", "layer", "runtime", "accuracy", "balanced acc.", "macro F1",
                              "fit s", "extract images/s", "forward pass s", "cache"), escape=False)
    page.note("extract images/s is the figure extract's summary line printed when the cache was last written: images "
              "through the backbone per second of forward pass. forward pass s is that forward pass alone, over the "
              "images that extraction computed (a resumed or updated cache reused the rest); the summary's total "
              "seconds also count hashing the images, loading the model and writing the file.")
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
    page.figure(analysis.leaderboard_figure(runs_dir))
    return page


# --------------------------------------------------------------------------- what the vectors say (findings)


def _label_name(findings, label: int) -> str:
    return findings.class_names[label] if 0 <= label < len(findings.class_names) else "unlabelled"


class _Thumbnails:
    """Thumbnails of rows, re-read through each row's cache's source (a row whose image is gone shows its path)."""

    def __init__(self, findings):
        self.findings = findings
        self._finders: dict[str, ImageFinder] = {}

    def __call__(self, row: int, *, size: int = 96) -> str:
        origin = self.findings.origin[row]
        if origin not in self._finders:
            with open_cache(origin) as cache:
                self._finders[origin] = ImageFinder(cache)
        path = self.findings.paths[row]
        caption = html.escape(f"{path} ({self.findings.split[row] or 'no split'}, "
                              f"{_label_name(self.findings, int(self.findings.labels[row]))})")
        try:
            image = self._finders[origin].load(path)
        except (ImageError, TransferCacheError, OSError):
            return f"<span>{caption}</span>"
        return f'<img src="{thumbnail_png(image, size=size)}" alt="{html.escape(path)}"><br><small>{caption}</small>'


def inspection_page(findings, *, title: str, top: int = 24) -> Page:
    """The page of ``python -m transfer_cache.inspect``: the findings sections on their own."""
    page = Page(title, f"{len(findings.paths)} images, {len(findings.class_names)} classes")
    findings_sections(page, findings, top=top)
    return page


def findings_sections(page: Page, findings, *, top: int = 24, similar: int = 4) -> None:
    """What the vectors say about the data: a summary, then the worst ``top`` items of each finding with thumbnails,
    and a gallery of the images nearest to ``similar`` sample images."""
    thumb = _Thumbnails(findings)
    flagged = [item for item in findings.label_issues if item["flagged"]]
    page.table([["exact duplicate pairs", sum(1 for p in findings.duplicates if p["kind"] == "exact")],
                ["near duplicate pairs", sum(1 for p in findings.duplicates if p["kind"] == "near")],
                ["pairs across train and val/test (leakage)", len(findings.leakage)],
                ["pairs with different labels (conflicts)", len(findings.conflicts)],
                ["likely label errors", len(flagged)]], header=("finding", "count"))
    page.note(f"Near duplicates: cosine similarity of the transfer values >= {findings.threshold}.")
    for note in findings.notes:
        page.note(note)

    def pair_rows(pairs):
        return [[thumb(p["row_a"]), thumb(p["row_b"]), f"{p['cosine']:.4f}", p["kind"]] for p in pairs[:top]]

    for heading, pairs in (("Leakage: the same image on both sides of the split", findings.leakage),
                           ("Conflicts: the same image with two labels", findings.conflicts),
                           ("All duplicate pairs", findings.duplicates)):
        page.heading(f"{heading} ({len(pairs)})")
        if pairs:
            page.table(pair_rows(pairs), header=("image", "its duplicate", "cosine", "kind"), escape=False)
    page.heading(f"Likely label errors ({len(flagged)})")
    if flagged:
        page.note("Out-of-fold probabilities of a cross-validated logistic regression; the confident-learning rule "
                  "flags a row when another class is confidently more likely than its label.")
        page.table([[thumb(i["row"]), html.escape(_label_name(findings, i["label"])), html.escape(_label_name(findings, i["suggested"])),
                     f"{i['self_confidence']:.3f}", f"{i['suggested_probability']:.3f}"] for i in flagged[:top]],
                   header=("image", "label", "suggested", "p(label)", "p(suggested)"), escape=False)
    page.heading("Outliers: farthest from every other image")
    page.table([[thumb(o["row"]), f"{o['knn_distance']:.4f}",
                 "" if o["class_knn_distance"] is None else f"{o['class_knn_distance']:.4f}"]
                for o in findings.outliers[: min(top, 12)]],
               header=("image", "k-NN distance", "within its class"), escape=False)
    if similar and findings.neighbours is not None:
        page.heading("Similar images: each sample image, then its nearest neighbours")
        rows = np.random.default_rng(0).choice(len(findings.paths), size=min(similar, len(findings.paths)), replace=False)
        indices, sims = findings.neighbours
        page.table([[thumb(int(row))] + [f"{thumb(int(i), size=64)}<br><small>{s:.3f}</small>"
                                           for i, s in zip(indices[row][:6], sims[row][:6])] for row in sorted(rows)],
                   header=("image", *[f"#{k}" for k in range(1, 7)]), escape=False)


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="report", unit="part", disable=not enabled, leave=False, file=sys.stderr, dynamic_ncols=True)


def _default_out(target: Path, is_run: bool) -> Path:
    return target / "report.html" if is_run else Path("reports") / f"{target.stem}.html"


def _refuse_other_files(target: Path) -> None:
    """A file given where a cache is expected: say what it is when we know (a runs index, a file of a run folder),
    else that it is none of the three things the report takes. Never advice that could cost the user a file."""
    from .runs import is_run_dir

    folder = target.parent
    try:
        with open(target, "rb") as handle:
            start = handle.read(7)
    except OSError as exc:
        raise TransferCacheError(f"cannot read {target}: {exc.strerror or exc}") from None
    if start == b"run_id," and (target.name == "index.csv" or target.name.startswith("index.csv.old-")):
        raise TransferCacheError(
            f"{target} is the runs index, not a cache; give the runs folder, {folder}{os.sep}, to see every run"
        )
    if is_run_dir(folder):
        raise TransferCacheError(
            f"{target} is a file of the run folder {folder}, not a cache; give the folder, {folder}{os.sep}, for the "
            "run's page"
        )
    import h5py

    if not h5py.is_hdf5(target) and target.suffix.lower() != ".h5":
        raise TransferCacheError(
            f"{target} is not a cache (not an HDF5 file), a run folder or a runs folder; pass a cache file (.h5) "
            "written by python -m transfer_cache.extract, a run folder (runs/<run_id>) or the runs folder (runs/)"
        )


def _build(run_or_cache, *, out, sample, seed, tsne, progress, n_jobs=None, umap=None,
           rebuild_index=False) -> tuple[Path, Page, bool]:
    from ._checks import integer, whole_number
    from .runs import is_run_dir, read_index
    from .runs import rebuild_index as rebuild

    target = Path(run_or_cache)
    sample = whole_number(sample, "sample")
    n_jobs = whole_number(n_jobs, "n_jobs", optional=True)
    integer(seed, "seed")
    if umap not in (None, True, False):
        raise TransferCacheError(f"umap must be None (from {UMAP_MIN_POINTS} points on), True or False; got {umap!r}")
    if not target.exists():
        raise TransferCacheError(f"{target} does not exist; pass a run folder (runs/<run_id>), the runs folder (runs/) or a cache file (.h5)")
    is_run = is_run_dir(target)
    is_runs = target.is_dir() and (target / "index.csv").is_file()
    if rebuild_index:
        if not target.is_dir() or is_run:
            raise TransferCacheError(f"--rebuild-index rebuilds a runs folder's index.csv; {target} is not a runs folder, "
                                     "give the folder python -m transfer_cache.fit wrote (runs/)")
        index, listed, kept = rebuild(target)
        print(f"report: rebuilt {index} from {listed} run folder{'s' if listed != 1 else ''}"
              + (f"; the old index is kept as {kept}" if kept else ""), file=sys.stderr)
        is_runs = True
    if target.is_dir() and not is_run and not is_runs:
        raise TransferCacheError(
            f"{target} is a folder but neither a run folder (no config.json and metrics.json) nor a runs folder (no "
            "index.csv); pass runs/<run_id>, runs/ or a cache file (.h5)"
        )
    if target.is_file():
        _refuse_other_files(target)
    if is_runs:
        read_index(target)  # a damaged index is refused here, before any work
    out = Path(out) if out is not None else (target / "index.html" if is_runs else _default_out(target, is_run))
    if out.suffix.lower() not in (".html", ".htm"):
        raise TransferCacheError(f"the report is an HTML page: --out must end in .html; got {out}")
    builder = _runs_page if is_runs else (_run_page if is_run else _cache_page)
    page = builder(target, sample=sample, seed=seed, tsne=tsne, progress=progress, n_jobs=n_jobs, umap=umap)
    _atomic.write_text(out, page.render(), where="give --out a path on another disk")
    return out, page, is_run


def write_report(run_or_cache, *, out=None, sample: int = DEFAULT_SAMPLE, seed: int = 0, tsne: bool = True,
                 n_jobs: int | None = None, progress: bool = False, umap: bool | None = None,
                 rebuild_index: bool = False) -> Path:
    """Write the HTML report of a run folder, a cache file or the runs folder and return its path.

    Default place: ``<run_dir>/report.html`` for a run, ``reports/<cache name>.html`` for a cache. ``sample`` caps the
    points of the PCA, t-SNE and UMAP scatters (seeded by ``seed``); ``tsne=False`` skips t-SNE; ``umap`` None draws
    UMAP from ``UMAP_MIN_POINTS`` points on (True: always, False: never); ``n_jobs`` caps t-SNE's threads (None: all
    cores); ``rebuild_index`` first writes a runs folder's index.csv anew from its run folders.
    """
    return _build(run_or_cache, out=out, sample=sample, seed=seed, tsne=tsne, progress=progress, n_jobs=n_jobs,
                  umap=umap, rebuild_index=rebuild_index)[0]


# --------------------------------------------------------------------------- command line


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.report",
        "Write one self-contained HTML report (opens offline) for a run folder or a cache file.",
        epilog=(
            "examples:\n"
            "  python -m transfer_cache.report runs/20250101-120000-logreg-a1b2c3\n"
            "  python -m transfer_cache.report caches/digits-1a2b3c.efficientnet_lite0.0123abcd4567ef89.h5 "
            "--out digits.html --sample 1000\n"
        ),
    )
    parser.add_argument("target", metavar="RUN_OR_CACHE",
                        help="a run folder written by transfer_cache.fit, the runs folder (all runs on one page), or a cache .h5 file")
    parser.add_argument("--out", metavar="FILE.html", default=None,
                        help="where to write the page (default: RUN/report.html, or reports/<cache name>.html)")
    parser.add_argument("--sample", metavar="N", type=int, default=DEFAULT_SAMPLE,
                        help=f"at most N points in the PCA, t-SNE and UMAP scatters, drawn with --seed (default {DEFAULT_SAMPLE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample, of t-SNE and of UMAP (default 0)")
    parser.add_argument("--no-tsne", dest="tsne", action="store_false",
                        help="skip the t-SNE map (UMAP is chosen by --umap / --no-umap)")
    maps = parser.add_mutually_exclusive_group()
    maps.add_argument("--umap", dest="umap", action="store_const", const=True, default=None,
                      help=f"draw the UMAP map even below {UMAP_MIN_POINTS} points (by default it is left out there, "
                           "with a line on the page saying so: its first run compiles for about 20 s)")
    maps.add_argument("--no-umap", dest="umap", action="store_const", const=False, help="skip the UMAP map")
    parser.add_argument("--rebuild-index", action="store_true",
                        help="with the runs folder: write its index.csv anew from the run folders first (the old "
                             "index is kept beside it as index.csv.old-<time>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--n-jobs", metavar="N", type=int, default=None,
                        help="threads for t-SNE (default: all cores; 1 is often faster on a busy machine)")
    return parser


def _main(args) -> int:
    started = time.perf_counter()
    if args.out is not None:
        if Path(args.out).is_dir():
            raise TransferCacheError(f"--out {args.out} is a folder; give the page's file name, e.g. "
                                     f"{Path(args.out) / 'report.html'}")
        _cli.check_file_target(args.out, "--out")
    out, page, is_run = _build(args.target, out=args.out, sample=args.sample, seed=args.seed, tsne=args.tsne,
                               progress=not args.quiet, n_jobs=args.n_jobs, umap=args.umap,
                               rebuild_index=args.rebuild_index)
    size = out.stat().st_size / 1e6
    kind = "run" if is_run else ("runs" if Path(args.target).is_dir() else "cache")
    print(f"report: wrote {out} ({size:.1f} MB, {page.figures} figures) for {kind} {args.target} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
