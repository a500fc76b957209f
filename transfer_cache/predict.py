"""``python -m transfer_cache.predict MODEL IMAGE_OR_FOLDER...`` and ``predict()``: classify raw image files.

MODEL is an export written by ``python -m transfer_cache.export RUN OUT`` (one ``.keras`` file holding its
description, or an export folder). Each image is decoded and resized exactly as the cache's extraction did
(``pipeline.prepare_image`` with the configuration the export remembers), then run through the model in batches. An
image that cannot be read is reported with its reason and does not stop the others.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import _atomic, _cli
from ._checks import check_file_target, whole_number
from ._errors import ImageError, TransferCacheError

__all__ = ["Prediction", "predict", "collect_images", "main"]


@dataclass
class Prediction:
    """One image's result: the best class and its probability, the top-k, all probabilities; or the error."""

    path: str
    label: str | None = None
    probability: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def collect_images(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded recursively to their image files (by extension), sorted."""
    from .sources import IMAGE_EXTENSIONS

    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
            )
        elif path.exists():
            found.append(path)
        else:
            raise TransferCacheError(f"image or folder {path} does not exist; give image files or folders of images")
    return found


def _image_paths(images) -> list[Path]:
    paths = collect_images([images] if isinstance(images, (str, os.PathLike)) else images)
    if not paths:
        raise TransferCacheError("no image files found; give image files or folders holding .png/.jpg/... images")
    return paths


def predict(
    model_path,
    images: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    batch_size: int = 32,
    top: int = 1,
    progress: bool = False,
) -> list[Prediction]:
    """Classify image files (or folders of them) with an exported model; bad images come back with ``error`` set."""
    from tqdm import tqdm

    from .export import ExportedModel, load_exported
    from .pipeline import prepare_image

    whole_number(batch_size, "batch size")
    whole_number(top, "top")
    paths = _image_paths(images)
    model = model_path if isinstance(model_path, ExportedModel) else load_exported(model_path)
    names = model.class_names
    config = model.config
    k = min(top, len(names))
    results = [Prediction(path=str(p)) for p in paths]
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        proba = model.predict_proba(np.stack([pixels for _, pixels in pending]))
        for (i, _), row in zip(pending, proba):
            order = np.argsort(-row, kind="stable")[:k]
            result = results[i]
            result.probabilities = row
            result.top = [(names[j], float(row[j])) for j in order]
            result.label, result.probability = result.top[0]
        pending.clear()

    for i, path in enumerate(tqdm(paths, desc="predicting", unit="img", disable=not progress)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            results[i].error = f"cannot read file: {exc.strerror or exc}"
            continue
        try:
            pending.append((i, prepare_image(data, config=config)))
        except ImageError as exc:
            results[i].error = str(exc)
            continue
        if len(pending) >= batch_size:
            flush()
    flush()
    return results


def write_csv(path: str | os.PathLike, results: Sequence[Prediction], class_names: Sequence[str]) -> Path:
    """path, class, probability, top (name:prob;...), error, then prob_<class> per class."""
    path = Path(path)
    with _atomic.open_replacing(path, newline="", where="give --out a path on another disk") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "class", "probability", "top", "error"] + [f"prob_{name}" for name in class_names])
        for r in results:
            if r.ok:
                writer.writerow(
                    [r.path, r.label, f"{r.probability:.8g}", ";".join(f"{n}:{p:.6g}" for n, p in r.top), ""]
                    + [f"{p:.8g}" for p in r.probabilities]
                )
            else:
                writer.writerow([r.path, "", "", "", r.error] + [""] * len(class_names))
    return path


EPILOG = """examples:
  python -m transfer_cache.predict exports/digits-logreg.keras photos/
  python -m transfer_cache.predict exports/flowers-knn img1.jpg img2.png --top 3 --out predictions.csv

MODEL comes from python -m transfer_cache.export RUN MODEL. Images are prepared exactly as the cache's extraction
did. Unreadable images are reported and skipped. Folder exports contain a joblib pickle: only use ones you trust.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.predict",
        "Classify image files with a model exported from a fit run (backbone + head).",
        EPILOG,
    )
    parser.add_argument("model", metavar="MODEL", help="an exported .keras file or export folder")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders of images")
    parser.add_argument("--out", default=None, help="also write the predictions to this CSV file")
    parser.add_argument("--top", type=int, default=1, help="show the K most probable classes (default 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _main(args) -> int:
    from .export import load_exported, read_description

    begin = time.perf_counter()
    if args.top < 1:
        raise TransferCacheError(f"--top must be a positive integer; got {args.top}")
    whole_number(args.batch_size, "batch size")
    if args.out:
        check_file_target(args.out, "--out")
    read_description(args.model)  # every mistake a user can make is reported before TensorFlow starts
    images = _image_paths(args.images)
    model = load_exported(args.model)
    results = predict(model, images, batch_size=args.batch_size, top=args.top, progress=not args.quiet)
    width = max(len(r.path) for r in results)
    for r in results:
        if r.ok:
            print(f"{r.path:<{width}}  " + "  ".join(f"{name}  {p:.4f}" for name, p in r.top))
        else:
            print(f"skipped {r.path}: {r.error}", file=sys.stderr)
    if args.out:
        write_csv(args.out, results, model.class_names)
    failed = sum(not r.ok for r in results)
    print(
        f"{len(results) - failed} images classified, {failed} skipped, in {time.perf_counter() - begin:.1f} s with "
        f"{args.model}" + (f" -> {args.out}" if args.out else "")
    )
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
