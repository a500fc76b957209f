"""Whether a head's rows fit in memory, decided before any row is read.

A head that is not streamed holds its training, validation and test rows as float32 plus working copies (the
scaled rows, the estimator's own array). A million 1280-d rows are 5.1 GB once, so such a head either trains on a
stratified sample (a head that declares ``sample_rows``, as logreg does: its test rows are then predicted a block at
a time) or refuses in one line before loading, naming the heads that stream instead. The available memory is
psutil's (what the system can give without swapping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import TransferCacheError
from .label_errors import stratified_sample

# float32 rows held at once by an in-memory head, in copies of its rows: the rows read, the unit-length or
# standardised copy, the estimator's own (scikit-learn's SVC, k-NN and MLP work in float64: two more)
WORKING_COPIES = 3
USABLE_SHARE = 0.8  # of the available memory an in-memory head may plan to take


@dataclass
class MemoryPlan:
    """The rows a head trains on (a sample, or all of them), whether its test rows are predicted in blocks, and a
    note for the run when it was sampled."""

    train: np.ndarray
    blocks: bool = False
    note: str | None = None


def needed_bytes(rows: int, dim: int) -> int:
    """What an in-memory head takes for ``rows`` rows of ``dim`` float32 values, with its working copies."""
    return int(rows) * int(dim) * 4 * WORKING_COPIES


def available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def streaming_heads() -> list[str]:
    """The heads that stream their rows at their defaults, from the registry."""
    from .classifiers import CLASSIFIERS, make_classifier

    return [name for name in CLASSIFIERS if make_classifier(name).streams]


def plan_memory(model, *, labels: np.ndarray, train: np.ndarray, held: int, dim: int, seed: int,
                may_sample: bool = True, available: int | None = None) -> MemoryPlan:
    """How ``model`` (not streamed) trains on ``train`` with ``held`` more rows to validate and test on.

    A head with ``sample_rows`` trains on a stratified sample of that many training rows when it has more (and then
    predicts a block at a time) if it ``may_sample``; any head whose rows would not fit in the usable share of
    ``available`` (psutil's, by default) is refused, naming the heads that stream.
    """
    sample_rows = model.sample_rows
    plan = MemoryPlan(train=train)
    if may_sample and sample_rows and len(train) > sample_rows:
        plan = MemoryPlan(train=stratified_sample(labels, train, sample_rows, seed), blocks=True,
                          note=f"{model.name} trains on at most {sample_rows:,} rows: fitted on a stratified sample of "
                               f"{sample_rows:,} of the {len(train):,} training rows; every test row is predicted "
                               "(--param sample_rows=N trains on more, 0 on all)")
    in_memory = len(plan.train) + (0 if plan.blocks else held)
    available = available_bytes() if available is None else available
    needed = needed_bytes(in_memory, dim)
    if needed > USABLE_SHARE * available:
        instead = " or ".join(f"--classifier {name}" for name in streaming_heads()) or "a head that streams"
        raise TransferCacheError(
            f"classifier '{model.name}' holds its rows in memory: {in_memory:,} rows of {dim} values need about "
            f"{needed / 1e9:.1f} GB with its working copies, and {available / 1e9:.1f} GB is available; use "
            f"{instead} (it streams the rows from the cache), or fit on fewer rows"
        )
    return plan
