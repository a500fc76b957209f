"""One self-contained HTML page for a run folder, the runs folder or a cache: opens offline, mails as one file.

plotly.js is embedded once (the first figure carries it, the others reuse it), thumbnails are inline PNG data
URIs, and large caches are sampled (seeded, stated in each title), so a report of a 2000-point cache stays a few
megabytes, most of it plotly.js itself. ``python -m transfer_cache.report RUN_OR_CACHE`` writes it.

This module chooses the page and writes it; each page is its own module (``cache_page``, ``run_page``,
``runs_page``), built on ``html_page`` with the sections of ``maps_section`` and ``findings_page``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import _atomic, _cli
from ._checks import check_file_target
from ._errors import TransferCacheError
from .cache_page import cache_page
from .findings_page import failed_images_section, findings_sections, inspection_page  # noqa: F401  (public here)
from .html_page import Page
from .maps_section import TSNE_MIN_POINTS, UMAP_MIN_POINTS, Maps
from .run_page import run_page
from .runs import is_run_dir, is_runs_dir, looks_like_index, read_index
from .runs import rebuild_index as rebuild
from .runs_page import runs_page

DEFAULT_SAMPLE = 2000


# --------------------------------------------------------------------------- static export


def save_png(fig, path: str | os.PathLike, *, width: int | None = None, height: int | None = None,
             scale: float = 1.0) -> Path:
    """Write a figure as a PNG (needs the optional kaleido package, which drives a headless browser)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise TransferCacheError("static image export needs the kaleido package: pip install kaleido") from None
    path = Path(path)
    with _atomic.replacing(path, keep_suffix=True) as temporary:
        fig.write_image(str(temporary), format="png", width=width, height=height, scale=scale)
    return path



# --------------------------------------------------------------------------- choosing the page


def _default_out(target: Path, is_run: bool) -> Path:
    return target / "report.html" if is_run else Path("reports") / f"{target.stem}.html"


def _refuse_other_files(target: Path) -> None:
    """A file given where a cache is expected: say what it is when we know (a runs index, a file of a run folder),
    else that it is none of the three things the report takes. Never advice that could cost the user a file."""
    folder = target.parent
    try:
        with open(target, "rb") as handle:
            start = handle.read(7)
    except OSError as exc:
        raise TransferCacheError(f"cannot read {target}: {exc.strerror or exc}") from None
    if looks_like_index(target, start):
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


def _maps(*, sample, seed, tsne, n_jobs, umap) -> Maps:
    """The report's map settings, checked before any work."""
    from ._checks import integer, whole_number

    sample = whole_number(sample, "sample")
    n_jobs = whole_number(n_jobs, "n_jobs", optional=True)
    integer(seed, "seed")
    if umap not in (None, True, False):
        raise TransferCacheError(f"umap must be None (from {UMAP_MIN_POINTS} points on), True or False; got {umap!r}")
    return Maps(sample=sample, seed=seed, tsne=tsne, umap=umap, n_jobs=n_jobs, tsne_min_points=TSNE_MIN_POINTS,
                umap_min_points=UMAP_MIN_POINTS)


def _rebuild_index(target: Path, is_run: bool) -> None:
    if not target.is_dir() or is_run:
        raise TransferCacheError(f"--rebuild-index rebuilds a runs folder's index.csv; {target} is not a runs folder, "
                                 "give the folder python -m transfer_cache.fit wrote (runs/)")
    index, listed, kept = rebuild(target)
    print(f"report: rebuilt {index} from {listed} run folder{'s' if listed != 1 else ''}"
          + (f"; the old index is kept as {kept}" if kept else ""), file=sys.stderr)


def _build(run_or_cache, *, out, sample, seed, tsne, progress, n_jobs=None, umap=None,
           rebuild_index=False) -> tuple[Path, Page, bool]:
    target = Path(run_or_cache)
    maps = _maps(sample=sample, seed=seed, tsne=tsne, n_jobs=n_jobs, umap=umap)
    if not target.exists():
        raise TransferCacheError(f"{target} does not exist; pass a run folder (runs/<run_id>), the runs folder (runs/) "
                                 "or a cache file (.h5)")
    is_run = is_run_dir(target)
    is_runs = is_runs_dir(target)
    if rebuild_index:
        _rebuild_index(target, is_run)
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
    builder = runs_page if is_runs else (run_page if is_run else cache_page)
    page = builder(target, maps=maps, progress=progress)
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
                        help="a run folder written by transfer_cache.fit, the runs folder (all runs on one page), "
                             "or a cache .h5 file")
    parser.add_argument("--out", metavar="FILE.html", default=None,
                        help="where to write the page (default: RUN/report.html, or reports/<cache name>.html)")
    parser.add_argument("--sample", metavar="N", type=int, default=DEFAULT_SAMPLE,
                        help=f"at most N points in the PCA, t-SNE and UMAP scatters, drawn with --seed "
                             f"(default {DEFAULT_SAMPLE})")
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
        check_file_target(args.out, "--out")
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
