"""What the vectors say about the data, as page sections: duplicates and leakage, likely label errors, outliers and
similar images, each with thumbnails; and the images extraction could not read. The report's cache page and
``python -m transfer_cache.inspect`` show them."""

from __future__ import annotations

import html

import numpy as np

from ._errors import ImageError, TransferCacheError
from .cache import open_cache
from .gallery import thumbnail_png
from .html_page import Page
from .reread import ImageFinder


def failed_images_section(page: Page, rows, *, header=("path", "reason"), shown: int = 1000) -> None:
    """The images extraction could not decode: they are in no figure or finding, so a page says which they are."""
    page.heading(f"Failed images ({len(rows)})")
    if not rows:
        page.note("Every image was read.")
        return
    if len(rows) > shown:
        page.note(f"first {shown} of {len(rows)} shown")
    page.table(list(rows)[:shown], header=header)


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
                              f"{self.findings.label_name(int(self.findings.labels[row]))})")
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
        page.table([[thumb(i["row"]), html.escape(findings.label_name(i["label"])),
                     html.escape(findings.label_name(i["suggested"])), f"{i['self_confidence']:.3f}",
                     f"{i['suggested_probability']:.3f}"] for i in flagged[:top]],
                   header=("image", "label", "suggested", "p(label)", "p(suggested)"), escape=False)
    page.heading("Outliers: farthest from every other image")
    page.table([[thumb(o["row"]), f"{o['knn_distance']:.4f}",
                 "" if o["class_knn_distance"] is None else f"{o['class_knn_distance']:.4f}"]
                for o in findings.outliers[: min(top, 12)]],
               header=("image", "k-NN distance", "within its class"), escape=False)
    if similar and findings.neighbours is not None:
        page.heading("Similar images: each sample image, then its nearest neighbours")
        shown = min(similar, len(findings.paths))
        rows = np.random.default_rng(0).choice(len(findings.paths), size=shown, replace=False)
        indices, sims = findings.neighbours
        page.table([[thumb(int(row))] + [f"{thumb(int(i), size=64)}<br><small>{s:.3f}</small>"
                                           for i, s in zip(indices[row][:6], sims[row][:6])] for row in sorted(rows)],
                   header=("image", *[f"#{k}" for k in range(1, 7)]), escape=False)

