"""What the vectors know, on real images that ship offline and the embedded Lite0: planted duplicates across the
split are leakage, flipped labels are found, clean sources report nothing, neighbours find the image itself."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from transfer_cache import TransferCacheError
from transfer_cache.cache import open_cache
from transfer_cache.extract import extract
from transfer_cache.findings import (
    HOMOGENEOUS_COSINE,
    NEAR_DUPLICATE_COSINE,
    confident_learning_issues,
    duplicate_pairs,
    inspect_caches,
    label_issues,
    nearest,
)
from transfer_cache.inspect import inspect, main
from transfer_cache.neighbors import neighbors

from conftest import write_synthetic_cache
from photos import make_photo_folder, varied_crops


def _digits(n: int | None = None):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return (images, digits.target) if n is None else (images[:n], digits.target[:n])


def _photos() -> dict[str, np.ndarray]:
    """Distinct photographs (scikit-image's "cat" is its "chelsea" again, so it is left out)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")
              if hasattr(data, name)}
    photos.update(zip(("china", "flower"), load_sample_images().images))
    return {name: (np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a[..., :3]) for name, a in photos.items()}


def _save(array: np.ndarray, path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


# --------------------------------------------------------------------------- the building blocks, on arrays


def test_nearest_is_exact_cosine_in_blocks():
    X = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    idx, sims = nearest(X, 3, block_rows=8)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    np.testing.assert_array_equal(idx, np.argsort(-S, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.sort(S, axis=1)[:, ::-1][:, :3], rtol=1e-5)


def test_confident_learning_flags_the_off_diagonal_of_the_confident_joint():
    # class thresholds: mean p(0 | label 0) = 0.7, mean p(1 | label 1) = 0.75
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.3, 0.7], [0.8, 0.2]])
    labels = np.array([0, 0, 1, 1, 1])
    flagged, suggested = confident_learning_issues(probabilities, labels)
    assert flagged.tolist() == [False, False, False, False, True] and suggested[4] == 0


def test_pairs_across_the_split_are_leakage_and_different_labels_conflicts():
    X = np.eye(4, dtype=np.float32)
    X[3] = X[0] + 0.01  # a near copy of row 0
    pairs, threshold = duplicate_pairs(X, ids=["a", "b", "b", "c"], labels=[0, 1, 2, 0],
                                       split=["train", "train", "test", "test"], threshold=0.9)
    assert threshold == 0.9
    found = {(p["row_a"], p["row_b"]): p for p in pairs}
    assert set(found) == {(1, 2), (0, 3)}
    assert found[(1, 2)]["kind"] == "exact" and found[(1, 2)]["leakage"] and found[(1, 2)]["conflict"]
    assert found[(0, 3)]["kind"] == "near" and found[(0, 3)]["leakage"] and not found[(0, 3)]["conflict"]


# --------------------------------------------------------------------------- real images, real features


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Distinct photos in train; in test, planted near copies (JPEG re-encoded, resized to 3/4) of three of them and
    one exact copy (the same bytes) of a fourth."""
    root = tmp_path_factory.mktemp("photos")
    photos = _photos()
    for name, array in photos.items():
        _save(array, root / "train" / name / f"{name}.png")
    planted = {}
    for name in ("coffee", "rocket", "astronaut"):
        buffer = io.BytesIO()
        Image.fromarray(photos[name]).save(buffer, format="JPEG", quality=80)
        copy = np.asarray(Image.open(buffer).convert("RGB"))
        h, w = copy.shape[:2]
        _save(
            np.asarray(Image.fromarray(copy).resize((w * 3 // 4, h * 3 // 4))),
            root / "test" / name / f"{name}-copy.png",
        )
        planted[f"train/{name}/{name}.png"] = f"test/{name}/{name}-copy.png"
    (root / "test" / "china").mkdir(parents=True)
    (root / "test" / "china" / "china-same.png").write_bytes((root / "train" / "china" / "china.png").read_bytes())
    planted["train/china/china.png"] = "test/china/china-same.png"
    result = extract(str(root), cache_dir=root.parent / f"{root.name}-caches", progress=False)
    return root, result.path, planted


def test_planted_duplicates_across_the_split_are_all_reported_as_leakage(photo_folder):
    root, cache, planted = photo_folder
    findings = inspect_caches(cache, folds=2)
    assert findings.threshold == NEAR_DUPLICATE_COSINE  # distinct photos: the threshold for natural images
    leaked = {(findings.paths[p["row_a"]], findings.paths[p["row_b"]]) for p in findings.leakage}
    leaked |= {(b, a) for a, b in leaked}
    assert all((original, copy) in leaked for original, copy in planted.items()), (planted, leaked)
    kinds = {findings.paths[p["row_b"]]: p["kind"] for p in findings.duplicates}
    kinds.update({findings.paths[p["row_a"]]: p["kind"] for p in findings.duplicates})
    assert kinds["test/china/china-same.png"] == "exact" and kinds["test/coffee/coffee-copy.png"] == "near"
    assert len(findings.duplicates) == len(planted)  # nothing else: distinct photos are far apart (<= 0.35 measured)


def test_a_clean_photo_collection_reports_no_duplicates(photo_folder, tmp_path):
    root, _, _ = photo_folder
    result = extract(str(root / "train"), cache_dir=tmp_path, progress=False)
    findings = inspect_caches(result.path, folds=2)
    assert findings.duplicates == []


def test_digits_have_no_duplicates_but_a_planted_copy_in_the_test_set_is_leakage(tmp_path):
    images, labels = _digits(400)
    split = np.array(["train"] * 300 + ["test"] * 100)
    clean = tmp_path / "clean.npz"
    np.savez(clean, images=images, labels=labels, split=split)
    findings = inspect_caches(extract(str(clean), cache_dir=tmp_path / "c", progress=False).path)
    assert findings.threshold == HOMOGENEOUS_COSINE and findings.duplicates == []  # alike, yet distinct drawings
    planted = images.copy()
    planted[300:303] = images[:3]  # three training digits again in the test set
    noisy = np.clip(images[10].astype(int) + np.random.default_rng(0).integers(-2, 3, images[10].shape), 0, 255)
    planted[303] = noisy.astype(np.uint8)  # and one with a little noise
    dirty = tmp_path / "dirty.npz"
    np.savez(dirty, images=planted, labels=labels, split=split)
    findings = inspect_caches(extract(str(dirty), cache_dir=tmp_path / "c", progress=False).path)
    pairs = {(p["row_a"], p["row_b"]): p for p in findings.duplicates}
    assert {(0, 300), (1, 301), (2, 302), (10, 303)} <= set(pairs)
    assert all(pairs[key]["leakage"] for key in ((0, 300), (1, 301), (2, 302), (10, 303)))
    assert [pairs[(i, 300 + i)]["kind"] for i in range(3)] == ["exact"] * 3 and pairs[(10, 303)]["kind"] == "near"


@pytest.mark.slow
def test_flipped_labels_are_found_among_the_top_ranked_rows(tmp_path):
    """5% of the digits' labels flipped at random (seeded): the share of them among the top-flagged 10%."""
    images, labels = _digits()
    rng = np.random.default_rng(7)
    flipped = rng.choice(len(labels), size=len(labels) // 20, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 10, size=len(flipped))) % 10
    path = tmp_path / "noisy.npz"
    np.savez(path, images=images, labels=noisy)
    findings = inspect_caches(extract(str(path), cache_dir=tmp_path / "c", progress=False).path)
    top = {item["row"] for item in findings.label_issues[: len(labels) // 10]}
    recall = len(top & set(flipped.tolist())) / len(flipped)
    print(f"flipped labels among the top 10%: {recall:.3f}")
    assert recall >= 0.95


def test_inspect_writes_a_csv_per_finding_and_a_page_and_the_cli_says_so(photo_folder, tmp_path):
    _, cache, planted = photo_folder
    result = inspect(cache, out=tmp_path / "out", folds=2)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "duplicates.csv", "inspect.html", "label_issues.csv", "outliers.csv"
    ]
    rows = (tmp_path / "out" / "duplicates.csv").read_text().splitlines()
    assert rows[0].startswith("cosine,kind,leakage,conflict,row_a,path_a") and len(rows) == 1 + len(planted)
    page = (tmp_path / "out" / "inspect.html").read_text()
    assert "Leakage: the same image on both sides of the split (4)" in page and page.count("data:image/png;base64") >= 8
    done = subprocess.run([sys.executable, "-m", "transfer_cache.inspect", str(cache), "--out", str(tmp_path / "cli"),
                           "--folds", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    n = len(_photos()) + len(planted)
    summary, *notes = done.stdout.strip().splitlines()
    assert re.fullmatch(rf"inspect: {n} images; 1 exact and 3 near duplicate pairs "
                        r"\(4 across train/test: leakage, 0 with "
                        r"different labels\), \d+ likely label errors \(near duplicates from cosine 0.9\); [\d.]+ s -> "
                        + re.escape(str(tmp_path / "cli" / "inspect.html")), summary), done.stdout
    # the photos with no copy are one image in their class, too few for 2 folds: left out of label errors, and said so
    assert notes == ["note: label errors searched among the 4 classes with at least 2 labelled images; "
                     "left out, with too "
                     "few images for 2 folds: " + ", ".join(f"{name} (1)" for name in result.findings.class_names
                                                             if name not in ("coffee", "rocket", "astronaut", "china"))]
    assert result.summary().startswith(f"inspect: {n} images; 1 exact and 3 near")


def test_inspect_refuses_a_test_cache_of_another_configuration(photo_folder, tmp_path):
    root, cache, _ = photo_folder
    other = extract(str(root / "test"), cache_dir=tmp_path, backbone="tiny", weights="none", progress=False).path
    with pytest.raises(TransferCacheError, match="vectors of two feature configurations cannot be compared"):
        inspect_caches(cache, test_cache=other)


def test_neighbors_of_a_cached_image_file_start_with_itself_and_find_the_original_of_a_copy(photo_folder, tmp_path):
    root, cache, _ = photo_folder
    first = neighbors(cache, root / "train" / "rocket" / "rocket.png", k=5)
    assert first[0]["path"] == "train/rocket/rocket.png" and abs(first[0]["similarity"] - 1.0) <= 1e-6
    mirrored = np.asarray(Image.open(root / "train" / "chelsea" / "chelsea.png"))[:, ::-1]
    _save(mirrored, tmp_path / "mirrored.jpg", quality=85)
    found = [item["path"] for item in neighbors(cache, tmp_path / "mirrored.jpg", k=3)]
    assert "train/chelsea/chelsea.png" in found
    by_row = neighbors(cache, "0", k=2)
    assert by_row[0]["row"] == 0 and abs(by_row[0]["similarity"] - 1.0) <= 1e-6
    with pytest.raises(TransferCacheError, match=re.escape("no-such-thing.png does not exist: no such image file")):
        neighbors(cache, "no-such-thing.png")


def test_neighbors_cli_prints_a_table_and_a_summary(photo_folder):
    _, cache, _ = photo_folder
    done = subprocess.run([sys.executable, "-m", "transfer_cache.neighbors", str(cache), "0", "-k", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    header, *table, last = done.stdout.strip().splitlines()
    assert header.split() == ["rank", "cosine", "row", "path", "label"] and last.startswith("neighbors: 3 nearest to 0")
    printed = [line.split() for line in table]
    found = neighbors(cache, "0", k=3)  # the CLI prints what the Python API finds, in its order
    assert [(int(r), float(c), int(row), path) for r, c, row, path, _ in printed] == [
        (item["rank"], round(item["similarity"], 4), item["row"], item["path"]) for item in found]
    assert printed[0][:3] == ["1", "1.0000", "0"]


def test_the_cache_report_carries_the_findings_and_a_similar_images_gallery(photo_folder, tmp_path):
    from transfer_cache.report import write_report

    _, cache, _ = photo_folder
    page = write_report(cache, out=tmp_path / "cache.html", tsne=False).read_text()
    assert "What the vectors say about the data" in page
    assert "Leakage: the same image on both sides of the split (4)" in page
    assert "Similar images: each sample image, then its nearest neighbours" in page


# --------------------------------------------------------------------------- label errors on real photos


@pytest.fixture(scope="module")
def thirty_photos(tmp_path_factory):
    """The folder of tests/photos.py a user would have (3 classes x 10 varied crops, a truncated and an empty JPEG) and
    the same drawn with seed 2, extracted with the embedded Lite0. On the second, features standardised per dimension
    once flagged a correct coffee photo as a rocket at p = 0.9998 (fold seed 14): a dimension nearly constant over 24
    training rows turned a test row's 0.07 into a z-score in the thousands."""
    root = tmp_path_factory.mktemp("thirty")
    folders = [make_photo_folder(root / "photos"), make_photo_folder(root / "photos-seed2", seed=2, bad_files=False)]
    return [extract(str(folder), cache_dir=root / "caches", progress=False).path for folder in folders]


def test_thirty_correctly_labelled_photos_flag_no_label_error_whatever_the_folds(thirty_photos):
    for cache in thirty_photos:
        for seed in range(20):
            findings = inspect_caches(cache, seed=seed)
            assert len(findings.label_issues) == 30
            flagged = [(findings.paths[i["row"]], findings.class_names[i["suggested"]], i["suggested_probability"])
                       for i in findings.label_issues if i["flagged"]]
            assert flagged == [], (cache.name, seed, flagged)


@pytest.mark.slow
def test_flipped_labels_of_real_photos_are_flagged(tmp_path):
    """Nine colour photographs of distinct subjects, 60 varied crops each (540 JPEGs), 5% of the labels flipped
    (seeded): the share of them the confident-learning rule flags, and how many correct labels it flags."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                                                        "immunohistochemistry", "retina")}
    photos.update(zip(("china", "flower"), load_sample_images().images))
    for index, (name, photo) in enumerate(photos.items()):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i, crop in enumerate(varied_crops(photo, 60, seed=1000 + index)):
            crop.save(tmp_path / "photos" / name / f"{name}_{i:02d}.jpg", quality=90)
    with open_cache(extract(str(tmp_path / "photos"), cache_dir=tmp_path / "c", progress=False).path) as cache:
        X, labels = cache.read_rows(np.arange(len(cache))), cache.labels.copy()
    rng = np.random.default_rng(7)
    flipped = rng.choice(len(labels), size=len(labels) // 20, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, len(photos), size=len(flipped))) % len(photos)
    flagged = {item["row"] for item in label_issues(X, noisy) if item["flagged"]}
    recall = len(flagged & set(flipped.tolist())) / len(flipped)
    print(
        f"flipped labels flagged: {recall:.3f} of {len(flipped)}; "
        f"correct labels flagged: {len(flagged - set(flipped.tolist()))}"
    )
    assert recall >= 0.8 and len(flagged - set(flipped.tolist())) <= len(flipped) // 10


def test_inspect_page_and_summary_name_the_images_that_failed_to_decode(thirty_photos, tmp_path):
    with_failures, without = thirty_photos
    result = inspect(with_failures, out=tmp_path / "out")
    assert re.fullmatch(r"inspect: 30 images \(2 more failed to decode, listed on the page\); 0 exact and \d+ near "
                        r"duplicate pairs \(0 across train/test: leakage, 0 with different labels\), 0 likely label "
                        r"errors \(near duplicates from cosine 0.9\); [\d.]+ s -> "
                        + re.escape(str(tmp_path / "out" / "inspect.html")),
                        result.summary()), result.summary()
    page = (tmp_path / "out" / "inspect.html").read_text()
    assert "<h2>Failed images (2)</h2>" in page
    assert "<td>cat/broken.jpg</td><td>truncated image: image file is truncated" in page
    assert "<td>coffee/empty.jpg</td><td>empty file (0 bytes)</td>" in page
    clean = inspect(without, out=tmp_path / "clean")
    assert clean.summary().startswith("inspect: 30 images; ")
    assert "<h2>Failed images (0)</h2>" in (tmp_path / "clean" / "inspect.html").read_text()


def test_a_class_too_small_for_the_folds_leaves_the_others_searched_and_every_other_section_written(
        thirty_photos, tmp_path, capsys):
    """Real vectors of the 30 photos, rocket cut to 3 images and one coffee photo labelled cat: label errors are
    searched among cat and coffee (and find that photo), rocket is named as left out, duplicates and outliers cover
    all."""
    with open_cache(thirty_photos[0]) as cache:
        X, labels, paths, names = (
            cache.read_rows(np.arange(len(cache))), cache.labels.copy(), list(cache.paths), list(cache.class_names)
        )
        source = cache.config["source_root"]
    keep = np.flatnonzero(labels != names.index("rocket"))
    keep = np.concatenate([keep, np.flatnonzero(labels == names.index("rocket"))[:3]])
    X, labels, paths = X[keep], labels[keep], [paths[i] for i in keep]
    wrong = paths.index("coffee/coffee_03.jpg")
    labels[wrong] = names.index("cat")
    small = write_synthetic_cache(tmp_path / "small.h5", features=X, labels=labels, paths=paths, class_names=names,
                                  source=source, source_root=source)
    assert main([str(small), "--out", str(tmp_path / "out")]) == 0
    summary, note = capsys.readouterr().out.strip().splitlines()
    assert re.match(r"inspect: 23 images; 0 exact and \d+ near duplicate pairs "
                    r"\(0 across train/test: leakage, \d+ with "
                    r"different labels\), 1 likely label errors ", summary), summary
    assert note == ("note: label errors searched among the 2 classes with at least 5 labelled images; left out, with "
                    "too few images for 5 folds: rocket (3)")
    issues = (tmp_path / "out" / "label_issues.csv").read_text().splitlines()
    assert len(issues) == 1 + 20 and issues[1].startswith(f"1,True,{wrong},coffee/coffee_03.jpg,,cat,coffee,")
    assert len((tmp_path / "out" / "outliers.csv").read_text().splitlines()) == 1 + 23
    page = (tmp_path / "out" / "inspect.html").read_text()
    assert note.removeprefix("note: ") in page and "Likely label errors (1)" in page and "Outliers" in page
    # no two classes large enough: label errors are skipped with one line, everything else is still written
    assert main([str(small), "--out", str(tmp_path / "none"), "--folds", "11"]) == 0
    summary, note = capsys.readouterr().out.strip().splitlines()
    assert "), label errors not searched (near duplicates from cosine 0.9)" in summary
    assert note == ("note: label errors not searched: it needs two or more classes with at least 11 labelled images "
                    "each (--folds 11); too few: coffee (9), rocket (3)")
    assert (tmp_path / "none" / "label_issues.csv").read_text().splitlines() == [
        "rank,flagged,row,path,split,label,suggested,self_confidence,suggested_probability"]
    assert len((tmp_path / "none" / "outliers.csv").read_text().splitlines()) == 1 + 23


def test_label_issues_name_the_classes_themselves_when_a_class_id_has_no_rows():
    """Probability columns are the classes present: with class 1 absent, class 2 must not be read from column 2."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    labels = np.repeat([0, 2], 20)
    X = centres[labels] + 0.1 * rng.normal(size=(40, 16))
    labels[5] = 2  # a row of class 0 labelled 2
    issues = {item["row"]: item for item in label_issues(X, labels)}
    assert issues[5]["flagged"] and issues[5]["suggested"] == 0 and issues[5]["label"] == 2
    assert {item["suggested"] for item in issues.values()} <= {0, 2} and sum(i["flagged"] for i in issues.values()) == 1
