"""Plotly figures of caches and run folders: what the HTML report, the CLI and the notebooks all draw.

Every function returns a ``plotly.graph_objects.Figure`` and reads only files (a cache, a run folder,
``runs/index.csv``), so a notebook, ``python -m transfer_cache.report`` and a test see the same figure.
Large caches are sampled with a seeded, stated sample size ("sampled N of M" in the title); feature rows
are read block by block, so memory stays flat however big the cache is. No pandas: run folders are read
through ``runs``.

The figures of a cache's vectors are drawn here; those of run folders are in ``run_figures`` and ``gallery``, and
re-exported here, so ``analysis`` stays the one place to find every figure.
"""

from __future__ import annotations

import contextlib
import html
import os
from typing import Iterator

import numpy as np
import plotly.graph_objects as go
from plotly import colors as _colors
from plotly.subplots import make_subplots

from ._checks import whole_number
from ._errors import TransferCacheError
from .cache import Cache, block_rows, open_cache

# run figures, the gallery and the run folder's readers live in their own modules; re-exported here, where notebooks
# and users have always found them
from .gallery import misclassified_figure, thumbnail_png  # noqa: F401
from .reread import ImageFinder  # noqa: F401
from .run_figures import (  # noqa: F401
    confusion_matrix_figure,
    leaderboard_figure,
    matrix_height,
    per_class_accuracy_figure,
    training_curves_figure,
)
from .runs import (  # noqa: F401
    as_run,
    is_run_dir,
    load_run,
    misclassified,
    open_run_cache,
    read_index,
    read_json,
    read_predictions,
    run_cache_path,
)

UNLABELLED = "unlabelled"

# --------------------------------------------------------------------------- cache helpers


@contextlib.contextmanager
def _opened(cache) -> Iterator[Cache]:
    """Use an open Cache as given, or open (and close) a path."""
    if isinstance(cache, Cache):
        yield cache
        return
    if not isinstance(cache, (str, os.PathLike)):
        raise TransferCacheError(f"cache must be an open Cache or a path to a cache file; got {type(cache).__name__}")
    with open_cache(cache) as opened:
        yield opened


def sample_rows(n: int, sample: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices: all rows when ``n <= sample``, else ``sample`` rows drawn without replacement with
    ``seed``."""
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def read_rows(cache: Cache, rows: np.ndarray, *, layer: str | None = None) -> np.ndarray:
    """The feature vectors of ``rows`` (sorted) as float32 (len(rows), D), read block by block to keep memory flat."""
    features = cache.read_rows(rows, layer=layer)
    return features.reshape(len(features), -1)


def class_name(class_names: list[str], label: int) -> str:
    if label < 0:
        return UNLABELLED
    return class_names[label] if label < len(class_names) else str(label)


def _palette(k: int) -> list[str]:
    if k <= 10:
        return list(_colors.qualitative.Plotly)
    if k <= 24:
        return list(_colors.qualitative.Dark24)
    return list(_colors.qualitative.Alphabet)


def _sample_note(shown: int, total: int) -> str:
    return f"sampled {shown} of {total} rows" if shown < total else f"all {total} rows"


def _scatter_traces(coords: np.ndarray, rows: np.ndarray, cache: Cache) -> list:
    """One trace per class (legend = class names), hover = path, class and cache row."""
    labels = cache.labels[rows]
    paths = np.asarray(cache.paths, dtype=object)[rows]
    palette = _palette(len(cache.class_names))
    traces = []
    for label in sorted(set(labels.tolist()), key=lambda v: (v < 0, v)):
        mask = labels == label
        name = class_name(cache.class_names, label)
        color = "#9e9e9e" if label < 0 else palette[label % len(palette)]
        common = dict(
            name=html.escape(name),
            mode="markers",
            text=[html.escape(p) for p in paths[mask]],
            customdata=rows[mask].astype(np.int32),
            hovertemplate="%{text}<br>" + html.escape(name) + "<br>row %{customdata}<extra></extra>",
        )
        pts = coords[mask].astype(np.float32)
        if coords.shape[1] == 3:
            traces.append(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], marker=dict(size=3, color=color),
                                       **common))
        else:
            traces.append(go.Scattergl(x=pts[:, 0], y=pts[:, 1], marker=dict(size=5, color=color, opacity=0.8),
                                       **common))
    return traces


def _refuse_identical(features: np.ndarray, what: str, cache: Cache) -> None:
    """A map of points that are all one point is no map, and t-SNE's PCA start divides by their spread (0): its NaN
    coordinates crashed the process (a segmentation fault in scikit-learn's Barnes-Hut tree), so it is refused."""
    if len(features) and not np.any(features != features[0]):
        raise TransferCacheError(
            f"{what} needs vectors that differ; the {len(features)} drawn from cache {cache.path} are all the same "
            "(does the backbone give every image one output?)"
        )


def _describe(cache: Cache, layer: str) -> str:
    config = cache.config
    return (f"{config.get('backbone', '?')} {layer} ({config.get('pooling', '?')} pooling, "
            f"{config.get('feature_dim', '?')}-d)")


# --------------------------------------------------------------------------- cache figures


def pca_figure(cache, *, layer: str | None = None, dims: int = 2, sample: int = 5000, seed: int = 0) -> go.Figure:
    """Scatter of the first 2 or 3 principal components of the transfer values, coloured by class."""
    if dims not in (2, 3) or isinstance(dims, bool):
        raise TransferCacheError(f"dims must be 2 or 3; got {dims!r}")
    sample = whole_number(sample, "sample")
    from sklearn.decomposition import PCA

    with _opened(cache) as cache:
        layer = cache.layer_name(layer)
        n = len(cache)
        if n < dims:
            raise TransferCacheError(f"a {dims}-d PCA needs at least {dims} rows; cache {cache.path} has {n}")
        rows = sample_rows(n, sample, seed)
        features = read_rows(cache, rows, layer=layer)
        if features.shape[1] < dims:
            raise TransferCacheError(f"a {dims}-d PCA needs vectors of at least {dims} values; "
                                     f"layer '{layer}' has {features.shape[1]}")
        pca = PCA(n_components=dims, random_state=seed)
        with np.errstate(divide="ignore", invalid="ignore"):  # identical vectors: no variance to share out
            coords = pca.fit_transform(features)
        ratio = np.nan_to_num(pca.explained_variance_ratio_)
        fig = go.Figure(_scatter_traces(coords, rows, cache))
        titles = [f"PC{k + 1} ({100 * ratio[k]:.1f}%)" for k in range(dims)]
        title = f"PCA of {_describe(cache, layer)}: {_sample_note(len(rows), n)}"
    if dims == 3:
        fig.update_layout(scene=dict(xaxis_title=titles[0], yaxis_title=titles[1], zaxis_title=titles[2]))
    else:
        fig.update_layout(xaxis_title=titles[0], yaxis_title=titles[1])
    fig.update_layout(title=title, legend_title_text="class", height=600)
    return fig


def explained_variance_figure(
    cache, n_components: int = 50, *, layer: str | None = None, sample: int = 5000, seed: int = 0
) -> go.Figure:
    """Variance explained by each principal component (bars) and cumulatively (line): how many dimensions matter."""
    n_components = whole_number(n_components, "n_components")
    sample = whole_number(sample, "sample")
    from sklearn.decomposition import PCA

    with _opened(cache) as cache:
        layer = cache.layer_name(layer)
        n = len(cache)
        if n < 2:
            raise TransferCacheError(f"explained variance needs at least 2 rows; cache {cache.path} has {n}")
        rows = sample_rows(n, sample, seed)
        features = read_rows(cache, rows, layer=layer)
        k = min(n_components, features.shape[0], features.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):  # identical vectors: no variance to share out
            ratio = np.nan_to_num(PCA(n_components=k, random_state=seed).fit(features).explained_variance_ratio_)
        title = (f"Explained variance of the first {k} principal components of {_describe(cache, layer)}: "
                 f"{_sample_note(len(rows), n)}")
    component = np.arange(1, k + 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=component, y=(100 * ratio).astype(np.float32), name="per component (left axis)",
                         hovertemplate="PC%{x}: %{y:.2f}%<extra></extra>"), secondary_y=False)
    fig.add_trace(go.Scatter(x=component, y=(100 * np.cumsum(ratio)).astype(np.float32), name="cumulative (right axis)",
                             mode="lines+markers", hovertemplate="PC1..PC%{x}: %{y:.1f}%<extra></extra>"),
                  secondary_y=True)
    fig.update_yaxes(title_text="per component (%)", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="cumulative (%)", range=[0, 100], showgrid=False, secondary_y=True)
    fig.update_layout(title=title, xaxis_title="principal component", height=450)
    return fig


def tsne_figure(
    cache,
    *,
    layer: str | None = None,
    sample: int = 2000,
    pca_dims: int = 50,
    perplexity: float = 30,
    seed: int = 0,
    n_jobs: int | None = None,
) -> go.Figure:
    """t-SNE map of the transfer values (PCA to ``pca_dims`` first, as in seed 003), seeded, coloured by class.

    ``n_jobs`` caps scikit-learn's OpenMP threads (None: all cores). On a machine already busy with other work,
    ``n_jobs=1`` is often several times faster, because spinning OpenMP threads fight for the cores.
    """
    sample = whole_number(sample, "sample")
    pca_dims = whole_number(pca_dims, "pca_dims")
    if n_jobs is not None:
        n_jobs = whole_number(n_jobs, "n_jobs")
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or not perplexity > 0:
        raise TransferCacheError(f"perplexity must be a positive number; got {perplexity!r}")
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    with _opened(cache) as cache:
        layer = cache.layer_name(layer)
        n = len(cache)
        rows = sample_rows(n, sample, seed)
        if perplexity >= len(rows):
            raise TransferCacheError(
                f"perplexity must be less than the number of points ({len(rows)}); got {perplexity}: "
                f"pass a smaller perplexity, e.g. {max(1, (len(rows) - 1) // 3)}"
            )
        features = read_rows(cache, rows, layer=layer)
        _refuse_identical(features, "t-SNE", cache)
        dim = features.shape[1]
        reduced_to = min(pca_dims, features.shape[0], dim)
        if reduced_to < dim:
            features = PCA(n_components=reduced_to, random_state=seed).fit_transform(features)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=n_jobs, user_api="openmp"):
            coords = TSNE(n_components=2, perplexity=float(perplexity), init="pca", learning_rate="auto",
                          random_state=seed).fit_transform(features.astype(np.float32))
        fig = go.Figure(_scatter_traces(coords, rows, cache))
        step = f"PCA to {reduced_to} dims, " if reduced_to < dim else ""
        title = (f"t-SNE of {_describe(cache, layer)} ({step}perplexity {perplexity:g}, seed {seed}): "
                 f"{_sample_note(len(rows), n)}")
    fig.update_layout(title=title, legend_title_text="class", xaxis_title="t-SNE 1", yaxis_title="t-SNE 2", height=600)
    return fig


def umap_available() -> bool:
    """UMAP is an optional extra (pip install 'transfer_cache[umap]': umap-learn and numba)."""
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def _import_umap():
    """``import umap`` without TensorFlow: umap-learn's ``__init__`` imports TensorFlow whenever it is installed, for
    ParametricUMAP, which is never used here; that costs seconds and prints TensorFlow's start-up log lines. The
    import is blocked for the duration (umap-learn catches the ImportError), unless TensorFlow is loaded already.
    In this process, ``umap.ParametricUMAP`` is then umap-learn's placeholder that asks for TensorFlow."""
    import sys
    import warnings

    if "umap" in sys.modules:
        return sys.modules["umap"]
    block = "tensorflow" not in sys.modules
    if block:
        sys.modules["tensorflow"] = None  # makes ``import tensorflow`` raise ImportError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)  # "Tensorflow not installed; ParametricUMAP ..."
            import umap
    finally:
        if block and sys.modules.get("tensorflow", False) is None:
            del sys.modules["tensorflow"]
    return umap


def umap_figure(
    cache, *, layer: str | None = None, sample: int = 2000, n_neighbors: int = 15, pca_dims: int = 50, seed: int = 0
) -> go.Figure:
    """UMAP map of the transfer values (cosine metric, after PCA to ``pca_dims``), seeded, coloured by class."""
    sample = whole_number(sample, "sample")
    n_neighbors = whole_number(n_neighbors, "n_neighbors", at_least=2)
    pca_dims = whole_number(pca_dims, "pca_dims")
    if not umap_available():
        raise TransferCacheError("UMAP needs the umap-learn package: "
                                 "pip install 'transfer_cache[umap]' (or umap-learn)")
    import warnings

    from sklearn.decomposition import PCA

    umap = _import_umap()

    with _opened(cache) as cache:
        layer = cache.layer_name(layer)
        n = len(cache)
        rows = sample_rows(n, sample, seed)
        if len(rows) <= n_neighbors:
            raise TransferCacheError(f"UMAP with n_neighbors={n_neighbors} needs more than {n_neighbors} points; "
                                     f"got {len(rows)}")
        features = read_rows(cache, rows, layer=layer)
        _refuse_identical(features, "UMAP", cache)
        reduced_to = min(pca_dims, features.shape[0], features.shape[1])
        if reduced_to < features.shape[1]:
            features = PCA(n_components=reduced_to, random_state=seed).fit_transform(features)
        # n_jobs=1: a seeded UMAP runs on one thread anyway (umap-learn warns when asked for more)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            coords = umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=seed,
                               n_jobs=1).fit_transform(features)
        fig = go.Figure(_scatter_traces(coords, rows, cache))
        title = (f"UMAP of {_describe(cache, layer)} ({n_neighbors} neighbours, cosine, seed {seed}): "
                 f"{_sample_note(len(rows), n)}")
        notes = sorted({str(w.message).split("\n")[0] for w in said if issubclass(w.category, UserWarning)})
        if notes:  # umap-learn's remarks go on the figure, not the terminal
            title += "<br><sub>umap-learn: " + html.escape("; ".join(notes)) + "</sub>"
    fig.update_layout(title=title, legend_title_text="class", xaxis_title="UMAP 1", yaxis_title="UMAP 2", height=600)
    return fig


def class_counts_figure(cache) -> go.Figure:
    """Images per class, stacked by the source's split: class balance at a glance."""
    with _opened(cache) as cache:
        labels = cache.labels
        split = np.asarray(cache.split, dtype=object)
        names = [class_name(cache.class_names, k) for k in range(len(cache.class_names))]
        keys = list(range(len(names))) + ([-1] if (labels < 0).any() else [])
        splits = [s for s in ("train", "val", "test", "") if (split == s).any()]
        traces = []
        for s in splits:
            counts = [int(((labels == k) & (split == s)).sum()) for k in keys]
            traces.append(go.Bar(x=[html.escape(class_name(cache.class_names, k)) for k in keys], y=counts,
                                 name=s or "no split",
                                 hovertemplate="%{x}: %{y} images<extra>" + (s or "no split") + "</extra>"))
        title = (f"Images per class: {len(cache)} rows, {len(names)} classes"
                 + (f", {len(cache.failed)} failed" if cache.failed else ""))
    fig = go.Figure(traces)
    fig.update_layout(title=title, barmode="stack", xaxis_title="class", yaxis_title="images", xaxis_type="category",
                      height=420)
    return fig


def class_means(cache, *, layer: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-class mean vectors (K, D), rows per class (K,), overall mean (D,)) over every labelled row, read in
    blocks."""
    with _opened(cache) as cache:
        dataset = cache.features_for(cache.layer_name(layer))
        n = dataset.shape[0]
        dim = int(np.prod(dataset.shape[1:]))
        k = len(cache.class_names)
        sums = np.zeros((k, dim), dtype=np.float64)
        counts = np.zeros(k, dtype=np.int64)
        block = block_rows(dataset)
        for start in range(0, n, block):
            stop = min(n, start + block)
            labels = cache.labels[start:stop]
            keep = (labels >= 0) & (labels < k)
            if keep.any():
                chunk = np.asarray(dataset[start:stop], dtype=np.float64).reshape(stop - start, dim)[keep]
                np.add.at(sums, labels[keep], chunk)
                counts += np.bincount(labels[keep], minlength=k)
    means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    overall = sums.sum(axis=0) / max(1, counts.sum())
    return means, counts, overall


def class_similarity_figure(cache, *, layer: str | None = None) -> go.Figure:
    """Cosine similarity of the class mean vectors after removing the overall mean: which classes the backbone confuses.

    Raw transfer values are mostly non-negative (ReLU), so uncentred class means all look alike; centring shows
    the structure. Classes without labelled rows are left out.
    """
    with _opened(cache) as cache:
        means, counts, overall = class_means(cache, layer=layer)
        present = np.flatnonzero(counts > 0)
        names = [html.escape(class_name(cache.class_names, int(k))) for k in present]
        total = int(counts.sum())
    if len(present) < 2:
        raise TransferCacheError(f"class similarity needs labelled rows of at least 2 classes; "
                                 f"the cache has {len(present)}")
    centred = means[present] - overall
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)
    similarity = np.clip(unit @ unit.T, -1.0, 1.0)
    k = len(present)
    fig = go.Figure(go.Heatmap(
        z=similarity.astype(np.float32), x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
        texttemplate="%{z:.2f}" if k <= 30 else "",
        hovertemplate="%{y} vs %{x}: cosine %{z:.3f}<extra></extra>", colorbar=dict(title="cosine"),
    ))
    size = matrix_height(k)
    fig.update_layout(title=f"Similarity of class mean vectors (centred, cosine; {total} labelled rows)", height=size,
                      width=size + 120, xaxis=dict(type="category", constrain="domain"),
                      yaxis=dict(type="category", autorange="reversed", scaleanchor="x"))
    return fig
