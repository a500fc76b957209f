"""The gallery of a run's misclassified test images: thumbnails re-read through each cache's source, most confident
mistakes first, with their true and predicted class."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._checks import whole_number
from ._errors import ImageError
from .cache import Cache
from .reread import ImageFinder
from .runs import misclassified, open_run_cache, run_of


def thumbnail_png(image: np.ndarray, *, size: int = 96) -> str:
    """A uint8 (H, W, 3) image as a ``data:image/png;base64`` URI, scaled so its long side is ``size`` (pixelated
    when upscaled)."""
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    scale = size / max(pil.size)
    new_size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
    pil = pil.resize(new_size, Image.NEAREST if scale >= 1 else Image.LANCZOS)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _tiles(run, items: list[dict], thumb_size: int) -> tuple[list, list]:
    """(item, thumbnail) of each item whose image could be re-read, and (path, reason) of the others."""
    tiles, unreadable = [], []
    finders: dict[int, ImageFinder] = {}
    opened: list[Cache] = []
    try:
        for item in items:
            index = int(item["cache"])
            if index not in finders:
                cache = open_run_cache(run, index)
                opened.append(cache)
                finders[index] = ImageFinder(cache)
            try:
                image = finders[index].load(item["path"])
            except ImageError as exc:
                unreadable.append((item["path"], str(exc)))
                continue
            tiles.append((item, thumbnail_png(image, size=thumb_size)))
    finally:
        for cache in opened:
            cache.close()
    return tiles, unreadable


def misclassified_figure(run_dir, *, limit: int = 24, columns: int = 6, thumb_size: int = 96) -> go.Figure:
    """Thumbnails of misclassified test images (most confident mistakes first) with true and predicted class."""
    columns = whole_number(columns, "columns")
    thumb_size = whole_number(thumb_size, "thumb_size")
    run = run_of(run_dir)
    wrong_total = len(run.mistakes())
    tiles, unreadable = _tiles(run, misclassified(run, limit=limit), thumb_size)
    title = (f"Misclassified test images: {len(tiles)} shown of {wrong_total} wrong (of {run.n_predicted}), "
             "most confident first")
    if unreadable:
        title += f"; {len(unreadable)} could not be re-read"
    if not tiles:
        fig = go.Figure()
        message = ("No misclassified test images." if wrong_total == 0
                   else "None of the misclassified images could be re-read.")
        fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=16))
        fig.update_layout(title=title, height=200, xaxis_visible=False, yaxis_visible=False)
        return fig
    cols = min(columns, len(tiles))
    nrows = math.ceil(len(tiles) / cols)
    subtitles = []
    for item, _ in tiles:
        name = "/".join(Path(item["path"]).parts[-2:])
        name = name if len(name) <= 24 else "…" + name[-23:]
        subtitles.append(f"{html.escape(name)}<br>true <b>{html.escape(str(item['true_name']))}</b>"
                         f"<br>pred <b>{html.escape(str(item['pred_name']))}</b> ({item['confidence']:.2f})")
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=subtitles, horizontal_spacing=0.02,
                        vertical_spacing=min(0.3 / nrows, 0.12) if nrows > 1 else 0.0)
    for k, (item, uri) in enumerate(tiles):
        fig.add_trace(go.Image(source=uri, name=html.escape(item["path"]),
                               hovertemplate=html.escape(item["path"]) + "<extra></extra>"),
                      row=k // cols + 1, col=k % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(title=title, height=int(140 + nrows * (thumb_size + 130)), margin=dict(t=150), showlegend=False)
    return fig
