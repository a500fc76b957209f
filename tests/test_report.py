"""report.py: the HTML page is self-contained and carries the data of the run/cache (test_report_browser opens
it in a real browser)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transfer_cache import analysis, report
from transfer_cache._errors import TransferCacheError

from test_analysis import CLASSES, make_blob_cache, make_folder_cache, make_real_runs, make_run, single_openmp_thread  # noqa: F401 (autouse)

# --------------------------------------------------------------------------- reading the page back


def _typed(value):
    """Undo plotly's base64 typed-array encoding ({"dtype": "f4", "bdata": ...})."""
    if isinstance(value, dict) and set(value) >= {"dtype", "bdata"}:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return (array.reshape(value["shape"].split(", ") and [int(s) for s in str(value["shape"]).split(",")])
                if "shape" in value else array)
    return value


def embedded_figures(page: str) -> list[dict]:
    """Every Plotly.newPlot(id, data, layout, config) call in the page, decoded from its JSON arguments."""
    decoder = json.JSONDecoder()
    figures = []
    for match in re.finditer(r"Plotly\.newPlot\(\s*", page):
        position = match.end()
        args = []
        for _ in range(3):
            value, position = decoder.raw_decode(page, position)
            args.append(value)
            position = re.compile(r"\s*,\s*").match(page, position).end()
        figures.append({"id": args[0], "data": args[1], "layout": args[2]})
    return figures


def count_points(figure: dict) -> int:
    return sum(len(_typed(trace["x"])) for trace in figure["data"])


def title_of(figure: dict) -> str:
    return figure["layout"]["title"]["text"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def run_dir(tmp_path) -> Path:
    cache_path, _ = make_folder_cache(tmp_path, per_class=16, spread=8.0)
    history = {"loss": [1.2, 0.8, 0.5], "accuracy": [0.4, 0.6, 0.8], "val_loss": [1.3, 1.0, 0.9],
               "val_accuracy": [0.35, 0.5, 0.6]}
    return make_run(tmp_path / "runs", cache_path, history=history)


@pytest.fixture
def big_cache(tmp_path) -> Path:
    labels = np.repeat(np.arange(3), 40)
    return make_blob_cache(tmp_path / "caches" / "big.h5", labels=labels,
                           failed=[("cat/broken.png", "truncated image: image file is truncated")])


# --------------------------------------------------------------------------- content


def test_run_report_figures_carry_the_run_data(run_dir, tmp_path):
    out = report.write_report(run_dir, sample=30, seed=1)
    assert out == run_dir / "report.html"
    page = out.read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    figures = embedded_figures(page)
    titles = [title_of(f) for f in figures]
    # 2 confusion matrices, per-class, curves, gallery, PCA, t-SNE; UMAP is left out below UMAP_MIN_POINTS points
    assert len(figures) == 7, titles
    if analysis.umap_available():
        assert f"UMAP left out: 30 points, fewer than {report.UMAP_MIN_POINTS}" in page
    counts, normalised = figures[0]["data"][0], figures[1]["data"][0]
    assert np.asarray(_typed(counts["z"])).reshape(3, 3).tolist() == metrics["confusion_matrix"]
    cm = np.asarray(metrics["confusion_matrix"])
    np.testing.assert_allclose(np.asarray(_typed(normalised["z"])).reshape(3, 3), cm / cm.sum(1, keepdims=True))
    assert counts["x"] == list(CLASSES) and counts["y"] == list(CLASSES)
    pca = next(f for f in figures if title_of(f).startswith("PCA"))
    assert count_points(pca) == 30 and "sampled 30 of 48 rows" in title_of(pca)
    tsne = next(f for f in figures if title_of(f).startswith("t-SNE"))
    assert count_points(tsne) == 30
    gallery = next(f for f in figures if title_of(f).startswith("Misclassified"))
    wrong = int(cm.sum() - np.trace(cm))
    assert sum(t["type"] == "image" for t in gallery["data"]) == wrong
    assert all(t["source"].startswith("data:image/png;base64,") for t in gallery["data"])
    assert any(title_of(f).startswith("Training curves") for f in figures)
    assert f"{metrics['accuracy']:.4f}" in page  # the metrics summary table
    assert run_dir.name in page


def test_cache_report_lists_config_counts_and_failures(big_cache, tmp_path):
    out = report.write_report(big_cache, out=tmp_path / "r" / "cache.html", sample=50)
    page = out.read_text()
    figures = embedded_figures(page)
    expected = ["Images", "Similarity", "PCA", "Explained", "t-SNE"]  # 50 points: UMAP left out
    assert [title_of(f).split(" ")[0] for f in figures] == expected
    assert count_points(figures[2]) == 50 and count_points(figures[4]) == 50
    assert "sampled 50 of 120 rows" in title_of(figures[2])
    assert "cat/broken.png" in page and "truncated image: image file is truncated" in page
    assert "Failed images (1)" in page


def test_cache_report_without_tsne_and_all_rows(big_cache, tmp_path):
    page = report.write_report(big_cache, out=tmp_path / "c.html", sample=5000, tsne=False).read_text()
    figures = embedded_figures(page)
    assert len(figures) == 4
    assert count_points(figures[2]) == 120 and "all 120 rows" in title_of(figures[2])
    assert "t-SNE skipped" in page


def test_report_is_self_contained(run_dir):
    page = report.write_report(run_dir, sample=30, tsne=False).read_text()
    assert page.count("* plotly.js v") == 1  # the bundle is embedded exactly once
    assert not re.search(r"<script[^>]+src=", page)
    outside_bundle = re.sub(r"<script>/\*\*\n\* plotly\.js v.*?</script>", "", page, count=1, flags=re.S)
    assert len(outside_bundle) < len(page) - 4_000_000
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", outside_bundle)  # nothing loaded from a network
    assert "cdn.plot.ly" not in outside_bundle
    assert page.count('class="plotly-graph-div"') == len(embedded_figures(page))


def test_default_cache_report_goes_to_reports_folder(big_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = report.write_report(big_cache, tsne=False)
    assert out == Path("reports") / "big.html" and out.is_file()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sample": 0}, "sample must be a whole number of at least 1; got 0"),
        ({"out": "report.txt"}, "the report is an HTML page: --out must end in .html; got report.txt"),
    ],
)
def test_write_report_validates_arguments(big_cache, kwargs, message):
    with pytest.raises(TransferCacheError, match=re.escape(message)):
        report.write_report(big_cache, **kwargs)


def test_write_report_rejects_other_folders(tmp_path):
    with pytest.raises(TransferCacheError, match=re.escape(f"{tmp_path} is a folder but neither a run folder")):
        report.write_report(tmp_path)
    with pytest.raises(TransferCacheError, match=re.escape(f"{tmp_path / 'x.h5'} does not exist; pass a run folder")):
        report.write_report(tmp_path / "x.h5")


def test_run_report_when_the_cache_is_gone_still_has_the_metrics(run_dir, tmp_path):
    (tmp_path / "cache.h5").unlink()
    page = report.write_report(run_dir, tsne=False).read_text()
    assert "Left out: the cache of run" in page
    assert len(embedded_figures(page)) == 4  # confusion x2, per-class, curves


# --------------------------------------------------------------------------- command line


def test_cli_writes_the_report_and_prints_a_summary(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert report.main([str(run_dir), "--out", str(out), "--sample", "20", "--no-tsne"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    assert re.fullmatch(rf"report: wrote {re.escape(str(out))} \(\d+\.\d MB, 6 figures\) "
                        rf"for run {re.escape(str(run_dir))} in \d+\.\d s",
                        printed[0])
    assert out.is_file()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m transfer_cache.report: error: {tmp_path / 'missing'} does not exist; "
                   "pass a run folder (runs/<run_id>), the runs folder (runs/) or a cache file (.h5)"]


def test_cli_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--help"])
    assert exit_info.value.code == 0
    assert "python -m transfer_cache.report runs/" in capsys.readouterr().out


# --------------------------------------------------------------------------- static export


def test_save_png_needs_kaleido(run_dir, tmp_path):
    from transfer_cache.analysis import confusion_matrix_figure

    fig = confusion_matrix_figure(run_dir)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        with pytest.raises(TransferCacheError,
                           match=re.escape("static image export needs the kaleido package: pip install kaleido")):
            report.save_png(fig, tmp_path / "cm.png")
        return
    path = report.save_png(fig, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the runs page


def test_the_runs_page_leaderboard_names_each_runs_cache_runtime_and_cost(tmp_path):
    """One row per run: head, backbone, layer and the runtime and extraction seconds its cache records."""
    from transfer_cache.cache import open_cache
    from transfer_cache.report import write_report

    cache_path, run_dirs = make_real_runs(tmp_path / "real", classifiers=("logreg", "knn"))
    with open_cache(cache_path) as cache:
        runtime, cost, layer = cache.config["runtime"], cache.config["extraction_seconds"], cache.layer_name(None)
        computed = cache.config["extraction_computed"]
        assert computed == len(cache)
    page = write_report(run_dirs[0].parent, out=tmp_path / "runs.html").read_text()
    header = "".join(f"<th>{h}</th>" for h in ("run", "head", "backbone", "layer", "runtime", "accuracy",
                                                 "balanced acc.", "macro F1", "fit s", "extract images/s",
                                                 "forward pass s", "cache"))
    assert header in page
    for run_dir, head in zip(run_dirs, ("logreg", "knn")):
        row = re.search(rf"<tr><td><a [^>]*>{run_dir.name}</a></td>(.*?)</tr>", page).group(1)
        cells = re.findall(r"<td>(.*?)</td>", row)
        # the rate extract's summary printed (computed / forward-pass seconds), then those seconds
        assert cells[:4] == [head, "tiny", layer, runtime], cells
        assert cells[8:10] == [f"{computed / cost:.1f}", f"{cost:.2f}"], cells


# --------------------------------------------------------------------------- what the page is given


def _one_error_line(argv, capsys) -> tuple[int, list[str]]:
    code = report.main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def test_the_runs_index_given_as_a_cache_points_to_the_runs_folder_and_is_kept(run_dir, capsys):
    """The old message said "not a transfer_cache file ... delete it and extract again": following it lost the index."""
    index = run_dir.parent / "index.csv"
    before = index.read_bytes()
    code, err = _one_error_line([index], capsys)
    assert code == 2
    assert err == [f"python -m transfer_cache.report: error: {index} is the runs index, not a cache; give the runs "
                   f"folder, {run_dir.parent}{os.sep}, to see every run"]
    assert index.read_bytes() == before


def test_the_real_command_on_the_runs_index_says_one_line_and_exits_2(run_dir):
    index = run_dir.parent / "index.csv"
    done = subprocess.run([sys.executable, "-m", "transfer_cache.report", str(index)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"python -m transfer_cache.report: error: {index} is the runs index, not a "
                                        f"cache; give the runs folder, {run_dir.parent}{os.sep}, to see every run"]


@pytest.mark.parametrize("name, expected", [
    ("metrics.json", "{file} is a file of the run folder {run}, not a cache; "
                     "give the folder, {run}{sep}, for the run's page"),
    ("notes.txt", "{file} is not a cache (not an HDF5 file), a run folder or a runs folder; pass a cache file (.h5) "
                  "written by python -m transfer_cache.extract, a run folder (runs/<run_id>) "
                  "or the runs folder (runs/)"),
    ("mine.h5", "{file} is not a cache: it is not an HDF5 file; expected a cache file (.h5) written by "
                "python -m transfer_cache.extract"),
    ("photos-0a1b2c.tiny.0123456789abcdef.h5", "cache {file} is damaged (not an HDF5 file any more); "
                                               "python -m transfer_cache.extract on its source "
                                               "writes a new one in its place"),
])
def test_a_file_that_is_no_cache_is_named_and_never_to_be_deleted(run_dir, tmp_path, capsys, name, expected):
    """Only a file named as extract names its caches is called a damaged cache of ours (and told how to rebuild)."""
    target = run_dir / name if name == "metrics.json" else tmp_path / name
    if name != "metrics.json":
        target.write_bytes(b"some bytes the user may need")
    before = target.read_bytes()
    code, err = _one_error_line([target], capsys)
    assert code == 2
    assert err == ["python -m transfer_cache.report: error: " + expected.format(file=target, run=run_dir, sep=os.sep)]
    assert "delete" not in err[0] and target.read_bytes() == before


def _index_text(runs_dir: Path) -> str:
    return (runs_dir / "index.csv").read_text()


def test_a_damaged_runs_index_is_one_line_and_rebuild_index_recovers_it(run_dir, capsys):
    runs_dir = run_dir.parent
    index = runs_dir / "index.csv"
    good = _index_text(runs_dir)
    index.write_text(good.replace(good.splitlines()[1].split(",")[6], "n/a", 1))  # the accuracy of the one run
    code, err = _one_error_line([runs_dir], capsys)
    assert code == 2
    assert err == [f"python -m transfer_cache.report: error: the runs index {index} is damaged (line 2: accuracy 'n/a' "
                   f"is not a number); rebuild it from the run folders with python -m transfer_cache.report {runs_dir} "
                   "--rebuild-index (the damaged file is kept beside it)"]
    assert report.main([str(runs_dir), "--rebuild-index", "--quiet"]) == 0
    captured = capsys.readouterr()
    (kept,) = runs_dir.glob("index.csv.old-*")
    assert captured.err.splitlines() == [f"report: rebuilt {index} from 1 run folder; the old index is kept as {kept}"]
    assert "n/a" in kept.read_text() and (runs_dir / "index.html").is_file()
    assert [row["run_id"] for row in analysis.read_index(runs_dir)] == [run_dir.name]


def test_rebuild_index_wants_a_runs_folder(run_dir, capsys):
    code, err = _one_error_line([run_dir, "--rebuild-index"], capsys)
    assert code == 2 and len(err) == 1 and f"{run_dir} is not a runs folder" in err[0]


# --------------------------------------------------------------------------- the runs page


def _set_index_accuracies(runs_dir: Path, accuracies) -> None:
    import csv

    with open(runs_dir / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row, accuracy in zip(rows, accuracies):
        row["accuracy"] = accuracy
    with open(runs_dir / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("accuracies, expected", [((1.0, 1.0), [0.95, 1.0]), ((0.5, 0.9), [0.45, 0.95]),
                                                  ((0.0, 1.0), [0.0, 1.0])])
def test_the_runs_page_accuracy_axis_fits_the_runs_within_0_and_1(tmp_path, accuracies, expected):
    """Two runs at accuracy 1.0 drew an axis from 0 to 2 (plotly's default for a constant)."""
    cache_path, _ = make_folder_cache(tmp_path, per_class=8)
    runs_dir = tmp_path / "runs"
    make_run(runs_dir, cache_path)
    make_run(runs_dir, cache_path, classifier="other")
    _set_index_accuracies(runs_dir, accuracies)
    page = report.write_report(runs_dir, out=tmp_path / "runs.html").read_text()
    fit_time = next(f for f in embedded_figures(page) if title_of(f) == "Accuracy against fit time")
    assert fit_time["layout"]["yaxis"]["range"] == pytest.approx(expected)
    assert all(trace["cliponaxis"] is False for trace in fit_time["data"])  # a point at 1.0 is drawn whole


def test_each_page_footer_says_what_hovering_shows_on_it(run_dir, tmp_path):
    footer = re.compile(r"Self-contained: opens offline([^<]*)</p>")
    run_page = report.write_report(run_dir, out=tmp_path / "run.html", tsne=False, umap=False).read_text()
    assert footer.search(run_page).group(1) == "; hover any point for its image path."
    runs_page = report.write_report(run_dir.parent, out=tmp_path / "runs.html").read_text()
    assert footer.search(runs_page).group(1) == ("; hover any point for its run; "
                                                 "each run&#x27;s name links to its own page.")
    (tmp_path / "cache.h5").unlink()  # no cache: no scatter of images, no promise about them
    bare = report.write_report(run_dir, out=tmp_path / "bare.html").read_text()
    assert footer.search(bare).group(1) == "."


# --------------------------------------------------------------------------- t-SNE and UMAP


def test_umap_is_left_out_below_its_threshold_and_skipped_on_request(run_dir, tmp_path, monkeypatch):
    """UMAP's first call compiles for about 20 s: on a few dozen points the page states it left UMAP out."""
    monkeypatch.setattr(report, "UMAP_MIN_POINTS", 500)

    def not_called(*args, **kwargs):
        raise AssertionError("UMAP was drawn")

    monkeypatch.setattr(analysis, "umap_figure", not_called)
    monkeypatch.setattr(analysis, "umap_available", lambda: True)
    page = report.write_report(run_dir, out=tmp_path / "auto.html", sample=30).read_text()
    assert ("UMAP left out: 30 points, fewer than 500, where it shows what t-SNE shows and its first run costs about "
            "20 s of compiling; --umap draws it anyway.") in page
    page = report.write_report(run_dir, out=tmp_path / "off.html", umap=False).read_text()
    assert "UMAP skipped (--no-umap)." in page and any(title_of(f).startswith("t-SNE") for f in embedded_figures(page))
    page = report.write_report(run_dir, out=tmp_path / "none.html", tsne=False, umap=False).read_text()
    assert "t-SNE skipped (--no-tsne)." in page and "UMAP skipped (--no-umap)." in page
    with pytest.raises(TransferCacheError,
                       match=re.escape("umap must be None (from 500 points on), True or False; got 'yes'")):
        report.write_report(run_dir, out=tmp_path / "bad.html", umap="yes")


def test_tsne_is_left_out_for_a_handful_of_points(run_dir, tmp_path):
    page = report.write_report(run_dir, out=tmp_path / "few.html", sample=5, umap=False).read_text()
    assert f"t-SNE left out: 5 points, fewer than {report.TSNE_MIN_POINTS}; PCA above shows them all." in page
    assert not any(title_of(f).startswith("t-SNE") for f in embedded_figures(page))


def test_help_says_what_no_tsne_and_no_umap_do(capsys):
    with pytest.raises(SystemExit):
        report.main(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "--no-tsne skip the t-SNE map (UMAP is chosen by --umap / --no-umap)" in text
    assert ("--no-umap skip the UMAP map" in text
            and f"--umap draw the UMAP map even below {report.UMAP_MIN_POINTS} points" in text)
    with pytest.raises(SystemExit):
        report.main(["x", "--umap", "--no-umap"])


def test_the_report_command_prints_nothing_but_its_summary(run_dir, tmp_path):
    """No TensorFlow/absl start-up lines and no warnings on the terminal: stderr stays empty with --quiet."""
    done = subprocess.run([sys.executable, "-m", "transfer_cache.report", str(run_dir), "--quiet", "--out",
                           str(tmp_path / "r.html")], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    assert done.stdout.startswith("report: wrote ")


def test_importing_umap_leaves_tensorflow_out_and_says_nothing():
    """umap-learn's __init__ imports TensorFlow when installed (for ParametricUMAP): seconds and absl log lines."""
    pytest.importorskip("umap", reason="UMAP is the optional extra transfer_cache[umap]")
    code = ("import sys; from transfer_cache import analysis; umap = analysis._import_umap(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules, hasattr(umap, 'UMAP'), "
            "sys.modules.get('tensorflow', 0) is None)")
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False", "True", "False"] and done.stderr == ""


@pytest.mark.slow
def test_umap_on_request_draws_and_the_terminal_stays_quiet(run_dir, tmp_path):
    """--umap below the threshold: the figure is there, and umap-learn's warnings are not on the terminal."""
    pytest.importorskip("umap", reason="UMAP is the optional extra transfer_cache[umap]")
    out = tmp_path / "u.html"
    done = subprocess.run([sys.executable, "-m", "transfer_cache.report", str(run_dir), "--quiet", "--umap",
                           "--no-tsne", "--sample", "30", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    umap_figure = next(f for f in embedded_figures(out.read_text()) if title_of(f).startswith("UMAP of"))
    assert count_points(umap_figure) == 30 and "umap-learn:" not in title_of(umap_figure)


def test_a_csv_named_index_that_is_not_the_runs_index_is_not_called_one(tmp_path, capsys):
    other = tmp_path / "index.csv"
    other.write_text("name,page\nintro,1\n")
    code, err = _one_error_line([other], capsys)
    assert (code == 2 and len(err) == 1
            and f"{other} is not a cache (not an HDF5 file), a run folder or a runs folder" in err[0])
