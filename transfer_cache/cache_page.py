"""The report's page of one cache: its configuration, classes, maps of its vectors and what they say about the data."""

from __future__ import annotations

from pathlib import Path

from . import analysis
from ._errors import TransferCacheError
from .cache import open_cache
from .findings_page import failed_images_section, findings_sections
from .html_page import Page, kv_table, progress_bar
from .maps_section import Maps, maps_section


def _cache_pairs(cache) -> list:
    config, info = cache.feature_config, cache.info
    dims = cache.feature_dims
    return [
        ("file", cache.path),
        ("rows", len(cache)),
        ("classes", f"{len(cache.class_names)}: {', '.join(map(str, cache.class_names[:30]))}"
                    + (" ..." if len(cache.class_names) > 30 else "")),
        ("failed images", len(cache.failed)),
        ("source", info.source),
        ("backbone", f"{config.backbone} (weights {config.weights})"),
        ("layers", ", ".join(cache.layers)),
        ("pooling / feature size", f"{config.pooling} / {dims[0] if len(dims) == 1 else dims}"),
        ("input", f"{config.input_size} px, resize {config.resize} (crop {config.crop_fraction}, "
                  f"{config.interpolation}), preprocessing {config.preprocessing}"),
        ("dtype", config.dtype),
        ("fingerprint", cache.fingerprint),
        ("created", info.created),
        ("versions", ", ".join(f"{k} {v}" for k, v in info.versions.items()) if isinstance(info.versions, dict)
         else info.versions),
    ]


def _findings_section(page: Page, path: Path) -> None:
    from .findings import inspect_caches

    page.heading("What the vectors say about the data")
    page.note(f"Duplicates, likely label errors and outliers; python -m transfer_cache.inspect {path.name} writes them "
              "as CSV files too.")
    try:
        findings = inspect_caches(path, check_vectors=False)  # cache_page scanned this file's vectors on opening it
    except TransferCacheError as exc:
        page.note(f"Left out: {exc}")
        return
    findings_sections(page, findings, top=12)


def cache_page(path: Path, *, maps: Maps, progress: bool) -> Page:
    """The page of the cache file at ``path``, its vectors scanned for NaN and infinity on opening."""
    with open_cache(path, check_vectors=True) as cache, progress_bar(5, progress) as bar:  # noqa: SIM117
        cache.require_rows("report on")
        page = Page(f"Cache report: {path.name}", f"{len(cache)} images through {cache.config.get('backbone')} "
                                                    f"({', '.join(cache.layers)}), fingerprint {cache.fingerprint}")
        page.heading("Configuration")
        page.html(kv_table(_cache_pairs(cache)))
        page.heading("Classes")
        page.figure(analysis.class_counts_figure(cache))
        if len(set(cache.labels[cache.labels >= 0].tolist())) >= 2:
            page.note("How alike the classes look to the backbone: cosine similarity of each class's mean transfer "
                      "vector, after removing the overall mean. High off-diagonal values predict confusions.")
            page.figure(analysis.class_similarity_figure(cache))
        bar.update()
        maps_section(page, cache, layer=None, maps=maps, variance=True, tick=bar.update)
        _findings_section(page, path)
        failed_images_section(page, cache.failed)
        bar.update()
    return page
