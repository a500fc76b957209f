"""``python -m transfer_cache.inspect CACHE``: what the cached vectors say about the data itself.

Exact and near duplicates (with train/test leakage and label conflicts called out), likely label errors and
outliers (see ``findings`` for how each is found), written as one CSV per finding plus one HTML page with
thumbnails, so a person can look at the images and fix the data. Nothing is recomputed: the cache holds everything.
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import _atomic, _cli
from ._checks import check_folder, whole_number
from .findings import HOMOGENEOUS_COSINE, NEAR_DUPLICATE_COSINE, Findings, inspect_caches
from .report import failed_images_section, inspection_page


@dataclass
class InspectResult:
    findings: Findings
    files: dict[str, Path]
    seconds: float

    def summary(self) -> str:
        f = self.findings
        exact = sum(1 for p in f.duplicates if p["kind"] == "exact")
        flagged = sum(1 for item in f.label_issues if item["flagged"])
        failed = f" ({len(f.failed)} more failed to decode, listed on the page)" if f.failed else ""
        label_errors = f"{flagged} likely label errors" if f.label_errors_searched else "label errors not searched"
        return (
            f"inspect: {len(f.paths)} images{failed}; "
            f"{exact} exact and {len(f.duplicates) - exact} near duplicate pairs "
            f"({len(f.leakage)} across train/test: leakage, {len(f.conflicts)} with different labels), {label_errors} "
            f"(near duplicates from cosine {f.threshold}); {self.seconds:.1f} s -> {self.files['page']}"
        )


def _failed_section(page, findings: Findings) -> None:
    """The failed images of the inspected caches, naming the cache only when a test cache was given too."""
    two_caches = len(set(findings.origin) | {origin for _, _, origin in findings.failed}) > 1
    rows = [[path, reason] + ([Path(origin).name] if two_caches else []) for path, reason, origin in findings.failed]
    failed_images_section(page, rows, header=("path", "reason") + (("cache",) if two_caches else ()))


def write_findings(findings: Findings, folder: Path) -> dict[str, Path]:
    """duplicates.csv, label_issues.csv and outliers.csv in ``folder`` (rows, paths and class names spelled out).

    ``folder`` is where they are written, as they are: ``inspect`` gives its staging folder, which publishes them
    together with the page.
    """
    tables = {
        "duplicates": (
            ["cosine", "kind", "leakage", "conflict", "row_a", "path_a", "split_a", "label_a", "row_b", "path_b",
             "split_b", "label_b"],
            [[p["cosine"], p["kind"], p["leakage"], p["conflict"], p["row_a"], findings.paths[p["row_a"]], p["split_a"],
              findings.label_name(p["label_a"]), p["row_b"], findings.paths[p["row_b"]], p["split_b"],
              findings.label_name(p["label_b"])] for p in findings.duplicates],
        ),
        "label_issues": (
            ["rank", "flagged", "row", "path", "split", "label", "suggested", "self_confidence",
             "suggested_probability"],
            [[i["rank"], i["flagged"], i["row"], findings.paths[i["row"]], findings.split[i["row"]],
              findings.label_name(i["label"]), findings.label_name(i["suggested"]), i["self_confidence"],
              i["suggested_probability"]] for i in findings.label_issues],
        ),
        "outliers": (
            ["rank", "row", "path", "split", "label", "knn_distance", "class_knn_distance"],
            [[o["rank"], o["row"], findings.paths[o["row"]], findings.split[o["row"]], findings.label_name(o["label"]),
              o["knn_distance"], "" if o["class_knn_distance"] is None else o["class_knn_distance"]]
             for o in findings.outliers],
        ),
    }
    written = {}
    for name, (header, rows) in tables.items():
        path = folder / f"{name}.csv"
        with _atomic.writing(path), open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        written[name] = path
    return written


def inspect(
    cache,
    *,
    test_cache=None,
    out=None,
    layer: str | None = None,
    threshold: float | None = None,
    k: int = 10,
    folds: int = 5,
    seed: int = 0,
    top: int = 24,
    progress: bool = True,
) -> InspectResult:
    """Find duplicates, leakage, conflicts, likely label errors and outliers; write the CSVs and the page into ``out``
    (default ``reports/<cache name>-inspect/``)."""
    started = time.perf_counter()
    top = whole_number(top, "top (items shown per section)")
    cache = Path(cache)
    folder = Path(out) if out is not None else Path("reports") / f"{cache.stem}-inspect"
    findings = inspect_caches(
        cache, test_cache=test_cache, layer=layer, threshold=threshold, k=k, folds=folds, seed=seed, progress=progress
    )
    page = inspection_page(findings, title=f"What the vectors say about {cache.name}", top=top)
    _failed_section(page, findings)
    html = page.render()
    # the three CSVs and the page appear together or not at all: a failed run leaves the previous ones as they were
    with _atomic.publishing_together(folder, where="give --out a folder on another disk") as staging:
        written = write_findings(findings, staging)
        with _atomic.writing(staging / "inspect.html"):
            (staging / "inspect.html").write_text(html, encoding="utf-8")
    files = {name: folder / path.name for name, path in written.items()}
    files["page"] = folder / "inspect.html"
    return InspectResult(findings, files, time.perf_counter() - started)


EPILOG = """examples:
  python -m transfer_cache.inspect caches/digits-8fc028.efficientnet_lite0.f8c0c52c814b0bc9.h5
  python -m transfer_cache.inspect caches/train-*.h5 --test-cache caches/test-*.h5 --threshold 0.98
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.inspect",
        "Find exact and near duplicates (and train/test leakage), likely label errors and outliers in a cache; write "
        "a CSV per finding and an HTML page with thumbnails.",
        EPILOG,
    )
    parser.add_argument("cache", metavar="CACHE", help="a cache file written by transfer_cache.extract")
    parser.add_argument("--test-cache", default=None, metavar="CACHE",
                        help="a second cache of the same configuration whose images are the test set")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where to write (default reports/<cache name>-inspect)")
    parser.add_argument("--layer", default=None, help="the feature layer, when the cache holds several")
    parser.add_argument("--threshold", type=float, default=None,
                        help="cosine similarity from which two images are near duplicates "
                        f"(default: {NEAR_DUPLICATE_COSINE}, "
                        f"or {HOMOGENEOUS_COSINE} for data whose images are all alike, such as 8x8 digits)")
    parser.add_argument("-k", type=int, default=10,
                        help="neighbours per image for near duplicates and outliers (default 10)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds for label errors (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    parser.add_argument("--top", type=int, default=24, help="items shown per section of the page (default 24)")
    return parser


def _main(args) -> int:
    if args.out is not None:
        check_folder(args.out, "output folder", "--out")
    result = inspect(args.cache, test_cache=args.test_cache, out=args.out, layer=args.layer, threshold=args.threshold,
                     k=args.k, folds=args.folds, seed=args.seed, top=args.top)
    print(result.summary())
    for note in result.findings.notes:  # e.g. label errors left out for classes too small for the folds
        print(f"note: {note}")
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
