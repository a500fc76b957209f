"""The maps of a cache's vectors on a page (PCA, t-SNE, UMAP), drawn or left out with a line saying why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import analysis
from ._errors import TransferCacheError
from .html_page import Page

# the fewest points each map is drawn for by default: below them the map is not worth its cost (t-SNE of a handful of
# points is noise; UMAP's first call compiles its numba code, about 20 s, to show what t-SNE already shows)
TSNE_MIN_POINTS = 10
UMAP_MIN_POINTS = 500


@dataclass(frozen=True)
class Maps:
    """How a page draws its maps: the report's --sample, --seed, --no-tsne, --umap/--no-umap and --n-jobs."""

    sample: int
    seed: int = 0
    tsne: bool = True
    umap: bool | None = None  # None: from umap_min_points on; True: always; False: never
    n_jobs: int | None = None
    tsne_min_points: int = TSNE_MIN_POINTS
    umap_min_points: int = UMAP_MIN_POINTS


def maps_section(page: Page, cache, *, layer, maps: Maps, variance: bool, tick: Callable[[], object]) -> None:
    """PCA (and the explained variance when ``variance``), then t-SNE and UMAP as ``maps`` says."""
    n = len(cache)
    if n < 3:
        page.note(f"PCA and t-SNE need at least 3 rows; this cache has {n}.")
        return
    sample, seed = maps.sample, maps.seed
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
    _tsne(page, cache, layer=layer, maps=maps, points=points)
    _umap(page, cache, layer=layer, maps=maps, points=points)
    tick()


def _tsne(page: Page, cache, *, layer, maps: Maps, points: int) -> None:
    if not maps.tsne:
        page.note("t-SNE skipped (--no-tsne).")
    elif points < maps.tsne_min_points:
        page.note(f"t-SNE left out: {points} points, fewer than {maps.tsne_min_points}; PCA above shows them all.")
    else:
        perplexity = float(min(30.0, max(2.0, (points - 1) // 3)))
        page.heading("Transfer values: t-SNE")
        page.note(f"t-SNE after PCA to at most 50 dimensions (perplexity {perplexity:g}, seed {maps.seed}): "
                  "neighbourhoods, not distances, are meaningful.")
        try:
            page.figure(analysis.tsne_figure(cache, layer=layer, sample=maps.sample, perplexity=perplexity,
                                             seed=maps.seed, n_jobs=maps.n_jobs))
        except TransferCacheError as exc:  # every vector the same: no map to draw
            page.note(f"Left out: {exc}")


def _umap(page: Page, cache, *, layer, maps: Maps, points: int) -> None:
    if maps.umap is False:
        page.note("UMAP skipped (--no-umap).")
    elif not analysis.umap_available():
        page.note("UMAP left out: pip install 'transfer_cache[umap]' adds it beside t-SNE.")
    elif points <= 15:
        page.note(f"UMAP left out: {points} points; its 15 neighbours need at least 16.")
    elif maps.umap is None and points < maps.umap_min_points:
        page.note(f"UMAP left out: {points} points, fewer than {maps.umap_min_points}, where it shows what t-SNE "
                  "shows and its first run costs about 20 s of compiling; --umap draws it anyway.")
    else:
        page.heading("Transfer values: UMAP")
        try:
            page.figure(analysis.umap_figure(cache, layer=layer, sample=maps.sample, seed=maps.seed))
        except TransferCacheError as exc:
            page.note(f"Left out: {exc}")
