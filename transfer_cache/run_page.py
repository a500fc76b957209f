"""The report's page of one run folder: its metrics and parameters, confusion matrices, training curves, the
misclassified test images and the maps of the cache it was fitted on."""

from __future__ import annotations

import json
from pathlib import Path

from . import analysis
from ._errors import TransferCacheError
from .html_page import Page, html_table, kv_table, progress_bar
from .maps_section import Maps, maps_section
from .runs import Run, open_run_cache, read_run


def run_page(run_dir: Path, *, maps: Maps, progress: bool) -> Page:
    """The page of the run folder ``run_dir``; its cache's sections say why they are left out when it is gone."""
    run = read_run(run_dir)
    metrics = run.metrics
    with progress_bar(7, progress) as bar:
        page = Page(
            f"Run report: {run.run_id}",
            f"{run.classifier} on {run.backbone} transfer values, "
            f"{metrics.get('n_train')} training and {metrics.get('n_test')} test images",
        )
        _summary(page, run)
        bar.update()

        page.heading("Confusion matrix")
        page.figure(analysis.confusion_matrix_figure(metrics))
        page.figure(analysis.confusion_matrix_figure(metrics, normalize=True))
        page.figure(analysis.per_class_accuracy_figure(metrics))
        bar.update()

        if run.history:
            page.heading("Training curves")
            page.figure(analysis.training_curves_figure(run.history))
        bar.update()

        try:
            cache = open_run_cache(run)
        except TransferCacheError as exc:
            page.heading("Misclassified images and transfer values")
            page.note(f"Left out: {exc}")
            bar.update(4)
            return page
        with cache:
            if run.predictions is not None:
                page.heading("Misclassified test images")
                page.figure(analysis.misclassified_figure(run))
            bar.update()
            maps_section(page, cache, layer=run.layer, maps=maps, variance=False, tick=bar.update)
    return page


def _summary(page: Page, run: Run) -> None:
    """The metrics, the cross-validation scores, what the run was fitted with, and the per-class report."""
    metrics = run.metrics
    page.heading("Metrics")
    summary = [[metrics.get("accuracy"), metrics.get("balanced_accuracy"), metrics.get("macro_f1"),
                metrics.get("n_train"), metrics.get("n_test"), metrics.get("fit_seconds"),
                metrics.get("predict_seconds")]]
    page.html(html_table(summary, css_class="metrics",
                         header=("accuracy", "balanced accuracy", "macro F1", "train", "test", "fit s", "predict s")))
    if metrics.get("cv_scores"):
        scores = [float(s) for s in metrics["cv_scores"]]
        mean = sum(scores) / len(scores)
        std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
        page.note(f"{len(scores)}-fold cross-validation accuracy {mean:.4f} ± {std:.4f}: "
                  + ", ".join(f"{s:.4f}" for s in scores))
    split = run.split
    page.html(kv_table([
        ("classifier", run.classifier),
        ("parameters", json.dumps(run.params, sort_keys=True)),
        ("split", ", ".join(f"{k} {v}" for k, v in split.items()) if isinstance(split, dict) else split),
        ("layer", run.layer),
        ("caches", "; ".join(f"{c.get('path')} ({c.get('rows')} rows, fingerprint {c.get('fingerprint')})"
                             for c in run.caches)),
        ("created", run.created),
        ("versions", ", ".join(f"{k} {v}" for k, v in run.versions.items())),
        ("run folder", run.run_dir),
    ]))
    per_class = metrics.get("per_class") or {}
    if per_class:
        rows = [[name, *(float(per_class[name].get(k, float("nan"))) for k in ("precision", "recall", "f1")),
                 int(per_class[name].get("support", 0))]
                for name in metrics.get("class_names", per_class) if name in per_class]
        page.html(html_table(rows, header=("class", "precision", "recall", "F1", "support")))
