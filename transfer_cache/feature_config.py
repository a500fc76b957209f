"""The feature configuration: the resolved fields that change the vectors, and their fingerprint.

A ``FeatureConfig`` is what every stage below ``extract`` receives (runtimes, pipeline, backbones, the cache writer,
export): a typed record, never a dict. Its fingerprint names the cache file, and it round-trips through the cache's
attributes. This module stands on nothing of the package but its errors, so the cache format can read a
configuration without standing on the model registries; resolving the user's options into one (defaults from the
backbone's spec, validation) is ``extract_options``'s job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from ._errors import TransferCacheError

FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
# The runtime of every cache written before the runtime was recorded. Its name is left out of the fingerprint, so
# those caches stay hits; the registry's reference runtime is this one (a test holds the two together).
UNHASHED_RUNTIME = "tensorflow"
# How every cache written before the decoding was recorded decoded its files: every pixel. Left out of the
# fingerprint, so those caches keep their names; arrays are always used whole, so their caches record it too.
FULL_DECODING = "full"

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
    runtime: str = UNHASHED_RUNTIME  # the reference runtime: its name is left out of the fingerprint
    decoding: str = FULL_DECODING  # "full", or "reduced": large files decoded at the size the resize needs

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


# --------------------------------------------------------------------------- the fingerprint

# Everything that changes the vectors; nothing else may enter the fingerprint.
FINGERPRINT_FIELDS = tuple(f.name for f in dataclasses.fields(FeatureConfig))
# fields added after the first release: caches written without them had the value given here
_FINGERPRINT_DEFAULTS = {"compute_precision": "float32", "runtime": UNHASHED_RUNTIME, "decoding": FULL_DECODING}
# fields hashed only when they differ from this value, so the caches of earlier releases keep their fingerprints
_HASHED_UNLESS = {"runtime": UNHASHED_RUNTIME, "decoding": FULL_DECODING}


def fingerprint(config: Mapping) -> str:
    """A short, stable hash of the fields that change the vectors (16 hex digits)."""
    config = {**_FINGERPRINT_DEFAULTS, **config}
    missing = [name for name in FINGERPRINT_FIELDS if name not in config]
    if missing:
        raise ValueError(f"feature configuration lacks fingerprint fields {missing}")
    hashed = [name for name in FINGERPRINT_FIELDS if _HASHED_UNLESS.get(name, object()) != config[name]]
    canonical = json.dumps({name: config[name] for name in hashed}, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
