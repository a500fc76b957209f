"""The gate an int8 ``--precision`` must pass before it is offered: NNCF post-training quantization variants of the
embedded Lite0's OpenVINO model, each measured on three real datasets that ship offline.

``pip install nncf`` (not a dependency of transfer_cache), then ``python benchmarks/int8_gate.py`` (``--help``).

Datasets judged: scikit-learn's ``digits`` (1797 images, 10 classes), scikit-image's ``lfw_subset`` (100 faces, 100
non-faces) and ``photos``: 540 JPEG crops of nine sample photographs of distinct subjects (60 each, as
``tests/test_findings.py`` builds them). Calibration (fixed, as a shipped ``--precision int8`` would be, so that a
vector depends only on its image): seeded crops of *other* sample photographs (none of the nine, no digit, no face).

Per variant and dataset: a 5-fold logistic-regression probe's accuracy on fp32 and on int8 vectors (the same folds),
and the cosine of each image's int8 vector to its fp32 vector (median, 1st percentile, minimum). Speed: whole
extraction of the 540 photo JPEGs (read, decode and resize on the extraction's thread pool, forward pass at batch 32),
fp32 and int8 alternated in pairs; the ratio is the median of the pairs' ratios. The gate: probe loss <= 1.0 point,
cosine median >= 0.98 and 1st percentile >= 0.95 on each dataset, and whole extraction >= 1.5x fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from int8_probe import compiled, pixels_of, probe_accuracy, vectors

JUDGED_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
CALIBRATION_PHOTOS = ("camera", "coins", "moon", "brick", "grass", "gravel", "text", "page", "clock", "cell",
                      "colorwheel", "motorcycle_left", "motorcycle_right")
GATE = {"probe_loss_points": 1.0, "cosine_median": 0.98, "cosine_p1": 0.95, "speedup": 1.5}


def _crops(photo: np.ndarray, count: int, *, seed: int, size=(320, 240)) -> list:
    """``count`` seeded crops of 55-95% of the photo's sides, some mirrored (``tests/photos.varied_crops``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(photo).convert("RGB")
    width, height = image.size
    out = []
    for _ in range(count):
        fraction = rng.uniform(0.55, 0.95)
        w, h = int(width * fraction), int(height * fraction)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = image.crop((left, top, left + w, top + h)).resize(size, Image.BICUBIC)
        out.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out


def _sample(name: str) -> np.ndarray:
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name.endswith("left") else right
    image = getattr(data, name)()
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def photo_folder(root: Path) -> Path:
    """The judged photo set: 60 JPEG crops (quality 90) of each of nine photographs, one folder per photograph."""
    from sklearn.datasets import load_sample_images

    photos = {name: _sample(name) for name in JUDGED_PHOTOS}
    photos.update(zip(("china", "flower"), load_sample_images().images))
    for index, (name, photo) in enumerate(photos.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(_crops(photo, 60, seed=1000 + index)):
            crop.save(root / name / f"{name}_{i:02d}.jpg", quality=90)
    return root


def judged(root: Path, config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each judged dataset's pixels (resized as extraction does) and labels."""
    from int8_probe import datasets

    out = {name: (pixels_of(images, config), labels) for name, (images, labels) in datasets().items()}
    files = sorted(root.rglob("*.jpg"))
    names = sorted({path.parent.name for path in files})
    out["photos"] = (pixels_of([path.read_bytes() for path in files], config),
                     np.array([names.index(path.parent.name) for path in files]))
    return out


def calibration_pixels(config, count: int, *, low_resolution: float = 0.0, seed: int = 0) -> np.ndarray:
    """``count`` seeded crops spread over the calibration photographs; ``low_resolution``: the share of them shrunk
    to 8-48 pixels first (small images enlarged to the input size, as digits, faces or CIFAR reach the model)."""
    from PIL import Image

    per = -(-count // len(CALIBRATION_PHOTOS))
    crops = [crop for index, name in enumerate(CALIBRATION_PHOTOS)
             for crop in _crops(_sample(name), per, seed=5000 + 100 * seed + index)]
    rng = np.random.default_rng([11, seed])
    crops = [crops[i] for i in rng.permutation(len(crops))[:count]]
    for i in np.flatnonzero(rng.random(len(crops)) < low_resolution):
        side = int(rng.integers(8, 49))
        crops[i] = crops[i].resize((side, side), Image.BILINEAR)
    return pixels_of([np.asarray(crop) for crop in crops], config)


# --------------------------------------------------------------------------- the variants


def _last_convolutions(model, count: int) -> list[str]:
    """The names of the model's last ``count`` (group) convolutions, in graph order: the head 1x1 conv is the last."""
    convs = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() in ("Convolution", "GroupConvolution")]
    return convs[-count:]


def _float_tail(count: int):
    def options(nncf, model) -> dict:
        return {"ignored_scope": nncf.IgnoredScope(names=_last_convolutions(model, count), types=["ReduceMean"])}
    return options


def _combine(*parts):
    def options(nncf, model) -> dict:
        merged: dict = {}
        for part in parts:
            merged.update(part(nncf, model))
        return merged
    return options


def _plain(**fixed):
    def options(nncf, model) -> dict:
        return {key: value(nncf) if callable(value) else value for key, value in fixed.items()}
    return options


def _advanced(**fields):
    def options(nncf, model) -> dict:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

        return {"advanced_parameters": AdvancedQuantizationParameters(
            **{key: value(nncf) if callable(value) else value for key, value in fields.items()})}
    return options


def _per_channel_activations(nncf):
    from nncf.quantization.advanced_parameters import QuantizationParameters

    return QuantizationParameters(per_channel=True)


def _smooth_convolutions(nncf):
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

    return AdvancedSmoothQuantParameters(convolution=0.15, matmul=0.95)


def _depthwise_in_float(nncf, model) -> dict:
    return {"ignored_scope": nncf.IgnoredScope(types=["GroupConvolution"])}


_MIXED = _plain(preset=lambda nncf: nncf.QuantizationPreset.MIXED)
_FULL_BIAS = _plain(fast_bias_correction=False)

# name -> (what it changes, quantize options from (nncf, fp32 model), calibration images, share of them low-resolution)
VARIANTS = {
    "default": ("NNCF defaults (performance preset, fast bias correction)", _plain(), 300, 0.0),
    "float_head": ("the last 1x1 conv (320->1280) and the pooling in float", _float_tail(1), 300, 0.0),
    "float_last_block": ("the last block (expand, depthwise, project) and the head conv in float", _float_tail(4), 300,
                         0.0),
    "float_depthwise": ("every depthwise convolution in float", _depthwise_in_float, 300, 0.0),
    "mixed_fullbias_float_head": ("mixed preset, full bias correction, head conv and pooling in float",
                                  _combine(_MIXED, _FULL_BIAS, _float_tail(1)), 300, 0.0),
    "channel_alignment": ("channel alignment on (meant for depthwise networks)",
                          _advanced(disable_channel_alignment=False), 300, 0.0),
    "per_channel_activations": ("activation scales per channel",
                                _advanced(activations_quantization_params=_per_channel_activations), 300, 0.0),
    "smoothquant": ("SmoothQuant on the convolutions (alpha 0.15; model_type transformer enables it)",
                    _combine(_plain(model_type=lambda nncf: nncf.ModelType.TRANSFORMER),
                             _advanced(smooth_quant_alphas=_smooth_convolutions)), 300, 0.0),
    "target_cpu": ("target_device CPU", _plain(target_device=lambda nncf: nncf.TargetDevice.CPU), 300, 0.0),
    "calibration_1000": ("1000 calibration crops instead of 300", _plain(), 1000, 0.0),
    "calibration_lowres": ("300 crops, a third of them shrunk to 8-48 px first", _plain(), 300, 1 / 3),
    "float_head_lowres_fullbias": ("head conv and pooling in float, full bias correction, a third low-resolution",
                                   _combine(_FULL_BIAS, _float_tail(1)), 300, 1 / 3),
    "float_depthwise_fullbias": ("every depthwise convolution in float, full bias correction",
                                 _combine(_depthwise_in_float, _FULL_BIAS), 300, 0.0),
    "float_depthwise_mixed": ("every depthwise convolution in float, mixed preset (asymmetric activations)",
                              _combine(_depthwise_in_float, _MIXED), 300, 0.0),
    "accuracy_control": ("NNCF accuracy control from float_depthwise_fullbias: layers returned to float until the "
                         "1st-percentile cosine to fp32 on 100 other calibration-photo crops (a third low-resolution) "
                         "is >= 0.97", _combine(_plain(accuracy_control=True), _depthwise_in_float, _FULL_BIAS), 300,
                         0.0),
}
CONTROLLED_P1 = 0.97  # accuracy control's floor on its own validation crops (the gate's 0.95 leaves room)
# ranking the 34 quantizer groups on 200 crops took 3:43 on a loaded 2-core machine, and it ranks again after
# reverts: 50 crops and at most 10 reverts keep a run under 15 minutes
RANKING_SUBSET, MAX_REVERTS = 50, 10


# --------------------------------------------------------------------------- measuring


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def whole_extraction_seconds(folder: Path, config, model, batch: int) -> float:
    """One extraction's work on ``folder`` (read, decode and resize on the extraction's thread pool, then the forward
    pass), with ``model`` compiled at ``batch``."""
    from transfer_cache.pipeline import image_batches
    from transfer_cache.sources import open_source

    source = open_source(str(folder))
    request = model.create_infer_request()
    begin = time.perf_counter()
    for pixels, _, _, _ in image_batches(source, list(range(len(source))), input_size=config.input_size,
                                         resize=config.resize, crop_fraction=config.crop_fraction,
                                         interpolation=config.interpolation, decoding=config.decoding,
                                         batch_size=batch):
        full = np.zeros((batch,) + pixels.shape[1:], np.float32)
        full[: len(pixels)] = pixels
        request.infer({0: full})
    return time.perf_counter() - begin


def speedup(folder: Path, config, fp32, int8, *, batch: int, pairs: int) -> tuple[float, list[float]]:
    """The median of ``pairs`` ratios fp32 seconds / int8 seconds, run one after the other (order alternated)."""
    whole_extraction_seconds(folder, config, fp32, batch)  # warm the file cache and both models
    whole_extraction_seconds(folder, config, int8, batch)
    ratios = []
    for pair in range(pairs):
        order = (fp32, int8) if pair % 2 == 0 else (int8, fp32)
        seconds = {id(m): whole_extraction_seconds(folder, config, m, batch) for m in order}
        ratios.append(seconds[id(fp32)] / seconds[id(int8)])
    return statistics.median(ratios), ratios


def controlled(nncf, core, fp32_model, config, calibration, *, batch: int, **kwargs):
    """``nncf.quantize_with_accuracy_control`` with the 1st-percentile cosine to fp32 as its metric, validated on
    100 crops of the calibration photographs that are not the calibration crops (another seed)."""
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    size = int(config.input_size)
    validation = calibration_pixels(config, 100, low_resolution=1 / 3, seed=1)
    reference = vectors(compiled(core, fp32_model, batch, size), validation, batch)

    def validate(model, items) -> tuple[float, list[float]]:
        items = list(items)
        request = model.create_infer_request()
        got = np.concatenate([np.asarray(request.infer({0: pixels})[model.outputs[0]]).reshape(1, -1)
                              for pixels, _ in items])
        values = cosines(np.stack([want for _, want in items]), got)
        if len(items) == len(validation):
            print(f"  accuracy control: 1st-percentile cosine {np.percentile(values, 1):.4f} on {len(items)} crops",
                  flush=True)
        return float(np.percentile(values, 1)), [float(v) for v in values]

    restorer = AdvancedAccuracyRestorerParameters(ranking_subset_size=RANKING_SUBSET, max_num_iterations=MAX_REVERTS)
    return nncf.quantize_with_accuracy_control(
        fp32_model, nncf.Dataset(list(calibration[:, None])),
        nncf.Dataset(list(zip(validation[:, None], reference)), lambda item: item[0]), validate,
        max_drop=1.0 - CONTROLLED_P1, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        advanced_accuracy_restorer_parameters=restorer, **kwargs)


def judge(X32: np.ndarray, X8: np.ndarray, labels: np.ndarray, base: float) -> dict:
    """One dataset's figures for one variant (``base``: the fp32 probe accuracy)."""
    cosine = cosines(X32, X8)
    accuracy = probe_accuracy(X8, labels)
    return {"fp32_probe": base, "int8_probe": accuracy, "probe_change_points": 100 * (accuracy - base),
            "cosine_median": float(np.median(cosine)), "cosine_p1": float(np.percentile(cosine, 1)),
            "cosine_min": float(cosine.min())}


def misses(result: dict) -> list[str]:
    """Which gates a variant's figures miss, and by how much."""
    out = []
    for name, figures in result["datasets"].items():
        if -figures["probe_change_points"] > GATE["probe_loss_points"]:
            out.append(f"{name} probe {figures['probe_change_points']:+.2f} pp (floor -{GATE['probe_loss_points']})")
        for key in ("cosine_median", "cosine_p1"):
            if figures[key] < GATE[key]:
                out.append(f"{name} {key.replace('_', ' ')} {figures[key]:.4f} (< {GATE[key]})")
    if result["speedup"] < GATE["speedup"]:
        out.append(f"whole extraction {result['speedup']:.2f}x (< {GATE['speedup']}x)")
    return out


def measure_variant(name: str, *, core, fp32_model, config, data, fp32_vectors, folder, args) -> dict:
    import nncf

    about, options, count, low = VARIANTS[name]
    size = int(config.input_size)
    calibration = calibration_pixels(config, count, low_resolution=low)
    begin = time.perf_counter()
    kwargs = options(nncf, fp32_model)
    if kwargs.pop("accuracy_control", False):
        quantized = controlled(nncf, core, fp32_model, config, calibration, batch=args.batch, **kwargs)
    else:
        quantized = nncf.quantize(fp32_model, nncf.Dataset(list(calibration[:, None])), subset_size=len(calibration),
                                  **kwargs)
    quantize_seconds = time.perf_counter() - begin
    int8 = compiled(core, quantized, args.batch, size)
    result = {"variant": name, "about": about, "calibration": count, "quantize_seconds": quantize_seconds,
              "datasets": {}}
    for dataset, (pixels, labels) in data.items():
        X32, base = fp32_vectors[dataset]
        result["datasets"][dataset] = judge(X32, vectors(int8, pixels, args.batch), labels, base)
    fp32 = compiled(core, fp32_model, args.batch, size)
    result["speedup"], result["speedup_pairs"] = speedup(folder, config, fp32, int8, batch=args.batch,
                                                         pairs=args.pairs)
    result["misses"] = misses(result)
    return result


def print_result(result: dict) -> None:
    print(f"{result['variant']}: {result['about']} (quantized in {result['quantize_seconds']:.0f} s); whole "
          f"extraction {result['speedup']:.2f}x fp32 (pairs {', '.join(f'{r:.2f}' for r in result['speedup_pairs'])})")
    for dataset, f in result["datasets"].items():
        print(f"  {dataset}: probe {f['fp32_probe']:.4f} -> {f['int8_probe']:.4f} ({f['probe_change_points']:+.2f} pp);"
              f" cosine median {f['cosine_median']:.4f} p1 {f['cosine_p1']:.4f} min {f['cosine_min']:.4f}")
    print(f"  gate: {'PASSES' if not result['misses'] else 'misses ' + '; '.join(result['misses'])}", flush=True)


def table(lines: list[dict]) -> str:
    """The figures of ``--results`` lines as one Markdown table, a row per variant and dataset."""
    rows = ["| variant | dataset | probe fp32 | probe int8 | change (pp) | cosine median | cosine p1 | cosine min | "
            "whole extraction int8/fp32 |", "|---|---|---|---|---|---|---|---|---|"]
    for result in lines:
        for dataset, f in result["datasets"].items():
            rows.append(f"| {result['variant']} | {dataset} | {f['fp32_probe']:.4f} | {f['int8_probe']:.4f} | "
                        f"{f['probe_change_points']:+.2f} | {f['cosine_median']:.4f} | {f['cosine_p1']:.4f} | "
                        f"{f['cosine_min']:.4f} | {result['speedup']:.2f}x |")
    rows.append("")
    rows += [f"- {result['variant']} ({result['about']}): "
             + ("passes every gate" if not misses(result) else "misses " + "; ".join(misses(result)))
             for result in lines]
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure NNCF int8 variants of the embedded Lite0's OpenVINO model against the gate for offering "
        "--precision int8: on digits, lfw_subset and 540 photo crops, a 5-fold linear probe loses <= 1.0 point, the "
        "per-image cosine to fp32 has median >= 0.98 and 1st percentile >= 0.95, and whole extraction is >= 1.5x "
        "fp32's. Needs nncf (pip install nncf).",
        epilog="variants: " + "; ".join(f"{name}: {spec[0]}" for name, spec in VARIANTS.items()))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variant names (default: all; see below)")
    parser.add_argument("--pairs", type=int, default=3, help="alternated fp32/int8 whole-extraction pairs (default 3)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of both models (default 32)")
    parser.add_argument("--results", type=Path, default=None,
                        help="append each variant's figures as one JSON line to this file")
    parser.add_argument("--fp32-vectors", type=Path, default=None,
                        help="an .npz keeping the fp32 vectors of the datasets between runs (written when absent; "
                        "delete it when the model or the datasets change)")
    parser.add_argument("--table", type=Path, default=None,
                        help="measure nothing: print the figures of a --results file as a Markdown table")
    args = parser.parse_args(argv)
    unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)
    from transfer_cache.extract_options import feature_config
    from transfer_cache.runtimes.openvino import convert, converted_model_path

    config = feature_config(backbone="efficientnet_lite0", runtime="openvino")
    path = converted_model_path(config)
    if not path.is_file():
        path = convert(config)
    core = ov.Core()
    fp32_model = core.read_model(str(path))
    fp32 = compiled(core, fp32_model, args.batch, int(config.input_size))
    with tempfile.TemporaryDirectory() as tmp:
        folder = photo_folder(Path(tmp) / "photos")
        data = judged(folder, config)
        kept = np.load(args.fp32_vectors) if args.fp32_vectors and args.fp32_vectors.is_file() else {}
        fp32_vectors = {}
        for name, (pixels, labels) in data.items():
            X32 = kept[name] if name in kept else vectors(fp32, pixels, args.batch)
            fp32_vectors[name] = (X32, probe_accuracy(X32, labels))
            print(f"{name}: {len(labels)} images, fp32 probe accuracy {fp32_vectors[name][1]:.4f}", flush=True)
        if args.fp32_vectors and not kept:
            np.savez(args.fp32_vectors, **{name: X32 for name, (X32, _) in fp32_vectors.items()})
        for name in args.variants.split(","):
            try:
                result = measure_variant(name, core=core, fp32_model=fp32_model, config=config, data=data,
                                         fp32_vectors=fp32_vectors, folder=folder, args=args)
            except Exception as exc:  # NNCF's own failures: say which variant, measure the next
                print(f"{name}: NNCF failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            print_result(result)
            if args.results:
                with open(args.results, "a") as out:
                    out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
