"""``python -m transfer_cache.extract``: push every image through a frozen backbone once and cache the vectors.

``extract()`` is the Python API and this module's command line; both take the options declared once in
``extract_options.ExtractOptions``. The work itself is ``extraction`` (one extraction here, in order) or ``sharded``
(shards on an engine, then merged).
"""

from __future__ import annotations

import sys
import textwrap

from . import _cli, _options
from ._errors import TransferCacheError
from .backbones import get_spec, list_backbones
from .extract_options import (
    ExtractOptions,
    add_extract_arguments,
    feature_config,  # noqa: F401  (extract.feature_config(...) is part of the Python API)
)
from .extraction import ExtractResult, check_run_options, extract_here
from .sharded import ShardedResult, run_sharded, run_sharded_result, run_shards_typed  # noqa: F401  (Python API)
from .shards import check_sharded_run, wants_sharded_run
from .sources import source_help


@_options.takes(ExtractOptions)
def extract(source, **options) -> ExtractResult:
    """Extract (or reuse) the transfer values of every image in ``source`` and return where the cache is.

    ``source`` is a folder, a CSV manifest, an .npz/.npy file, a CIFAR batch folder, ``keras:cifar10`` style names,
    ``sklearn:digits``, or a ``sources.Source``. Every option is declared (with its help) in
    ``extract_options.ExtractOptions``; all are validated before any work starts. ``augment=K`` also stores K seeded
    augmented views (``augment_recipe``) of every training image (split "train", or every image of a source without
    splits: fit keeps each image's views on its side of the split). ``shards=N`` extracts N shard files and merges
    them (``engine="dask"`` runs them on a Dask ``LocalCluster`` of ``workers`` processes, or on the cluster at
    ``scheduler``). ``mixed_precision`` computes in float16 on GPUs (ignored, with a warning, when none is visible);
    several GPUs are used together through a ``tf.distribute.MirroredStrategy``.
    """
    return run_extract(source, _options.build(ExtractOptions, options, function="extract"))


def run_extract(source, opts: ExtractOptions) -> ExtractResult:
    """``extract`` with its options already typed: here, or in shards then merged."""
    from .sources import Source

    check_run_options(opts)
    if not wants_sharded_run(engine=opts.engine, scheduler=opts.scheduler, workers=opts.workers, shards=opts.shards,
                             shard=opts.shard):
        return extract_here(source, opts)
    if isinstance(source, Source):
        raise TransferCacheError(
            "a sharded extraction needs the source as a spec string or path (each shard opens it itself); got a "
            "Source object: pass the folder, manifest or name you opened it from"
        )
    workers = opts.workers or 2
    shards = opts.shards or workers
    check_sharded_run(str(source), shards=shards, engine=opts.engine, workers=workers, retries=2)
    return run_shards_typed(str(source), opts.replace(shard=None, progress=True), shards=shards, engine=opts.engine,
                            scheduler=opts.scheduler, workers=workers, progress=opts.progress).as_extract_result()


# --------------------------------------------------------------------------- command line

EPILOG = f"""examples:
  python -m transfer_cache.extract sklearn:digits
  python -m transfer_cache.extract data/flowers --backbone efficientnet_lite0 --batch-size 64
  python -m transfer_cache.extract data/train --backbone inception_v3 --input-size 150 --layer mixed7 --pooling flatten
  python -m transfer_cache.extract data/cats_dogs --backbone vgg16 --layer fc2 --weights vgg16_weights.h5
  python -m transfer_cache.extract data/big --engine dask --workers 2 --shards 8
  python -m transfer_cache.extract --list-backbones

{textwrap.fill(source_help() + ".", 110)}
The cache goes to --cache-dir (default $TRANSFER_CACHE_DIR or ./caches); running the same command again reuses it.
"""


def build_parser():
    parser = _cli.make_parser(
        "python -m transfer_cache.extract",
        "Push every image of SOURCE through a frozen pretrained backbone once and cache the transfer values in HDF5.",
        EPILOG,
    )
    parser.add_argument("source", nargs="?", metavar="SOURCE", help="images to extract (see below)")
    add_extract_arguments(parser)
    parser.add_argument("--list-backbones", action="store_true", help="list the backbone names and exit")
    parser.add_argument("--list-layers", metavar="BACKBONE", default=None,
                        help="list a backbone's layer names and exit")
    return parser


def _main(args) -> int:
    if args.list_backbones:
        for name in list_backbones():
            spec = get_spec(name)
            print(
                f"{name:22s} input {spec.input_size:3d}  preprocessing {spec.preprocessing:7s} "
                f"weights {spec.weights_source}"
            )
        return 0
    if args.list_layers:
        from .backbones import layer_names

        print("\n".join(
            layer_names(args.list_layers, include_top=get_spec(args.list_layers).top_input_size is not None)
        ))
        return 0
    if not args.source:
        raise TransferCacheError(f"SOURCE is missing: {source_help()}")
    result = run_extract(args.source, _options.from_args(ExtractOptions, args))
    for path, reason in result.failed[:10]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(result.failed) > 10:
        print(f"... and {len(result.failed) - 10} more skipped images (listed in the cache's /failed)", file=sys.stderr)
    print(result.summary())
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
