"""``cxr-infer --report`` without a browser: the page's content and links, run.json, provenance.

The page in a real browser (console, images, sorting, filtering) is tests/infer/test_report_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import markupsafe
import numpy as np
import pytest
from click.testing import CliRunner

from cxr_infer import __version__
from cxr_infer.api import Classifier
from cxr_infer.cli import RunOptions, main, run_classification
from cxr_infer.report.page import relative_url
from cxr_infer.report.thumbnails import SIDE, thumbnail
from report_support import CLASSES, HOSTILE_NAME, make_labelled_folder, results, run_json, run_report


class Page(HTMLParser):
    """The parts of the page the tests read: table rows (their data attributes), image sources,
    links, inline SVGs and any reference to another host."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.svgs = 0
        self.external: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "data-i" in values:
            self.rows.append(values)
        if tag == "img":
            self.images.append(values["src"])
        if tag == "a":
            self.links.append(values["href"])
        if tag == "svg":
            self.svgs += 1
        if tag in ("script", "link", "img", "iframe") and (values.get("src") or values.get("href") or "").startswith(("http:", "https:", "//")):
            self.external.append(values.get("src") or values["href"])


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, tiny_model_path):
    folder = tmp_path_factory.mktemp("report")
    images = make_labelled_folder(folder / "images")
    out = folder / "out"
    result = run_report(images, out, tiny_model_path)
    assert result.exit_code == 1, result.output  # the broken file is a failed input
    return out, result.output


def test_the_page_has_every_row_misclassified_first_with_images_that_exist(report_run):
    out, output = report_run
    assert f"report: {out / 'report.html'}" in output
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    rows = results(out)
    assert sorted(int(r["data-i"]) for r in page.rows) == list(range(1, len(rows) + 1))
    wrong = [r["data-wrong"] == "1" for r in page.rows]
    assert wrong == sorted(wrong, reverse=True)  # misclassified first
    assert sum(wrong) == sum(bool(r["true_label"]) and bool(r["label"]) and r["true_label"] != r["label"] for r in rows)
    for view in page.rows:
        row = rows[int(view["data-i"]) - 1]
        assert view["data-label"] == (row["label"] or "-")
        assert view["data-kind"] == row["error"].split(": ", 1)[0] if row["error"] else view["data-kind"] == ""
    classified = [r for r in rows if r["label"]]
    assert len(page.images) == 2 * len(classified)  # a thumbnail and an overlay each, nothing for error rows
    for src in page.images:
        assert (out / urllib.parse.unquote(src)).is_file(), src
    assert any("%23" in src and "%20" in src for src in page.images)  # "case #1 a.png", encoded
    assert page.svgs == 2  # ROC curves and reliability diagram, inline
    assert page.external == []  # offline: nothing from another host


def test_a_hostile_file_name_is_shown_as_text_and_linked_encoded(report_run):
    out, _ = report_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in html and "<svg onload" not in html
    assert str(markupsafe.escape(HOSTILE_NAME)) in html  # the name as text, escaped as the template escapes
    assert f'href="../images/normal/{urllib.parse.quote(HOSTILE_NAME)}"' in html  # the link to the input
    stem = urllib.parse.quote(Path(HOSTILE_NAME).stem)
    images = [src for src in Page(html).images if stem in src]
    assert len(images) == 2 and all((out / urllib.parse.unquote(src)).is_file() for src in images)  # thumbnail, overlay


def test_the_page_names_the_model_and_shows_the_metrics_of_metrics_json(report_run, tiny_model_path):
    out, _ = report_run
    html = (out / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((out / "metrics.json").read_text())
    sha256 = hashlib.sha256(Path(tiny_model_path).read_bytes()).hexdigest()
    assert sha256 in html and __version__ in html and "CPUExecutionProvider" in html
    assert f"{metrics['accuracy']:.3f}" in html and f"{metrics['ece']:.3f}" in html
    for name in CLASSES:
        assert f"{metrics['per_class'][name]['f1']:.3f}" in html


def test_run_json_and_metrics_json_name_the_model_and_toolkit(report_run, tiny_model_path):
    out, _ = report_run
    record, metrics, rows = run_json(out), json.loads((out / "metrics.json").read_text()), results(out)
    sha256 = hashlib.sha256(Path(tiny_model_path).read_bytes()).hexdigest()
    for content in (record, metrics):
        assert content["model"]["sha256"] == sha256 and content["model"]["name"] == "tiny"
        assert content["toolkit_version"] == __version__
    assert record["inputs"] == len(rows)
    assert record["counts"] == {c: sum(r["label"] == c and r["gate"] != "reject" for r in rows) for c in CLASSES}  # flagged ones apart
    assert record["gate_rejected"] == sum(r["gate"] == "reject" for r in rows)
    assert record["errors"] == {"not-an-image": 1} and record["skipped"] == 1
    assert record["files"] == {"results": "results.csv", "metrics": "metrics.json", "report": "report.html"}
    assert record["providers"] == ["CPUExecutionProvider"] and record["img_per_s"] > 0


def test_a_run_that_never_ends_still_names_its_model_in_run_json(tmp_path, tiny_model_path):
    """run.json is written as the run starts (finished_at null), so results of a run killed midway
    can still be traced to their model."""
    images = make_labelled_folder(tmp_path / "images")
    out = tmp_path / "out"

    def dies_midway(classifier, options, inputs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C at the first image
        yield

    with Classifier.load(tiny_model_path, threads=1, gate="off") as classifier, pytest.raises(KeyboardInterrupt):
        run_classification(classifier, RunOptions((str(images / "covid"),), out, quiet=True), results=dies_midway)
    record = run_json(out)
    assert record["model"]["sha256"] == hashlib.sha256(Path(tiny_model_path).read_bytes()).hexdigest()
    assert record["finished_at"] is None and record["started_at"] and record["files"] == {"results": "results.csv"}


def test_without_report_run_json_is_written_but_no_page(tmp_path, tiny_model_path):
    images = make_labelled_folder(tmp_path / "images")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(images / "covid"), "--model", str(tiny_model_path), "--gate", "off", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert run_json(out)["files"] == {"results": "results.csv", "metrics": None, "report": None}
    assert not (out / "report.html").exists() and not (out / "thumbnails").exists()


@pytest.mark.parametrize(
    "image",
    [
        np.full((3000, 1200), 4000, np.uint16),
        np.random.default_rng(0).random((50, 700)),  # float64, wide
        np.zeros((300, 200, 4), np.uint8),  # BGRA
        np.arange(12, dtype=np.int32).reshape(3, 4),  # smaller than a thumbnail: not enlarged
    ],
    ids=["uint16-tall", "float64-wide", "bgra", "int32-tiny"],
)
def test_a_thumbnail_is_8_bit_gray_and_at_most_the_side(image):
    small = thumbnail(image)
    assert small.dtype == np.uint8 and small.ndim == 2
    assert max(small.shape) == min(SIDE, max(image.shape[:2]))
    assert abs(small.shape[0] / small.shape[1] - image.shape[0] / image.shape[1]) < 0.1


def test_relative_urls_encode_any_file_name(tmp_path):
    name = "a b#c?d%e-\udcff.png"  # a space, URL delimiters and a byte that is not UTF-8
    url = relative_url(tmp_path / "out" / "heatmaps" / name, tmp_path / "out")
    assert url == "heatmaps/a%20b%23c%3Fd%25e-%FF.png"
    assert relative_url(tmp_path / "in" / "x.png", tmp_path / "out") == "../in/x.png"


def test_without_explain_the_page_shows_thumbnails_and_no_overlay_column(tmp_path, tiny_model_path):
    images = make_labelled_folder(tmp_path / "images")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(images / "covid"), "--model", str(tiny_model_path), "--gate", "off", "--report", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    assert len(page.rows) == 4 and len(page.images) == 4 and all(src.startswith("thumbnails/") for src in page.images)
    assert "Grad-CAM" not in html and page.svgs == 0  # no overlays, no labels: no plots


def test_every_class_has_its_roc_legend_entry_whatever_its_name():
    """matplotlib hides a legend label starting with '_' and reads '$...$' as mathtext: a model's
    class names are shown verbatim (each colour drawn twice: the curve and its legend line)."""
    from cxr_infer.report.plots import class_colors, roc_svg

    classes = ["_other", "cost $5$"]
    colors = class_colors(classes)
    curve = (np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.7, 1.0]))
    svg = roc_svg({name: curve for name in classes}, {name: 0.8 for name in classes}, colors)
    assert [svg.count(colors[name]) for name in classes] == [2, 2]
