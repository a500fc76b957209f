"""The first run on a new machine (an empty models folder) against a warm run, and the built Lite0 against main's
converted one: whole processes, alternated in pairs, medians.

What it runs, on N photo-like JPEGs (crops of the scikit-image/scikit-learn photos at 500x375, ``_bench_images``):

1. + 2. the bench's ``first-run`` part (``_bench_timing.first_run_pairs``): ``extract()`` in a whole child process,
   the first run with an empty ``$TRANSFER_CACHE_MODELS`` against a warm run with the model already there, in pairs
   (order alternated), wall seconds and the seconds from process start to the first batch's vectors;
3. warm runs of this tree against warm runs of another tree (``--main``, default /work/main: its model converted
   from Keras), and against this tree running main's converted model, the command's images/s, order alternated;
4. the two saved models alone, compiled as the runtime compiles them (``COMPILE_CONFIG``, batch 32) in this process,
   images/s on an in-memory batch, repeats interleaved (A B, B A, ...), and whether OpenVINO compiled them to the same
   runtime graph (the same operations, kernels and layouts).

    python benchmarks/first_run.py [--images 192] [--pairs 3] [--main /work/main] [--json out.json]

Absolute figures on a shared machine swing; the pairs' differences and ratios are the measure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _run(argv: list[str], *, tree: Path, models: Path) -> tuple[float, str]:
    """Wall seconds of one child process run from ``tree``'s package, and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TRANSFER_CACHE_MODELS": str(models), "TF_CPP_MIN_LOG_LEVEL": "3"}
    begin = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - begin
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, done.stderr + done.stdout


def _command(folder: Path, caches: Path, *, tree: Path, models: Path) -> dict:
    wall, said = _run([sys.executable, "-m", "transfer_cache.extract", str(folder), "--cache-dir", str(caches)],
                      tree=tree, models=models)
    rate = re.search(r"([\d.]+) images/s", said)
    built = re.search(r"(built|converted) in ([\d.]+) s", said)
    return {"wall_seconds": round(wall, 2), "images_per_second": float(rate[1]) if rate else float("nan"),
            "model_seconds": float(built[2]) if built else 0.0}


def _median(values) -> float:
    return round(float(statistics.median(values)), 2)


def first_against_warm(folder: Path, work: Path, pairs: int) -> dict:
    """The bench's ``first-run`` part (``python -m transfer_cache.bench --parts first-run``): its warm models folder,
    ``work/models-warm``, is the one ``against_main`` compares."""
    sys.path.insert(0, str(HERE))
    from transfer_cache._bench_timing import first_run_pairs

    os.environ["PYTHONPATH"] = str(HERE)  # its child processes run this tree
    report = first_run_pairs(folder, options={}, repeats=pairs, workdir=work)
    for first, warm in zip(report["first"]["runs"], report["warm"]["runs"]):
        print(json.dumps({"first_wall": round(first["wall_seconds"], 2), "warm_wall": round(warm["wall_seconds"], 2),
                          "first_batch_first_run": round(first["first_batch_seconds"], 2),
                          "first_batch_warm_run": round(warm["first_batch_seconds"], 2)}), file=sys.stderr)
    return {"images": report["images"], "runtime": report["runtime"],
            "extra_seconds": round(report["extra_seconds"], 2)} | {
        f"median_{kind}_{key}": round(report[kind][key], 2) for kind in ("first", "warm")
        for key in ("wall_seconds", "first_batch_seconds")}


def against_main(folder: Path, work: Path, pairs: int, main: Path) -> dict:
    """Warm runs of this tree (its built model) against warm runs of ``main`` (its converted model), and of this tree
    with main's converted model put in place of the built one (same code, only the model differs; its record and
    probe still hold). Each pair alternates which goes first."""
    ours, theirs, swapped = work / "models-warm", work / "models-main", work / "models-swapped"
    _command(folder, work / "prime-main", tree=main, models=theirs)  # main converts its model (TensorFlow) once
    built_folder = Path(_model_xml(ours)).parent
    shutil.copytree(Path(_model_xml(theirs)).parent, swapped / "openvino" / built_folder.name)
    sides = {"built": (HERE, ours), "main_converted": (main, theirs), "converted_here": (HERE, swapped)}
    rows = []
    for i in range(pairs):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        row = {name: _command(folder, work / f"{name}-{i}", tree=sides[name][0], models=sides[name][1])
               for name in order}
        for other in ("main_converted", "converted_here"):
            row[f"rate_ratio_built_over_{other}"] = round(
                row["built"]["images_per_second"] / row[other]["images_per_second"], 3)
        rows.append(row)
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {"pairs": rows, **{f"median_{key}": _median(r[key] for r in rows) for key in rows[0] if "ratio" in key},
            "models": {"built": _model_xml(ours), "main_converted": _model_xml(theirs)}}


def _model_xml(models: Path) -> str:
    return str(next((models / "openvino").glob("efficientnet_lite0-*/model.xml")))


def models_alone(xmls: dict[str, str], repeats: int = 11, batch: int = 32, steps: int = 4) -> dict:
    import numpy as np
    import openvino as ov

    from transfer_cache.runtimes._openvino_convert import COMPILE_CONFIG

    core = ov.Core()
    pixels = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3)).astype(np.float32)
    requests, compiled_models = {}, []
    for name, xml in xmls.items():
        model = core.read_model(xml)
        model.reshape([batch, 224, 224, 3])
        compiled_models.append(core.compile_model(model, "CPU", COMPILE_CONFIG))
        requests[name] = compiled_models[-1].create_infer_request()
        requests[name].infer({0: pixels})
    rates = {name: [] for name in xmls}
    for repeat in range(repeats):
        order = list(requests.items())
        for name, request in order[::-1] if repeat % 2 else order:  # A B, B A, ...: neither always goes first
            begin = time.perf_counter()
            for _ in range(steps):
                request.infer({0: pixels})
            rates[name].append(batch * steps / (time.perf_counter() - begin))
    ratios = [a / b for a, b in zip(rates["built"], rates["main_converted"])]
    graphs = [[tuple(str(op.get_rt_info()[key].astype(str)) for key in ("layerType", "primitiveType", "outputLayouts"))
               for op in compiled.get_runtime_model().get_ordered_ops()] for compiled in compiled_models]
    return {"images_per_second": {name: _median(r) for name, r in rates.items()},
            "median_ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "same_runtime_graph": graphs[0] == graphs[1], "runtime_operations": [len(g) for g in graphs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--main", type=Path, default=Path("/work/main"), help="another tree to compare warm runs with")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from transfer_cache._bench_images import write_test_images

    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        work = Path(tmp)
        folder = write_test_images(work / "photos", args.images)
        report = {"images": args.images, "first_against_warm": first_against_warm(folder, work, args.pairs)}
        if args.main and (args.main / "transfer_cache").is_dir():
            report["against_main"] = against_main(folder, work, args.pairs, args.main)
            report["models_alone"] = models_alone(report["against_main"]["models"])
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
