"""Every extract option, declared once, and the feature configuration they resolve to.

``EXTRACT_OPTIONS`` is the single list of ``extract()``'s keyword arguments: the command line builds its flags from
it, the sharded run forwards exactly these to each shard, and a test holds ``extract()``'s signature against it. The
options of group ``"vectors"`` resolve (defaults from the backbone spec, validation) into a ``FeatureConfig``: the
fields that change the vectors. Its fingerprint names the cache file, and it round-trips through the cache's
attributes. Adding an option is one ``Option`` here (plus a ``FeatureConfig`` field when it changes the vectors).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from ._checks import whole_number
from ._errors import TransferCacheError
from ._imaging import validate_resize
from .backbones import DEFAULT_BACKBONE, POOLINGS, default_layers, get_spec, resolve_weights, validate_choices

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")

# --------------------------------------------------------------------------- the options


@dataclass(frozen=True)
class Option:
    """One keyword argument of ``extract()`` and its command-line flag.

    ``group``: ``"vectors"`` (changes the vectors: resolved into the fingerprint), ``"run"`` (how this run works:
    batch size, cache folder, locking ...), or ``"engine"`` (whether and where the work is cut into shards).
    """

    name: str
    default: Any
    help: str
    group: str
    type: type | None = None
    choices: tuple | None = None
    metavar: str | None = None
    flag: str | None = None  # default: --name-with-dashes
    action: str | None = None  # "store_true" / "store_false" for switches

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def add_to(self, parser) -> None:
        kwargs: dict[str, Any] = {"dest": self.name, "help": self.help}
        if self.action:
            kwargs["action"] = self.action
        else:
            kwargs["default"] = self.default
            if self.type is not None:
                kwargs["type"] = self.type
            if self.choices is not None:
                kwargs["choices"] = self.choices
            if self.metavar is not None:
                kwargs["metavar"] = self.metavar
        parser.add_argument(self.cli_flag, **kwargs)


EXTRACT_OPTIONS: tuple[Option, ...] = (
    # what the vectors are
    Option("backbone", DEFAULT_BACKBONE, f"pretrained network (default {DEFAULT_BACKBONE}; --list-backbones)", "vectors",
           metavar="NAME"),
    Option("layer", None, "feature layer name(s), comma-separated (default: the last feature map)", "vectors",
           metavar="NAME[,NAME]"),
    Option("pooling", "avg", "how a feature map becomes a vector (default avg)", "vectors", choices=POOLINGS),
    Option("input_size", None, "image side in pixels (default: the backbone's)", "vectors", type=int, metavar="N"),
    Option("weights", "imagenet", "imagenet, none (random, tests only) or a weights file path", "vectors",
           metavar="imagenet|none|PATH"),
    Option("resize", None, "squash, center-crop or pad (default: the backbone's)", "vectors", metavar="POLICY"),
    Option("interpolation", None, "resize filter: bilinear, bicubic, nearest (flow_from_directory's) or area "
           "(default: the backbone's)", "vectors", metavar="FILTER"),
    Option("preprocessing", None, "override the backbone's preprocessing: caffe, tf, torch, lite, rescale, none", "vectors",
           metavar="MODE"),
    Option("dtype", "float32", "stored precision (default float32)", "vectors", choices=DTYPES),
    Option("augment", 0, "also store K seeded augmented views of each training image", "vectors", type=int, metavar="K"),
    Option("augment_recipe", "standard", "standard, imagedatagenerator (the seeds' settings), flip, or mild "
           "(no flip: digits, text)", "vectors", metavar="RECIPE"),
    Option("augment_seed", 0, "seed of the augmented views (default 0)", "vectors", type=int, metavar="S"),
    Option("mixed_precision", False, "compute in float16 on GPUs (ignored without a GPU)", "vectors", action="store_true"),
    Option("runtime", "auto", "where the forward pass runs: tensorflow, openvino (CPU) or auto (a GPU: tensorflow; "
           "else openvino when installed; an existing cache of either is reused)", "vectors", metavar="NAME"),
    # how this run works
    Option("batch_size", 32, "images per forward pass (default 32)", "run", type=int, metavar="N"),
    Option("cache_dir", None, "where caches live (default $TRANSFER_CACHE_DIR or ./caches)", "run", metavar="DIR"),
    Option("shard", None, "extract only shard K of N (K/N, 0-based) into its own file", "run", metavar="K/N"),
    Option("lock_timeout", 0.0, "seconds to wait for another extraction of the same cache, or for another run's "
           "conversion of the model (default 0: fail at once on a cache, wait as long as it takes on a conversion)",
           "run", type=float,
           metavar="SECONDS"),
    Option("allow_outside_root", False, "let a CSV manifest name files outside its folder", "run", action="store_true"),
    Option("progress", True, "no progress bars", "run", flag="--quiet", action="store_false"),
    # cutting the work into shards
    Option("shards", None, "cut the images into N shards, extract each, then merge", "engine", type=int, metavar="N"),
    Option("engine", "local", "where the shards run: local (here, one after the other) or dask (the engines of "
           "transfer_cache.distributed)", "engine", metavar="local|dask"),
    Option("scheduler", None, "Dask scheduler address (tcp://host:8786; default: a local cluster)", "engine",
           metavar="ADDRESS"),
    Option("workers", None, "worker processes of the local Dask cluster (default 2)", "engine", type=int, metavar="N"),
)

OPTIONS_BY_NAME = {option.name: option for option in EXTRACT_OPTIONS}


def option_names(*groups: str) -> list[str]:
    """The option names of the given groups (all when none is given), in declaration order."""
    return [o.name for o in EXTRACT_OPTIONS if not groups or o.group in groups]


_GROUP_TITLES = {
    "vectors": "what the vectors are (part of the cache's fingerprint)",
    "run": "how this run works",
    "engine": "cutting the work into shards",
}


def add_extract_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option, as declared, under a heading per group."""
    groups = {name: parser.add_argument_group(title) for name, title in _GROUP_TITLES.items()}
    for option in EXTRACT_OPTIONS:
        option.add_to(groups[option.group])


def options_from_args(args: argparse.Namespace) -> dict:
    """The parsed flags as ``extract()`` keyword arguments (one flag, one argument)."""
    return {name: getattr(args, name) for name in option_names()}


# --------------------------------------------------------------------------- the configuration that changes the vectors


@dataclass(frozen=True)
class FeatureConfig:
    """The resolved fields that change the vectors: the fingerprint is a hash of exactly these."""

    backbone: str
    weights: str
    weights_sha256: str
    layers: list
    pooling: str
    input_size: int
    resize: str
    crop_fraction: float
    interpolation: str
    preprocessing: str
    dtype: str
    augment: Any  # 0, or {"views": K, "recipe": {...}, "seed": S}
    compute_precision: str
    format_version: int = FORMAT_VERSION
    runtime: str = "tensorflow"  # the reference runtime's name is left out of the fingerprint (0.1.0 caches stay hits)

    @classmethod
    def resolve(
        cls,
        *,
        backbone: str = DEFAULT_BACKBONE,
        layer=None,
        pooling: str = "avg",
        input_size: int | None = None,
        weights: str = "imagenet",
        resize: str | None = None,
        interpolation: str | None = None,
        preprocessing: str | None = None,
        dtype: str = "float32",
        augment: int = 0,
        augment_recipe: str = "standard",
        augment_seed: int = 0,
        mixed_precision: bool = False,
        runtime: str = "auto",
    ) -> "FeatureConfig":
        """Validate the user's choices, fill defaults from the backbone's spec (nothing is computed)."""
        from .runtimes import resolve_runtime
        from .runtimes.tensorflow import compute_precision

        spec = get_spec(backbone)
        validate_choices(pooling=pooling, preprocessing=preprocessing, input_size=input_size)
        if dtype not in DTYPES:
            raise TransferCacheError(f"dtype must be one of {', '.join(repr(d) for d in DTYPES)}; got {dtype!r}")
        resize = resize or spec.resize
        crop_fraction = spec.crop_fraction if resize == "center-crop" and resize == spec.resize else 1.0
        size = int(input_size or spec.input_size)
        interpolation = interpolation or spec.interpolation
        validate_resize(size=size, policy=resize, interpolation=interpolation, crop_fraction=crop_fraction)
        if not isinstance(mixed_precision, bool):
            raise TransferCacheError(f"mixed_precision must be True or False; got {mixed_precision!r}")
        _, weights_name, weights_identity = resolve_weights(spec, weights)
        whole_number(augment, "augment (views per image)", at_least=0)
        augmentation: Any = 0
        if augment:
            from .augment import get_recipe

            augmentation = {"views": augment, "recipe": get_recipe(augment_recipe).describe(), "seed": int(augment_seed)}
        layers = parse_layers(layer) or default_layers(spec.name, size)
        if augment and len(layers) > 1:
            raise TransferCacheError(f"--augment works with one feature layer; got {len(layers)} ({', '.join(layers)})")
        return cls(
            backbone=spec.name,
            weights=weights_name,
            weights_sha256=weights_identity,
            layers=layers,
            pooling=pooling,
            input_size=size,
            resize=resize,
            crop_fraction=float(crop_fraction),
            interpolation=interpolation,
            preprocessing=preprocessing or spec.preprocessing,
            dtype=dtype,
            augment=augmentation,
            compute_precision=compute_precision(mixed_precision),  # float16 compute changes the vectors
            runtime=resolve_runtime(runtime),
        )

    @property
    def views(self) -> int:
        """Augmented views per training image (0 without augmentation)."""
        return int(self.augment["views"]) if self.augment else 0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.as_dict())

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> "FeatureConfig":
        """The configuration a cache was written with, from its (decoded) root attributes."""
        values = {**_FINGERPRINT_DEFAULTS, **{name: attrs[name] for name in FINGERPRINT_FIELDS if name in attrs}}
        missing = [name for name in FINGERPRINT_FIELDS if name not in values]
        if missing:
            raise TransferCacheError(f"cache attributes lack the feature configuration fields {missing}")
        values["layers"] = list(values["layers"])
        return cls(**values)


def parse_layers(layer) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]``; None or empty -> ``[]`` (the backbone's default layer)."""
    if layer is None:
        return []
    items = layer.split(",") if isinstance(layer, str) else list(layer)
    return [item.strip() for item in items if item and item.strip()]


def feature_config(**vector_options) -> dict:
    """Validate the options of group "vectors" and return the feature configuration as a plain dict."""
    unknown = sorted(set(vector_options) - set(option_names("vectors")))
    if unknown:
        raise TransferCacheError(f"{', '.join(unknown)} {'is not an option' if len(unknown) == 1 else 'are not options'} "
                                 f"of the feature configuration; these are: {', '.join(option_names('vectors'))}")
    return FeatureConfig.resolve(**vector_options).as_dict()


# --------------------------------------------------------------------------- the fingerprint

# Everything that changes the vectors; nothing else may enter the fingerprint.
FINGERPRINT_FIELDS = tuple(f.name for f in dataclasses.fields(FeatureConfig))
# fields added after the first release: caches written without them had the value given here
_FINGERPRINT_DEFAULTS = {"compute_precision": "float32", "runtime": "tensorflow"}
# fields hashed only when they differ from this value, so the caches of earlier releases keep their fingerprints
_HASHED_UNLESS = {"runtime": "tensorflow"}


def fingerprint(config: Mapping) -> str:
    """A short, stable hash of the fields that change the vectors (16 hex digits)."""
    config = {**_FINGERPRINT_DEFAULTS, **config}
    missing = [name for name in FINGERPRINT_FIELDS if name not in config]
    if missing:
        raise ValueError(f"feature configuration lacks fingerprint fields {missing}")
    hashed = [name for name in FINGERPRINT_FIELDS if _HASHED_UNLESS.get(name, object()) != config[name]]
    canonical = json.dumps({name: config[name] for name in hashed}, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
