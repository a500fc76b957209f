"""Figures of run folders: the confusion matrix, per-class accuracy, training curves, and the leaderboard of
``runs/index.csv``. Each takes what ``runs`` reads (a run folder, a loaded run, or the file's content itself)."""

from __future__ import annotations

import html
import math
import os

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._checks import one_of, whole_number
from ._errors import TransferCacheError
from .runs import history_of, index_path, metrics_of, read_index


def matrix_height(k: int) -> int:
    """The height of a k x k heatmap (the class similarity of a cache, a run's confusion matrix)."""
    return int(min(1600, max(450, 160 + 40 * k)))


def _as_metrics(metrics) -> dict:
    data = metrics_of(metrics)
    for key in ("confusion_matrix", "class_names"):
        if key not in data:
            raise TransferCacheError(f"metrics lack '{key}'; expected the metrics.json written by transfer_cache.fit")
    cm = np.asarray(data["confusion_matrix"], dtype=np.int64)
    k = len(data["class_names"])
    if cm.shape != (k, k):
        raise TransferCacheError(
            f"confusion_matrix has shape {cm.shape} but there are {k} class names; metrics.json is damaged, fit again"
        )
    return data


def _as_history(history) -> dict:
    data = history_of(history)
    if not isinstance(data, dict) or not data or not all(isinstance(v, list) for v in data.values()):
        raise TransferCacheError(
            "history must be Keras History.history: a non-empty dict of metric name -> list of per-epoch values"
        )
    return data


def confusion_matrix_figure(metrics, *, normalize: bool = False) -> go.Figure:
    """Heatmap of metrics.json's confusion matrix (rows = true class, columns = predicted), counts in the cells.

    ``normalize=True`` divides each row by its support, so the diagonal is per-class recall; the counts stay in the
    hover.
    """
    metrics = _as_metrics(metrics)
    names = [html.escape(str(name)) for name in metrics["class_names"]]
    counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    k = len(names)
    if normalize:
        support = counts.sum(axis=1, keepdims=True)
        z = np.divide(counts, support, out=np.zeros(counts.shape, dtype=np.float64), where=support > 0)
        text_template = "%{z:.2f}" if k <= 30 else ""
        hover = "true %{y}<br>predicted %{x}<br>%{z:.1%} of the row (%{customdata} images)<extra></extra>"
        title = "Confusion matrix, normalised by true class (diagonal = recall)"
        colorbar = dict(title="fraction", tickformat=".0%")
    else:
        z = counts
        text_template = "%{z}" if k <= 30 else ""
        hover = "true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"
        accuracy = float(np.trace(counts)) / max(1, counts.sum())
        title = f"Confusion matrix ({int(counts.sum())} test images, accuracy {accuracy:.1%})"
        colorbar = dict(title="images")
    fig = go.Figure(
        go.Heatmap(z=z, x=names, y=names, customdata=counts, colorscale="Blues", texttemplate=text_template,
                   hovertemplate=hover, colorbar=colorbar, zmin=0)
    )
    size = matrix_height(k)
    fig.update_layout(title=title, height=size, width=size + 120,
                      xaxis=dict(title="predicted class", type="category", side="bottom", constrain="domain"),
                      yaxis=dict(title="true class", type="category", autorange="reversed", scaleanchor="x"))
    return fig


def per_class_accuracy_figure(metrics) -> go.Figure:
    """Per-class accuracy (recall: correct / images of that class) as bars, overall accuracy as a dashed line."""
    metrics = _as_metrics(metrics)
    names = [html.escape(str(name)) for name in metrics["class_names"]]
    counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    support = counts.sum(axis=1)
    recall = np.divide(np.diag(counts), support, out=np.zeros(len(names)), where=support > 0)
    per_class = metrics.get("per_class") or {}
    detail = []
    for name in metrics["class_names"]:
        entry = per_class.get(name, {})
        detail.append([float(entry.get("precision", math.nan)), float(entry.get("f1", math.nan))])
    accuracy = float(np.trace(counts)) / max(1, int(counts.sum()))
    fig = go.Figure(
        go.Bar(x=names, y=recall, customdata=np.column_stack([support, np.asarray(detail).reshape(-1, 2)]),
               text=[f"{v:.0%}" for v in recall], textposition="outside",
               hovertemplate="%{x}<br>accuracy (recall) %{y:.1%} of %{customdata[0]:d} images"
                             "<br>precision %{customdata[1]:.2f}, F1 %{customdata[2]:.2f}<extra></extra>",
               marker_color=np.where(recall >= accuracy, "#4c78a8", "#e45756").tolist())
    )
    fig.add_hline(y=accuracy, line_dash="dash", line_color="#333", annotation_text=f"overall {accuracy:.1%}",
                  annotation_position="top left")
    fig.update_layout(title="Per-class accuracy (recall) on the test images; red = below the overall accuracy",
                      xaxis=dict(title="class", type="category"),
                      yaxis=dict(title="accuracy", tickformat=".0%", range=[0, 1.1]),
                      height=450)
    return fig


def training_curves_figure(history) -> go.Figure:
    """Accuracy and loss per epoch, training and validation (from history.json): spot over- and under-fitting."""
    history = _as_history(history)
    loss_keys = [key for key in history if "loss" in key]
    other_keys = [key for key in history if "loss" not in key and key not in ("lr", "learning_rate")]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"), horizontal_spacing=0.1)
    for col, keys in ((1, other_keys), (2, loss_keys)):
        for key in sorted(keys, key=lambda name: (name.startswith("val_"), name)):
            values = np.asarray(history[key], dtype=np.float64)
            validation = key.startswith("val_")
            fig.add_trace(
                go.Scatter(x=np.arange(1, len(values) + 1), y=values, mode="lines+markers", name=key,
                           line=dict(dash="dash" if validation else "solid",
                                     color="#e45756" if validation else "#4c78a8"),
                           hovertemplate=f"{key}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>"),
                row=1, col=col,
            )
    epochs = max(len(v) for v in history.values())
    fig.update_xaxes(title_text="epoch", dtick=1 if epochs <= 20 else None)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=2)
    fig.update_layout(title=f"Training curves ({epochs} epochs; dashed = validation)", height=420)
    return fig


def leaderboard_figure(
    runs_dir: str | os.PathLike = "runs", *, sort_by: str = "accuracy", limit: int = 30
) -> go.Figure:
    """Runs from runs/index.csv side by side (accuracy, balanced accuracy, macro-F1), best first."""
    metrics = ("accuracy", "balanced_accuracy", "macro_f1")
    one_of(sort_by, metrics, "sort_by")
    limit = whole_number(limit, "limit")
    rows = read_index(runs_dir)
    if not rows:
        raise TransferCacheError(
            f"the runs index {index_path(runs_dir)} lists no runs yet; run python -m transfer_cache.fit first"
        )
    ranked = sorted(rows, key=lambda r: (-np.nan_to_num(r[sort_by], nan=-1.0), r["run_id"]))[:limit]
    shown = ranked[::-1]  # horizontal bars draw bottom-up: the best run ends on top
    labels = [f"{r['classifier']} · {r['backbone']} · {r['run_id'][-6:]}" for r in shown]
    hover_data = [[r["run_id"], r["cache"], r["n_train"], r["n_test"], r["fit_seconds"]] for r in shown]
    fig = go.Figure()
    for metric in metrics:
        values = [r[metric] for r in shown]
        fig.add_trace(go.Bar(
            y=labels, x=values, orientation="h", name=metric.replace("_", " "), customdata=hover_data,
            text=[f"{v:.3f}" for v in values], textposition="auto",
            hovertemplate=("%{customdata[0]}<br>" + metric + " %{x:.4f}<br>cache %{customdata[1]}"
                           "<br>train %{customdata[2]}, test %{customdata[3]}, "
                           "fit %{customdata[4]:.1f} s<extra></extra>"),
        ))
    note = f"top {len(ranked)} of {len(rows)} runs" if len(ranked) < len(rows) else f"{len(rows)} runs"
    fig.update_layout(title=f"Leaderboard ({note}, sorted by {sort_by.replace('_', ' ')})", barmode="group",
                      xaxis=dict(title="score", range=[0, 1.05]), yaxis=dict(type="category"),
                      height=int(min(2400, 200 + 70 * len(shown))), legend_traceorder="normal")
    return fig
