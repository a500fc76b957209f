"""Every extract option, declared once, and how the options that change the vectors resolve to a ``FeatureConfig``.

``ExtractOptions`` is the one declaration: ``extract()``'s keyword signature, the command line's flags and their
``--help``, the forwarding to each shard of a sharded run and the typed object every extraction step reads all come
from its fields. The fields of group ``"vectors"`` resolve (defaults from the backbone's spec, validation) into the
``FeatureConfig`` whose fingerprint names the cache. Adding an option is one field here (plus a ``FeatureConfig``
field, filled in ``resolve``, when it changes the vectors).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import _options
from ._checks import one_of, whole_number
from ._errors import TransferCacheError
from ._imaging import DECODINGS, validate_resize
from ._options import option
from .backbones import DEFAULT_BACKBONE, POOLINGS, default_layers, get_spec, resolve_weights, validate_choices
from .feature_config import DTYPES, FULL_DECODING, FeatureConfig

#: How image files are decoded unless the user says otherwise (or an existing cache decoded them in full).
DEFAULT_DECODING = "reduced"

GROUP_TITLES = {
    "vectors": "what the vectors are (part of the cache's fingerprint)",
    "run": "how this run works",
    "engine": "cutting the work into shards",
}


@dataclass(frozen=True)
class ExtractOptions:
    """``extract()``'s keyword arguments. Groups: ``"vectors"`` (changes the vectors: resolved into the fingerprint),
    ``"run"`` (how this run works: batch size, cache folder, locking ...) and ``"engine"`` (whether and where the
    work is cut into shards)."""

    # what the vectors are
    backbone: str = option(DEFAULT_BACKBONE, f"pretrained network (default {DEFAULT_BACKBONE}; --list-backbones)",
                           group="vectors", metavar="NAME")
    layer: Any = option(None, "feature layer name(s), comma-separated (default: the last feature map)",
                        group="vectors", metavar="NAME[,NAME]")
    pooling: str = option("avg", "how a feature map becomes a vector (default avg)", group="vectors", choices=POOLINGS)
    input_size: int | None = option(None, "image side in pixels (default: the backbone's)", group="vectors", type=int,
                                    metavar="N")
    weights: str = option("imagenet", "imagenet, none (random, tests only) or a weights file path", group="vectors",
                          metavar="imagenet|none|PATH")
    resize: str | None = option(None, "squash, center-crop or pad (default: the backbone's)", group="vectors",
                                metavar="POLICY")
    interpolation: str | None = option(None, "resize filter: bilinear, bicubic, nearest (flow_from_directory's) or "
                                       "area (default: the backbone's)", group="vectors", metavar="FILTER")
    preprocessing: str | None = option(None, "override the backbone's preprocessing: caffe, tf, torch, lite, rescale, "
                                       "none", group="vectors", metavar="MODE")
    dtype: str = option("float32", "stored precision (default float32)", group="vectors", choices=DTYPES)
    augment: int = option(0, "also store K seeded augmented views of each training image", group="vectors", type=int,
                          metavar="K")
    augment_recipe: str = option("standard", "standard, imagedatagenerator (the seeds' settings), flip, or mild "
                                 "(no flip: digits, text)", group="vectors", metavar="RECIPE")
    augment_seed: int = option(0, "seed of the augmented views (default 0)", group="vectors", type=int, metavar="S")
    mixed_precision: bool = option(False, "compute in float16 on GPUs (ignored without a GPU)", group="vectors",
                                   action="store_true")
    runtime: str = option("auto", "where the forward pass runs: tensorflow, openvino (CPU) or auto (a GPU: tensorflow; "
                          "else openvino when installed; an existing cache of either is reused)", group="vectors",
                          metavar="NAME")
    decoding: str | None = option(None, "how image files are decoded: reduced (default: a large photo decoded at "
                                  "the size the resize needs, JPEG DCT scaling) or full (every pixel, as 0.1.0 and "
                                  "0.2.0 did; without this option an existing full cache is continued)",
                                  group="vectors", metavar="reduced|full")
    # how this run works
    batch_size: int = option(32, "images per forward pass (default 32)", group="run", type=int, metavar="N")
    cache_dir: Any = option(None, "where caches live (default $TRANSFER_CACHE_DIR or ./caches)", group="run",
                            metavar="DIR")
    shard: Any = option(None, "extract only shard K of N (K/N, 0-based) into its own file", group="run", metavar="K/N")
    lock_timeout: float = option(0.0, "seconds to wait for another extraction of the same cache, or for another run's "
                                 "conversion of the model (default 0: fail at once on a cache, "
                                 "wait as long as it takes on a conversion)",
                                 group="run", type=float, metavar="SECONDS")
    allow_outside_root: bool = option(False, "let a CSV manifest name files outside its folder", group="run",
                                      action="store_true")
    progress: bool = option(True, "no progress bars", group="run", flag="--quiet", action="store_false")
    # cutting the work into shards
    shards: int | None = option(None, "cut the images into N shards, extract each, then merge", group="engine",
                                type=int, metavar="N")
    engine: str = option("local", "where the shards run: local (here, one after the other) or dask (the engines of "
                         "transfer_cache.distributed)", group="engine", metavar="local|dask")
    scheduler: str | None = option(None, "Dask scheduler address (tcp://host:8786; default: a local cluster)",
                                   group="engine", metavar="ADDRESS")
    workers: int | None = option(None, "worker processes of the local Dask cluster (default 2)", group="engine",
                                 type=int, metavar="N")

    def of_groups(self, *groups: str) -> dict:
        """The options of the given groups as keyword arguments."""
        return {name: getattr(self, name) for name in _options.names(type(self), *groups)}

    def replace(self, **changes) -> "ExtractOptions":
        return dataclasses.replace(self, **changes)


def option_names(*groups: str) -> list[str]:
    """The option names of the given groups (all when none is given), in declaration order."""
    return _options.names(ExtractOptions, *groups)


def add_extract_arguments(parser) -> None:
    """One flag per option, as declared, under a heading per group."""
    _options.add_arguments(parser, ExtractOptions, GROUP_TITLES)


# --------------------------------------------------------------------------- resolving the vector options


def resolve(options: ExtractOptions) -> FeatureConfig:
    """Validate the user's choices of group "vectors", fill defaults from the backbone's spec (nothing is computed)."""
    from .runtimes import resolve_runtime
    from .runtimes.tensorflow import compute_precision

    spec = get_spec(options.backbone)
    validate_choices(pooling=options.pooling, preprocessing=options.preprocessing, input_size=options.input_size)
    one_of(options.dtype, DTYPES, "dtype")
    resize = options.resize or spec.resize
    crop_fraction = spec.crop_fraction if resize == "center-crop" and resize == spec.resize else 1.0
    size = int(options.input_size or spec.input_size)
    interpolation = options.interpolation or spec.interpolation
    validate_resize(size=size, policy=resize, interpolation=interpolation, crop_fraction=crop_fraction)
    decoding = options.decoding or DEFAULT_DECODING
    one_of(decoding, DECODINGS, "decoding")
    if not isinstance(options.mixed_precision, bool):
        raise TransferCacheError(f"mixed_precision must be True or False; got {options.mixed_precision!r}")
    _, weights_name, weights_identity = resolve_weights(spec, options.weights)
    augmentation = _augmentation(options)
    layers = parse_layers(options.layer) or default_layers(spec.name, size)
    if augmentation and len(layers) > 1:
        raise TransferCacheError(f"--augment works with one feature layer; got {len(layers)} ({', '.join(layers)})")
    return FeatureConfig(
        backbone=spec.name,
        weights=weights_name,
        weights_sha256=weights_identity,
        layers=layers,
        pooling=options.pooling,
        input_size=size,
        resize=resize,
        crop_fraction=float(crop_fraction),
        interpolation=interpolation,
        preprocessing=options.preprocessing or spec.preprocessing,
        dtype=options.dtype,
        augment=augmentation,
        compute_precision=compute_precision(options.mixed_precision),  # float16 compute changes the vectors
        runtime=resolve_runtime(options.runtime),
        decoding=decoding,
    )


def for_source(config: FeatureConfig, source) -> FeatureConfig:
    """``config`` as it applies to ``source``'s images: arrays have nothing to decode and are used whole, so their
    caches record "full" whatever was asked (and keep their fingerprints); files decode as ``config`` says."""
    if source.decodes_files or config.decoding == FULL_DECODING:
        return config
    return dataclasses.replace(config, decoding=FULL_DECODING)


def _augmentation(options: ExtractOptions):
    """0, or the views, recipe and seed the cache records."""
    whole_number(options.augment, "augment (views per image)", at_least=0)
    if not options.augment:
        return 0
    from .augment import get_recipe

    recipe = get_recipe(options.augment_recipe).describe()
    return {"views": options.augment, "recipe": recipe, "seed": int(options.augment_seed)}


def parse_layers(layer) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]``; None or empty -> ``[]`` (the backbone's default layer)."""
    if layer is None:
        return []
    items = layer.split(",") if isinstance(layer, str) else list(layer)
    return [item.strip() for item in items if item and item.strip()]


def feature_config(**vector_options) -> FeatureConfig:
    """The feature configuration of the given options of group "vectors" (the others keep their defaults)."""
    vectors = option_names("vectors")
    unknown = sorted(set(vector_options) - set(vectors))
    if unknown:
        raise TransferCacheError(
            f"{', '.join(unknown)} {'is not an option' if len(unknown) == 1 else 'are not options'} "
            f"of the feature configuration; these are: {', '.join(vectors)}"
        )
    return resolve(ExtractOptions(**vector_options))
