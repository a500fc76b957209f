"""Does caching augmented views pay? scikit-learn's digits (real, offline) through efficientnet_lite0.

A small training set (``--train-per-class`` images per class, stratified, seeded) and every other image as the test
set, so augmentation has something to add. For K = 0, 4, 8 views (recipe ``mild``: no mirror, digits are not
symmetric) it extracts once, fits the same heads with the same seed, and prints accuracy and extraction cost.

    python benchmarks/augment_digits.py --views 0,4,8 --train-per-class 10 --json augment.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def make_source(folder: Path, train_per_class: int, seed: int) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    rng = np.random.default_rng(seed)
    split = np.full(len(images), "test", dtype=object)
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        split[rng.choice(members, size=train_per_class, replace=False)] = "train"
    path = folder / "digits_small_train.npz"
    np.savez(path, images=images, labels=digits.target, class_names=np.array([str(i) for i in range(10)]), split=split.astype(str))
    return path


def main() -> None:
    import transfer_cache as tc

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", default="0,4,8")
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--classifiers", default="logreg,dense")
    parser.add_argument("--dense-params", default="epochs=60,learning_rate=0.001",
                        help="hyper-parameters of the dense head (the default 10 epochs at 1e-4 underfits 100 images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="augment_digits_"))
    work.mkdir(parents=True, exist_ok=True)
    source = make_source(work, args.train_per_class, args.seed)
    rows = []
    for k in (int(v) for v in args.views.split(",")):
        started = time.perf_counter()
        result = tc.extract(
            str(source), backbone=args.backbone, weights=args.weights, augment=k, augment_recipe="mild",
            cache_dir=work / "caches", progress=False,
        )
        extract_seconds = time.perf_counter() - started
        for classifier in args.classifiers.split(","):
            params = args.dense_params.split(",") if classifier == "dense" and args.dense_params else None
            runs = tc.fit(result.path, classifier=classifier, params=params, seed=args.seed, runs_dir=work / "runs", progress=False)
            metrics = runs[0].metrics
            rows.append(
                {
                    "views": k,
                    "classifier": classifier,
                    "accuracy": round(metrics["accuracy"], 4),
                    "macro_f1": round(metrics["macro_f1"], 4),
                    "n_train": metrics["n_train"],
                    "n_test": metrics["n_test"],
                    "extract_seconds": round(extract_seconds, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"{'views':>5} {'classifier':>10} {'accuracy':>9} {'macro_f1':>9} {'n_train':>8} {'extract s':>10}")
    for row in rows:
        print(f"{row['views']:>5} {row['classifier']:>10} {row['accuracy']:>9.4f} {row['macro_f1']:>9.4f} {row['n_train']:>8} {row['extract_seconds']:>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
