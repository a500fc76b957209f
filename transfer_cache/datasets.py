"""``python -m transfer_cache.datasets NAME``: fetch a seed article's dataset and lay it out as that article reads it.

Each seed workflow (README, "Reproducing five transfer-learning tutorials") starts from a dataset on disk. This module
downloads it with the standard library only, or takes an archive fetched elsewhere (``--from``), and writes the
layout our sources read:

============== =================================================== ============================================
name           what is written under DEST (default ``data/``)      where it comes from
============== =================================================== ============================================
fashion_mnist  ``fashion_mnist/{train,test}/<class>/NNNNN.png``    the four IDX files Keras downloads (grayscale)
cifar10        ``cifar-10-batches-py/`` (python batches)           cs.toronto.edu, sha256 checked
flowers        ``flower_photos/<class>/*.jpg``                     the TensorFlow flowers tarball
dogs_vs_cats   ``dogscats/{train,valid}/{cats,dogs}/*.jpg``        Kaggle (account needed): ``--from train.zip``
vehicles       ``VehicleDataset/train/{qingqi,rickshaw,tanga}/``   github.com/MMFa666/VehicleDataset
============== =================================================== ============================================

Offline, a download fails at once with a message saying the command needs the network (or ``--from``). Every
layout is built in a hidden temporary folder and renamed into place, so an interrupted fetch leaves nothing
half-written; a complete layout already present is left alone.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import _atomic, _cli
from ._checks import one_of
from ._errors import TransferCacheError
from ._hashing import file_sha256

_WHERE = "give --dest a folder on another disk"

__all__ = ["DATASETS", "Dataset", "FetchResult", "fetch", "main", "read_idx"]

FASHION_CLASSES = (
    "tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)
FASHION_BASE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"  # as keras.datasets.cifar10 checks
FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
FLOWERS_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
VEHICLES_URLS = (
    "https://github.com/MMFa666/VehicleDataset/archive/refs/heads/master.zip",
    "https://github.com/MMFa666/VehicleDataset/archive/refs/heads/main.zip",
)
VEHICLES_CLASSES = ("qingqi", "rickshaw", "tanga")
DOGSCATS_VALID_PER_CLASS = 1000  # seed 001: 23000 training and 2000 validation images

DOGS_VS_CATS_STEPS = ("dogs_vs_cats cannot be downloaded without a Kaggle account "
                      """(the competition's rules must be accepted).
  1. Sign in at https://www.kaggle.com/c/dogs-vs-cats and accept the competition rules.
  2. Download the data: the web page's "Download All", or `kaggle competitions download -c dogs-vs-cats`
     (the kaggle CLI with an API token in ~/.kaggle/kaggle.json).
  3. Lay it out as seed 001 reads it (dogscats/{train,valid}/{cats,dogs}, 1000 + 1000 images in valid, seeded):
       python -m transfer_cache.datasets dogs_vs_cats --from dogs-vs-cats.zip   (or the train.zip inside it)""")

VEHICLES_LAYOUT = (
    "seed 004 expects VehicleDataset/train/{qingqi,rickshaw,tanga}/*.jpg (git clone "
    "https://github.com/MMFa666/VehicleDataset.git on a connected machine, "
    "then pass the folder or its .zip with --from)"
)


@dataclass(frozen=True)
class Dataset:
    """One seed dataset: the folder it becomes under DEST, and how to build it from the network or an archive."""

    name: str
    folder: str
    seed: str
    licence: str
    build: Callable[..., int]


# --------------------------------------------------------------------------- downloads and archives


def _download(url: str, target: Path, *, progress: bool, sha256: str | None = None) -> Path:
    """Fetch ``url`` into ``target`` (kept for the next run); fail at once, with a plain sentence, when offline."""
    if target.exists() and (sha256 is None or file_sha256(target) == sha256):
        return target
    from tqdm import tqdm

    # kept only when whole and verified; a disk that cannot take it is named as such, not as a network failure
    with _atomic.replacing(target, where=_WHERE) as partial:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with _atomic.writing(partial), open(partial, "wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress, leave=False
                ) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if _atomic.disk_errno(exc) is not None and getattr(exc, "filename", None) == str(partial):
                raise
            reason = getattr(exc, "reason", None) or exc
            raise TransferCacheError(
                f"could not download {url}: {reason}; "
                f"this command needs the network: run it on a connected machine, or "
                f"download the file elsewhere and pass it with --from"
            ) from None
        if sha256 is not None and file_sha256(partial) != sha256:
            raise TransferCacheError(f"{url} downloaded with a wrong sha256 (expected {sha256}); run the command again")
    return target




def _extract_tar(archive: Path, into: Path) -> None:
    """Unpack a tarball with the 'data' filter: no absolute paths, no links or files outside ``into``."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TransferCacheError(f"{archive} is not a readable tar archive ({exc}); download it again") from None


def _extract_zip(archive: Path | zipfile.ZipFile, into: Path) -> None:
    """Unpack a zip, refusing members that would land outside ``into``."""
    try:
        handle = archive if isinstance(archive, zipfile.ZipFile) else zipfile.ZipFile(archive)
        root = into.resolve()
        for member in handle.infolist():
            destination = (into / member.filename).resolve()
            if root != destination and root not in destination.parents:
                raise TransferCacheError(f"{member.filename!r} in the zip would be written outside {into}; refusing it")
        handle.extractall(into)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TransferCacheError(f"{archive} is not a readable zip archive ({exc}); download it again") from None


@contextlib.contextmanager
def _Staging(final: Path) -> Iterator[Path]:
    """A hidden folder beside the final one; renamed into place only when the layout is complete (and removed, with a
    one-line error for a disk that cannot take it, when it is not)."""
    with _atomic.replacing(final, folder=True, where=_WHERE) as staging:
        staging.mkdir()
        yield staging


def _find_folder(top: Path, check: Callable[[Path], bool]) -> Path | None:
    """The shallowest folder under ``top`` (``top`` included) that passes ``check``."""
    for folder in [top] + sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: (len(p.parts), str(p))):
        if check(folder):
            return folder
    return None


def _given(path: str | os.PathLike | None) -> Path | None:
    if path is None:
        return None
    given = Path(path).expanduser()
    if not given.exists():
        raise TransferCacheError(f"--from {given} does not exist; give the downloaded archive (or folder)")
    return given


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- fashion-mnist


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (the MNIST format) as a uint8 array: (N,) labels or (N, 28, 28) images."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise TransferCacheError(f"{path} is not a readable gzip file ({exc}); download it again") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise TransferCacheError(f"{path} is not an IDX file of unsigned bytes; expected Fashion-MNIST's .gz files")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise TransferCacheError(f"{path} is truncated: {len(data) - offset} bytes of {expected}; download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _fashion_mnist(final: Path, *, source: Path | None, downloads: Path, progress: bool) -> int:
    from PIL import Image
    from tqdm import tqdm

    files: dict[str, Path] = {}
    for split, names in FASHION_FILES.items():
        for name in names:
            if source is not None:
                if not (source / name).is_file():
                    raise TransferCacheError(
                        f"--from {source} has no {name}; give the folder holding the four Fashion-MNIST .gz files "
                        f"({', '.join(n for pair in FASHION_FILES.values() for n in pair)})"
                    )
                files[name] = source / name
            else:
                files[name] = _download(FASHION_BASE + name, downloads / name, progress=progress)
    written = 0
    with _Staging(final) as staging:
        for split, (images_name, labels_name) in FASHION_FILES.items():
            images, labels = read_idx(files[images_name]), read_idx(files[labels_name])
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or labels.max(initial=0) > 9:
                raise TransferCacheError(f"{images_name} and {labels_name} do not match "
                                         f"(shapes {images.shape}, {labels.shape})")
            for name in FASHION_CLASSES:
                (staging / split / name).mkdir(parents=True)
            for i in tqdm(range(len(images)), desc=f"fashion_mnist {split}", unit="img", disable=not progress,
                          leave=False):
                Image.fromarray(images[i], mode="L").save(staging / split / FASHION_CLASSES[labels[i]] / f"{i:05d}.png")
                written += 1
    return written


# --------------------------------------------------------------------------- tarballs: cifar10, flowers


def _cifar10(final: Path, *, source: Path | None, downloads: Path, progress: bool) -> int:
    archive = source or _download(CIFAR10_URL, downloads / "cifar-10-python.tar.gz", progress=progress,
                                  sha256=CIFAR10_SHA256)
    with tempfile.TemporaryDirectory(dir=final.parent) as scratch:
        _extract_tar(archive, Path(scratch))
        found = _find_folder(Path(scratch), lambda p: (p / "batches.meta").is_file() and (p / "test_batch").is_file())
        if found is None:
            raise TransferCacheError(f"{archive} holds no CIFAR-10 python batches "
                                     f"(batches.meta, data_batch_1.., test_batch)")
        with _Staging(final) as staging:
            for item in found.iterdir():
                shutil.move(str(item), staging / item.name)
    return _count_files(final)


def _flowers(final: Path, *, source: Path | None, downloads: Path, progress: bool) -> int:
    archive = source or _download(FLOWERS_URL, downloads / "flower_photos.tgz", progress=progress)
    with tempfile.TemporaryDirectory(dir=final.parent) as scratch:
        _extract_tar(archive, Path(scratch))
        found = _find_folder(Path(scratch), lambda p: all((p / c).is_dir() for c in FLOWERS_CLASSES))
        if found is None:
            raise TransferCacheError(f"{archive} holds no flower_photos folder with {', '.join(FLOWERS_CLASSES)}")
        with _Staging(final) as staging:
            for item in found.iterdir():
                shutil.move(str(item), staging / item.name)
    return _count_files(final)


# --------------------------------------------------------------------------- dogs vs cats (Kaggle)


def _kaggle_train_zip(archive: Path) -> zipfile.ZipFile:
    """Kaggle's train.zip, possibly inside the competition's dogs-vs-cats.zip."""
    try:
        outer = zipfile.ZipFile(archive)
        names = outer.namelist()
        inner = [n for n in names if n.rsplit("/", 1)[-1] == "train.zip"]
        if inner and not any(_dogcat(n) for n in names):
            import io

            return zipfile.ZipFile(io.BytesIO(outer.read(inner[0])))
        return outer
    except zipfile.BadZipFile as exc:
        raise TransferCacheError(f"{archive} is not a readable zip archive ({exc}); download it again") from None


def _dogcat(name: str) -> str | None:
    """'cats' or 'dogs' for Kaggle's train/cat.123.jpg names, else None."""
    base = name.rsplit("/", 1)[-1].lower()
    if base.endswith(".jpg") and base.startswith(("cat.", "dog.")):
        return base[:3] + "s"
    return None


def _dogs_vs_cats(final: Path, *, source: Path | None, downloads: Path, progress: bool) -> int:
    if source is None:
        print(DOGS_VS_CATS_STEPS)
        return -1
    from tqdm import tqdm

    handle = _kaggle_train_zip(source)
    members = {"cats": [], "dogs": []}
    for info in handle.infolist():
        kind = _dogcat(info.filename)
        if kind and not info.is_dir():
            members[kind].append(info)
    if not members["cats"] or not members["dogs"]:
        raise TransferCacheError(f"{source} holds no cat.N.jpg / dog.N.jpg images; "
                                 f"give Kaggle's dogs-vs-cats train.zip")
    written = 0
    with _Staging(final) as staging:
        for kind, infos in members.items():
            infos.sort(key=lambda info: info.filename)
            random.Random(0).shuffle(infos)
            n_valid = min(DOGSCATS_VALID_PER_CLASS, len(infos) // 2)
            for j, info in enumerate(tqdm(infos, desc=f"dogscats {kind}", unit="img", disable=not progress,
                                          leave=False)):
                split = "valid" if j < n_valid else "train"
                folder = staging / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                with handle.open(info) as src, open(folder / info.filename.rsplit("/", 1)[-1], "wb") as out:
                    shutil.copyfileobj(src, out)
                written += 1
    return written


# --------------------------------------------------------------------------- vehicles (seed 004)


def _vehicles_folder(path: Path) -> bool:
    return all((path / "train" / c).is_dir() for c in VEHICLES_CLASSES)


def _vehicles(final: Path, *, source: Path | None, downloads: Path, progress: bool) -> int:
    with tempfile.TemporaryDirectory(dir=final.parent) as scratch:
        if source is not None and source.is_dir():
            top = source
        else:
            archive = source
            if archive is None:
                errors = []
                for url in VEHICLES_URLS:  # the default branch's name is not recorded in the article
                    try:
                        archive = _download(url, downloads / ("VehicleDataset-" + url.rsplit("/", 1)[-1]),
                                            progress=progress)
                        break
                    except TransferCacheError as exc:
                        errors.append(str(exc))
                if archive is None:
                    raise TransferCacheError(errors[0] + "; " + VEHICLES_LAYOUT)
            top = Path(scratch)
            _extract_zip(archive, top)
        found = _find_folder(top, _vehicles_folder)
        if found is None:
            raise TransferCacheError(f"{source or 'the VehicleDataset download'} does not have the seed's layout: "
                                     f"{VEHICLES_LAYOUT}")
        with _Staging(final) as staging:
            shutil.copytree(found / "train", staging / "train")
            if (found / "test").is_dir():
                shutil.copytree(found / "test", staging / "test")
    return _count_files(final)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("fashion_mnist", "fashion_mnist", "000", "MIT (Zalando SE)", _fashion_mnist),
        Dataset("dogs_vs_cats", "dogscats", "001", "Kaggle competition rules (Asirra images; research use)",
                _dogs_vs_cats),
        Dataset("flowers", "flower_photos", "002", "CC-BY 2.0 (per-photo credits in LICENSE.txt)", _flowers),
        Dataset("cifar10", "cifar-10-batches-py", "003", "no licence stated (Krizhevsky 2009; cite the tech report)",
                _cifar10),
        Dataset("vehicles", "VehicleDataset", "004", "none stated in the repository", _vehicles),
    )
}


@dataclass
class FetchResult:
    name: str
    path: Path
    files: int  # files written; 0 = already present; -1 = manual steps printed, nothing fetched
    seconds: float


def fetch(
    name: str, *, dest: str | os.PathLike = "data", source: str | os.PathLike | None = None, progress: bool = True
) -> FetchResult:
    """Build dataset ``name`` under ``dest`` from the network (or from ``source``, an archive fetched elsewhere)."""
    dataset = DATASETS[one_of(name, DATASETS, "dataset")]
    dest = Path(dest).expanduser()
    final = dest / dataset.folder
    start = time.perf_counter()
    if final.is_dir() and any(final.iterdir()):
        return FetchResult(name, final, 0, time.perf_counter() - start)
    if final.exists() and not final.is_dir():
        raise TransferCacheError(f"{final} exists and is not a folder; move it away and run the command again")
    if final.is_dir():
        final.rmdir()
    given = _given(source)
    dest.mkdir(parents=True, exist_ok=True)
    files = dataset.build(final, source=given, downloads=dest / ".downloads", progress=progress)
    return FetchResult(name, final, files, time.perf_counter() - start)


EPILOG = """examples:
  python -m transfer_cache.datasets flowers                     # -> data/flower_photos/<class>/*.jpg
  python -m transfer_cache.datasets fashion_mnist --dest data   # -> data/fashion_mnist/{train,test}/<class>/*.png
  python -m transfer_cache.datasets cifar10 --from ~/Downloads/cifar-10-python.tar.gz
  python -m transfer_cache.datasets dogs_vs_cats --from ~/Downloads/dogs-vs-cats.zip

datasets: fashion_mnist (seed 000), dogs_vs_cats (001, needs a Kaggle account), flowers (002), cifar10 (003),
vehicles (004). Downloads need the network; --from takes the archive (or folder) fetched on another machine.
Sources, licences and layouts: data/README.md.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.datasets",
        "Fetch a seed article's dataset and lay it out as the article reads it.",
        EPILOG,
    )
    parser.add_argument("name", metavar="NAME", help=", ".join(DATASETS))
    parser.add_argument("--dest", default="data", help="where the dataset folder goes (default ./data)")
    parser.add_argument("--from", dest="source", default=None, metavar="PATH",
                        help="an archive (or folder) downloaded elsewhere")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _main(args) -> int:
    result = fetch(args.name, dest=args.dest, source=args.source, progress=not args.quiet)
    if result.files < 0:
        print(f"nothing fetched: {result.name} needs the manual steps above, then --from the downloaded archive")
        return 1
    if result.files == 0:
        print(f"{result.name} is already in {result.path}; nothing to do (delete the folder to fetch it again)")
        return 0
    print(f"{result.name}: {result.files} files in {result.seconds:.1f} s -> {result.path}")
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
