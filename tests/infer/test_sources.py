"""Image sources (MANIFEST or path,source CSV) and the per-(class, source) shortcut audit."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_infer.metrics import classification_metrics, format_metrics, source_audit
from cxr_infer.sources import UNKNOWN, find_manifest, read_sources, sources_for, sources_of_paths

CLASSES = ["covid", "normal", "pneumonia"]


def test_source_csv_paths_are_relative_to_the_csv(tmp_path) -> None:
    (tmp_path / "data" / "normal").mkdir(parents=True)
    (tmp_path / "data" / "normal" / "a.png").write_bytes(b"")
    table_file = tmp_path / "data" / "sources.csv"
    table_file.write_text("path,source\nnormal/a.png,hospital-1\nnormal/b.png,\n")
    table = read_sources(table_file)
    assert table.lookup(tmp_path / "data" / "normal" / "a.png") == "hospital-1"
    assert table.lookup(tmp_path / "data" / "normal" / "b.png") == UNKNOWN  # empty source: not listed
    assert table.sources_of([tmp_path / "elsewhere.png"]) == [UNKNOWN]


def test_a_csv_without_source_columns_is_refused(tmp_path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("path,label\na.png,covid\n")
    with pytest.raises(ValueError, match="labels.csv.*path and source"):
        read_sources(bad)


@pytest.mark.data
def test_the_data_manifest_gives_each_image_its_source_repo(shared_data) -> None:
    folder = shared_data / "cxr3-internal" / "train" / "normal"
    assert find_manifest(folder) == (shared_data / "MANIFEST.csv").resolve()
    table = sources_for(folder)
    files = sorted(folder.iterdir())
    sources = set(table.sources_of(files))
    assert sources == {"lecuong1502/BTL_Machine_Learning", "muhammedtalo/COVID-19", "pi-null-mezon/OpenIST"}


def test_no_manifest_means_no_sources(tmp_path) -> None:
    assert find_manifest(tmp_path) is None and sources_for(tmp_path) is None
    (tmp_path / "MANIFEST.csv").write_text("path,source_repo\nx/a.png,repo-1\n")
    (tmp_path / "x").mkdir()
    assert sources_for(tmp_path / "x").lookup(tmp_path / "x" / "a.png") == "repo-1"


def test_audit_gives_recall_per_class_and_source() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 1, 1, 1, 0])
    sources = ["web", "web", "icu", "icu", "nih", "nih", "nih", "teach"]
    audit = source_audit(y_true, y_pred, sources, CLASSES)
    assert audit["covid"]["web"] == {"n": 2, "recall": 1.0, "predicted": {"covid": 2, "normal": 0, "pneumonia": 0}}
    assert audit["covid"]["icu"]["recall"] == 0.0 and audit["covid"]["icu"]["predicted"]["normal"] == 2
    assert audit["normal"]["nih"]["recall"] == 1.0 and audit["normal"]["teach"]["recall"] == 0.0
    assert audit["pneumonia"] == {}
    with pytest.raises(ValueError, match="sources"):
        source_audit(y_true, y_pred, sources[:-1], CLASSES)


def test_report_carries_and_prints_the_audit() -> None:
    probs = np.eye(3)[[0, 1, 1, 2]] * 0.9 + 0.05
    report = classification_metrics([0, 0, 1, 2], probs, CLASSES, sources=["a", "b", "a", "a"])
    assert report["per_source"]["covid"]["b"]["recall"] == 0.0
    text = format_metrics(report)
    assert "recall per source" in text and "n=1" in text
    assert "per_source" not in classification_metrics([0, 1], np.eye(3)[[0, 1]], CLASSES)


def test_paths_take_their_source_from_a_labels_csv_or_the_nearest_manifest(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "normal").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (data / "normal" / name).write_bytes(b"")
    (data / "MANIFEST.csv").write_text("path,source_repo\nnormal/a.png,repo-a\nnormal/b.png,repo-b\n")
    linked = tmp_path / "run" / "normal"
    linked.mkdir(parents=True)
    (linked / "b.png").symlink_to(data / "normal" / "b.png")
    assert sources_of_paths([data / "normal" / "a.png", linked / "b.png"]) == ["repo-a", "repo-b"]
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,source\ndata/normal/a.png,normal,site-1\n")
    assert sources_of_paths([data / "normal" / "a.png", data / "normal" / "b.png"], labels) == ["site-1", "repo-b"]
    assert sources_of_paths([tmp_path / "nowhere.png"]) is None
