"""Would int8 earn a place? NNCF post-training quantization of the embedded Lite0, judged by a linear probe.

``pip install nncf`` (not a dependency of transfer_cache), then ``python benchmarks/int8_probe.py``.

The fp32 model is the OpenVINO runtime's own converted model (converted once per machine, as ``extract`` does). Each
int8 variant is calibrated on 300 images of the dataset it is judged on (the source's own images, as a
``--precision int8`` would be). On two real datasets that ship offline (scikit-learn's ``digits``, 1797 images of 10
classes, and scikit-image's ``lfw_subset``, 100 faces and 100 non-faces) it prints, per variant: the cosine of each
image's int8 vectors to its fp32 vectors (minimum and median), a logistic-regression probe's 5-fold cross-validated
accuracy on fp32 and on int8 vectors (the same folds), and the images/s of both models on batches of 32, alternated.
The bar for offering int8 is a probe that loses at most 0.5 points on both datasets.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from skimage import data
    from sklearn.datasets import load_digits

    digits = load_digits()
    faces = data.lfw_subset()  # 200 x 25 x 25 floats in [0, 1]: the first 100 are faces
    return {
        "digits": (np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target),
        "lfw_subset": (np.rint(faces * 255.0).astype(np.uint8), np.repeat([1, 0], 100)),
    }


def pixels_of(images: np.ndarray, config) -> np.ndarray:
    from transfer_cache.pipeline import prepare_image

    return np.stack([prepare_image(image, config=config) for image in images]).astype(np.float32)


def compiled(core, model, batch: int, size: int):
    model = model.clone()
    model.reshape([batch, size, size, 3])
    return core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})


def vectors(model, pixels: np.ndarray, batch: int) -> np.ndarray:
    request = model.create_infer_request()
    out = []
    for start in range(0, len(pixels), batch):
        chunk = pixels[start:start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)])
        out.append(np.asarray(request.infer({0: padded})[model.outputs[0]])[: len(chunk)].reshape(len(chunk), -1))
    return np.concatenate(out)


def probe_accuracy(X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    return float(cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)), X, y, cv=folds).mean())


def images_per_second(models: list, pixels: np.ndarray, batch: int, repeats: int = 5) -> list[float]:
    """Median images/s of each model over ``repeats`` rounds of 4 batches, the models alternated within a round."""
    requests = [m.create_infer_request() for m in models]
    block = pixels[:batch]
    for r in requests:
        r.infer({0: block})
    rates = [[] for _ in models]
    for _ in range(repeats):
        for i, r in enumerate(requests):
            begin = time.perf_counter()
            for _ in range(4):
                r.infer({0: block})
            rates[i].append(4 * batch / (time.perf_counter() - begin))
    return [statistics.median(r) for r in rates]


def main() -> None:
    import nncf
    import openvino as ov

    from transfer_cache.extract_options import feature_config
    from transfer_cache.runtimes.openvino import convert, converted_model_path

    config = feature_config(backbone="efficientnet_lite0", runtime="openvino")
    path = converted_model_path(config)
    if not path.is_file():
        path = convert(config)
    core, batch, size = ov.Core(), 32, int(config.input_size)
    fp32_model = core.read_model(str(path))
    variants = {
        "default": {},
        "mixed, full bias correction": {"preset": nncf.QuantizationPreset.MIXED, "fast_bias_correction": False},
    }
    for name, (images, labels) in datasets().items():
        pixels = pixels_of(images, config)
        fp32 = compiled(core, fp32_model, batch, size)
        X32 = vectors(fp32, pixels, batch)
        base = probe_accuracy(X32, labels)
        print(f"{name}: {len(labels)} images, fp32 probe accuracy {base:.4f}")
        calibration = pixels[np.random.default_rng(0).permutation(len(pixels))[:300]]
        for variant, options in variants.items():
            quantized = nncf.quantize(fp32_model, nncf.Dataset(list(calibration[:, None])), subset_size=len(calibration),
                                      **options)
            int8 = compiled(core, quantized, batch, size)
            X8 = vectors(int8, pixels, batch)
            cosine = np.sum(X32 * X8, 1) / (np.linalg.norm(X32, axis=1) * np.linalg.norm(X8, axis=1) + 1e-12)
            accuracy = probe_accuracy(X8, labels)
            fast32, fast8 = images_per_second([fp32, int8], pixels, batch)
            print(f"  int8 {variant}: cosine to fp32 min {cosine.min():.4f} median {np.median(cosine):.4f}; probe "
                  f"{accuracy:.4f} ({100 * (accuracy - base):+.2f} points); {fast8:.0f} vs {fast32:.0f} images/s "
                  f"({fast8 / fast32:.2f}x)")


if __name__ == "__main__":
    main()
