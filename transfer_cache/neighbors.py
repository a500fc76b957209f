"""``python -m transfer_cache.neighbors CACHE IMAGE_OR_ROW``: the cached images most similar to an image.

The query is a row of the cache (its number, or its path) or an image file, which is pushed through the cache's own
backbone, preprocessing, resize policy and runtime, so it lands where extraction would have put it. Similarity is the
cosine of the transfer values.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from . import _cli
from ._checks import whole_number
from ._errors import ImageError, TransferCacheError
from .cache import open_cache
from .cache_rows import CacheRows
from .feature_config import FeatureConfig
from .findings import EXACT_ROWS, nearest


def image_vector(config: FeatureConfig, image_path: str | Path, *, layer: str) -> np.ndarray:
    """An image file's transfer values, computed exactly as extraction computed the cache's (same runtime)."""
    from .pipeline import prepare_image
    from .runtimes import get_runtime

    runtime = get_runtime(config.runtime)
    if not runtime.available():
        raise TransferCacheError(
            f"this cache was made with the {runtime.name} runtime, which is not installed here: {runtime.description}"
        )
    try:
        data = Path(image_path).read_bytes()
    except OSError as exc:
        raise TransferCacheError(f"cannot read {image_path}: {exc.strerror or exc}") from None
    try:
        pixels = prepare_image(data, config=config)
    except ImageError as exc:  # the decoder's reason alone would not say which file
        raise TransferCacheError(f"cannot read the image {image_path}: {exc}") from None
    outputs = runtime.forward(config, batch_size=1)(pixels[None])
    vector = outputs[list(config.layers).index(layer)][0]
    return np.asarray(vector.astype(config.dtype), dtype=np.float32).reshape(-1)  # stored precision, as cached


def neighbors(cache, query, *, k: int = 12, layer: str | None = None, exact_rows: int = EXACT_ROWS,
              progress: bool = True) -> list[dict]:
    """The ``k`` cached images nearest to ``query`` (a row number, a cached path, or an image file), best first.

    From ``exact_rows`` rows on, the candidates come from the cache's kept neighbour index (built on first use) and
    only they are read and scored exactly: a query costs milliseconds, not a pass over every vector."""
    whole_number(k, "k")
    with open_cache(cache) as opened:
        opened.require_rows()
        exact = len(opened) < max(exact_rows, 3)  # the approximate path wants a row and two others at least
        if exact:  # the approximate path checks the vectors once, building its index
            opened.check_vectors()
        chosen = opened.layer_name(layer)
        if exact:
            X = opened.read_rows(np.arange(len(opened)), layer=chosen).reshape(len(opened), -1)
            vector, _ = _query_vector(opened, query, chosen, lambda row: X[row])
            indices, sims = nearest(X, min(k, len(X)), queries=vector[None])
            indices, sims = indices[0], sims[0]
        else:
            table = CacheRows()
            table.add(opened, path=opened.path, layer=chosen, test=False)
            vector, row = _query_vector(opened, query, chosen, lambda row: table.read([row])[0])
            indices, sims = _from_index(table, vector, k=k, progress=progress, row=row)
        paths, labels, names = opened.values_at("paths", indices), opened.labels, opened.class_names
    return [
        {"rank": rank, "row": int(row), "path": path, "similarity": float(sim),
         "label": names[labels[row]] if 0 <= labels[row] < len(names) else "unlabelled"}
        for rank, (row, path, sim) in enumerate(zip(indices, paths, sims), 1)
    ]


def _query_vector(opened, query, layer: str, row_vector) -> tuple[np.ndarray, int | None]:
    """The query's vector and row: a cached row's (``row_vector(row)``), by number or path, else an image file's
    (no row)."""
    text = str(query)
    row = _row_number(text)
    if row is not None and row < len(opened):
        return row_vector(row), row
    if text in opened.paths:
        row = opened.paths.index(text)
        return row_vector(row), row
    if Path(text).is_file():
        return image_vector(opened.feature_config, text, layer=layer), None
    raise TransferCacheError(_not_a_query(text, opened.path, len(opened), row))


def _from_index(table, vector: np.ndarray, *, k: int, progress: bool, row: int | None = None):
    """The ``k`` rows nearest to ``vector`` among candidates from the kept index (twice as many, at least k + 16),
    re-scored with their exact cosines: the index ranks by 8-bit codes, the list shows the cached vectors'. A query
    ``row`` is always a candidate: the index can miss a row that has a near-identical twin (see knn_index)."""
    from . import knn_index

    index = knn_index.kept_index(table, beside=table.first_path, key=table.index_key(), progress=progress)
    found, _ = index.search(vector[None], min(len(table), max(2 * k, k + 16)))
    found = found[0][found[0] >= 0]
    if row is not None and row not in found:
        found = np.append(found, row)
    candidates = knn_index.unit(table.read(found))
    sims = candidates @ knn_index.unit(vector[None])[0]
    order = np.argsort(-sims, kind="stable")[:k]
    return found[order], sims[order]


def _row_number(text: str) -> int | None:
    """A row number written in ASCII digits, else None (str.isdigit also accepts '²' and '٣', which are no rows)."""
    return int(text) if text.isascii() and text.isdigit() else None


def _not_a_query(text: str, cache_path, rows: int, row: int | None) -> str:
    """Why ``text`` names no query: a row past the end, a number in other digits, a folder, or a missing file."""
    choices = "give a row number, a path as cached, or an image file"
    if row is not None:
        return f"row {row} is not in {cache_path}: it has rows 0..{rows - 1}; {choices}"
    bare = text.lstrip("+-")
    if bare and (bare.isdigit() or bare.isnumeric()):  # '²', '٣', '-1', '½'
        return f"{text!r} is not a row number: the rows of {cache_path} are 0..{rows - 1}, written in the digits 0-9"
    if Path(text).is_dir():
        return f"{text} is a folder, not an image file nor a path in {cache_path}; {choices}"
    return f"{text} does not exist: no such image file, and no row of {cache_path} has that path; {choices}"


EPILOG = """examples:
  python -m transfer_cache.neighbors caches/digits-*.h5 17
  python -m transfer_cache.neighbors caches/flowers-*.h5 ~/photos/rose.jpg -k 20
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.neighbors",
        "List the cached images most similar to a row of the cache or to an image file.",
        EPILOG,
    )
    parser.add_argument("cache", metavar="CACHE", help="a cache file written by transfer_cache.extract")
    parser.add_argument("query", metavar="IMAGE_OR_ROW", help="a row number, a path as cached, or an image file")
    parser.add_argument("-k", type=int, default=12, help="how many neighbours (default 12)")
    parser.add_argument("--layer", default=None, help="the feature layer, when the cache holds several")
    return parser


def _main(args) -> int:
    started = time.perf_counter()
    found = neighbors(args.cache, args.query, k=args.k, layer=args.layer)
    width = max(len("path"), *(len(item["path"]) for item in found))
    print(f"{'rank':>4}  {'cosine':>6}  {'row':<7}  {'path':<{width}}  label")
    for item in found:
        print(f"{item['rank']:4d}  {item['similarity']:.4f}  {item['row']:<7d}  {item['path']:<{width}}  "
              f"{item['label']}")
    print(f"neighbors: {len(found)} nearest to {args.query} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
