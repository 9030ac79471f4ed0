"""``cxr-infer`` end to end on real files: rows, overlays, metrics, exit codes, subcommands."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from cxr_infer.api import Prediction
from cxr_infer.cli import Scores, main
from cxr_infer.hookspecs import hookimpl
from cxr_infer.plugins import get_plugin_manager
from cxr_infer.readers import read_image
from infer_support import CLASSES, DICOMS, ORIGINALS, labelled_subset, make_bad_inputs

def good_inputs() -> list[Path]:
    """RGBA PNG, WebP, JPEG, header-less DICOM (a function: without the data the lists are empty)."""
    return [ORIGINALS[4], ORIGINALS[1], ORIGINALS[12], DICOMS[0]]


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin, catch_exceptions=False)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    folder = tmp_path / "inbox"
    make_bad_inputs(folder / "bad")
    for source in good_inputs():
        (folder / source.name).symlink_to(source)
    return folder


@pytest.mark.data
def test_folder_with_bad_files_gives_every_row_overlays_and_exit_1(mixed_folder, tmp_path, tiny_model_path):
    out = tmp_path / "out"
    result = run(mixed_folder, "--recursive", "--model", tiny_model_path, "--explain", "--out", out, "--quiet")
    assert result.exit_code == 1, result.output
    rows = read_rows(out / "results.csv")
    names = sorted(p.name for p in good_inputs()) + sorted(p.name for p in (mixed_folder / "bad").iterdir())
    assert [Path(r["path"]).name for r in rows] == names  # files, then subfolders, each sorted
    for row in rows:
        if row["error"]:
            assert not row["label"] and not row["heatmap"]
            continue
        assert sum(float(row[f"prob_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-4)
        overlay_path = Path(row["heatmap"])
        assert overlay_path.resolve().is_relative_to((out / "heatmaps").resolve())
        assert overlay_path.relative_to(out / "heatmaps").parts[0] == "inbox"
        assert overlay_path.suffix == ".jpg"  # the default: JPEG at display size
        overlay_height, overlay_width = cv2.imread(str(overlay_path)).shape[:2]
        height, width = read_image(row["path"]).shape[:2]
        assert max(overlay_height, overlay_width) == min(1024, max(height, width))
        assert overlay_width / overlay_height == pytest.approx(width / height, rel=0.01)
    assert sum(bool(r["error"]) for r in rows) == 5
    assert "9 inputs: " in result.output and "5 errors" in result.output


@pytest.mark.data
def test_full_size_png_overlays_on_request(tmp_path, tiny_model_path):
    """--overlay-size full decodes at full size and keeps it; PNG is lossless at any zlib level."""
    source = ORIGINALS[3]  # a 2059 x 1483 JPEG: reduced for the model alone, whole for this overlay
    out = tmp_path / "out"
    result = run(source, "--model", tiny_model_path, "--explain", "--out", out, "--overlay-size", "full",
                 "--overlay-format", "png", "--overlay-quality", "0", "--quiet")
    assert result.exit_code == 0, result.output
    (row,) = read_rows(out / "results.csv")
    assert row["heatmap"].endswith(".png")
    assert cv2.imread(row["heatmap"]).shape[:2] == read_image(source).shape[:2]


@pytest.mark.data
def test_labelled_folder_reports_metrics_that_match_scikit_learn(tmp_path, tiny_model_path):
    folder = labelled_subset(tmp_path / "external", per_class=3)
    out = tmp_path / "out"
    result = run("classify", folder, "--model", tiny_model_path, "--out", out, "--format", "jsonl", "--batch-size", "4", "-q")
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == 9 and {r["true_label"] for r in rows} == set(CLASSES)
    report = json.loads((out / "metrics.json").read_text())
    classes = report["classes"]
    truth = [classes.index(r["true_label"]) for r in rows]
    predicted = [classes.index(r["label"]) for r in rows]
    assert report["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert report["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", labels=[0, 1, 2], zero_division=0))
    assert report["confusion_matrix"] == confusion_matrix(truth, predicted, labels=[0, 1, 2]).tolist()
    assert "macro-F1" in result.output


@pytest.mark.data
def test_stdin_list_and_labels_csv(tmp_path, tiny_model_path):
    folder = labelled_subset(tmp_path / "ext", per_class=1)
    files = sorted(folder.rglob("*.jpg"))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,source\n" + "".join(f"ext/{p.parent.name}/{p.name},{p.parent.name},site-{i % 2}\n" for i, p in enumerate(files)))
    out = tmp_path / "out"
    result = run("-", "--model", tiny_model_path, "--labels", labels, "--out", out, "--explain", stdin="\n".join(map(str, files)) + "\n")
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "results.csv")
    assert [r["true_label"] for r in rows] == [p.parent.name for p in files]
    report = json.loads((out / "metrics.json").read_text())
    assert report["n"] == 3
    # the shortcut audit: recall per (class, source), sources from the labels CSV's source column
    assert {c: sorted(rows) for c, rows in report["per_source"].items()} == {
        name: [f"site-{i % 2}"] for i, name in enumerate(p.parent.name for p in files)}
    assert "recall per source" in result.output
    for row in rows:  # absolute input paths still land inside the output folder
        assert Path(row["heatmap"]).resolve().is_relative_to(out.resolve())


@pytest.mark.data
def test_process_result_plugin_failure_is_the_rows_error(tmp_path, tiny_model_path):
    class Boom:
        @hookimpl
        def process_result(self, result):
            raise ValueError("no database")

    class Tagger:
        @hookimpl
        def process_result(self, result):
            result["site"] = "ward-7"

    pm = get_plugin_manager()
    pm.register(Tagger(), name="tagger")
    pm.register(Boom(), name="boom")
    try:
        result = run(ORIGINALS[12], "--model", tiny_model_path, "--out", tmp_path / "out", "--format", "jsonl", "-q")
    finally:
        pm.unregister(name="boom")
        pm.unregister(name="tagger")
    assert result.exit_code == 1
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert "'boom'" in row["error"] and "no database" in row["error"] and row["label"]


@pytest.mark.data
@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cuda"], "--device cuda"),
        (["--format", "xml"], "unknown --format 'xml'"),
        (["--explain-class", "fracture"], "unknown class 'fracture'"),
        (["--overlay-format", "png", "--overlay-quality", "90"], "out of range for png (0-9)"),
        (["--overlay-size", "big"], "neither a long side in pixels nor 'full'"),
    ],
)
def test_usage_and_device_errors_exit_2(tmp_path, tiny_model_path, args, message):
    result = run(ORIGINALS[12], "--model", tiny_model_path, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.data
def test_explaining_a_plain_model_exits_2(tmp_path, tiny_plain_model_path):
    result = run(ORIGINALS[12], "--model", tiny_plain_model_path, "--explain", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "without the Grad-CAM outputs" in result.output
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.fixture
def bundle(tmp_path, monkeypatch, tiny_model_path):
    """A stand-in for the installed exported/ folder."""
    folder = tmp_path / "exported"
    folder.mkdir()
    monkeypatch.setattr("cxr_infer.bundled.exported_dir", lambda: folder)
    return folder


@pytest.mark.data
def test_no_bundled_model_is_said_clearly(bundle, tmp_path):
    result = run(ORIGINALS[12], "--out", tmp_path / "out")
    assert result.exit_code == 2 and "bundles no model" in result.output
    assert "no bundled models" in run("models").output


@pytest.mark.data
def test_bundled_default_model_info_and_models(bundle, tmp_path, tiny_model_path):
    shutil.copy(tiny_model_path, bundle / "tiny.onnx")
    shutil.copytree(Path(__file__).parents[2] / "exported" / "gate", bundle / "gate")  # an installation ships the input gate too
    (bundle / "models.json").write_text('{"default": "tiny"}')
    listing = run("models")
    assert listing.exit_code == 0 and "* tiny" in listing.output
    card = json.loads(run("info", "tiny", "--json").output)
    assert card["explain"] is True and len(card["sha256"]) == 64
    text = run("info")
    assert text.exit_code == 0 and ", ".join(card["classes"]) in text.output and card["sha256"] in text.output
    assert run(ORIGINALS[12], "--out", tmp_path / "out", "-q").exit_code == 0


def test_plugins_lists_builtins_as_json():
    names = {row["name"] for row in json.loads(run("plugins").output)}
    assert {"cxr_infer.readers", "cxr_infer.writers"} <= names


@pytest.mark.data
def test_output_inside_the_input_folder_is_never_classified(tmp_path, tiny_model_path):
    folder = tmp_path / "films"
    folder.mkdir()
    (folder / "one.jpeg").symlink_to(ORIGINALS[12])
    for _ in range(2):  # the second run finds the first run's overlays in its folder tree
        result = run(folder, "-r", "--model", tiny_model_path, "--explain", "--out", folder / "results", "-q")
        assert result.exit_code == 0, result.output
        rows = read_rows(folder / "results" / "results.csv")
        assert [Path(r["path"]).name for r in rows if not r["error"]] == ["one.jpeg"]
        assert all(r["error"] == "skipped: output folder of this run" for r in rows if r["error"])


def test_help_summary_names_every_subcommand():
    help_text = run("--help").output
    for name in main.commands:
        if name != "classify":  # the summary writes it as "cxr-infer PATH..."
            assert f"cxr-infer {name}" in help_text, name


def test_summary_counts_errors_by_kind_and_says_where_the_reasons_are(tmp_path):
    scores = Scores(tuple(CLASSES))
    errors = ["truncated: empty file (0 bytes)", "missing: file not found", "truncated: JPEG ends early", "skipped: hidden entry", ""]
    for error in errors:
        scores.add(None, Prediction("x.png", None if error else "covid", {}, error=error or None), error)
    results = tmp_path / "results.csv"
    summary = scores.summary(len(errors), 9.5, results)
    assert "; 3 errors (2 truncated, 1 missing), 1 skipped; 9.5 img/s; " in summary, summary
    assert summary.endswith(f"results: {results} (the error column says why)"), summary
    assert "; 0 errors; " in Scores(tuple(CLASSES)).summary(0, 0.0, results)
