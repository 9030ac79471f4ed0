"""cxr-train evaluate: JSON + PNG per data set, --record into the checkpoint, naming of sets."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cxr_train.checkpoint import Checkpoint
from cxr_train.cli import main
from cxr_train.evaluate import dataset_name


def _subset(root: Path, source: Path, per_class: int) -> Path:
    """Symlink the first ``per_class`` images of each class folder of ``source`` under ``root``."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            (root / folder.name / image.name).symlink_to(image)
    return root


def test_dataset_names(shared_data) -> None:
    assert dataset_name(shared_data / "cxr3-internal" / "test") == "cxr3-internal/test"
    assert dataset_name(shared_data / "cxr3-external") == "cxr3-external"


def test_evaluate_writes_reports_and_records_them(tmp_path, shared_data, make_checkpoint) -> None:
    checkpoint = tmp_path / "model.pt"
    make_checkpoint("simplecnn", size=32).save(checkpoint)
    internal = _subset(tmp_path / "cxr3-internal" / "test", shared_data / "cxr3-internal" / "test", 3)
    external = _subset(tmp_path / "cxr3-external", shared_data / "cxr3-external", 2)
    out = tmp_path / "reports"
    args = ["evaluate", str(checkpoint), "--data", str(internal), "--data", str(external), "--out", str(out), "--record"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert set(reports) == {"cxr3-internal/test", "cxr3-external"}
    assert reports["cxr3-internal/test"]["n"] == 9 and reports["cxr3-external"]["n"] == 6
    assert json.loads((out / "cxr3-internal_test.json").read_text()) == reports["cxr3-internal/test"]
    assert (out / "cxr3-external.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = Checkpoint.load(checkpoint).metrics
    assert recorded["cxr3-external"] == reports["cxr3-external"]
    assert "none" in recorded  # earlier reports of other sets are kept


def test_evaluate_refuses_unknown_class_folder(tmp_path, shared_data, make_checkpoint) -> None:
    checkpoint = tmp_path / "model.pt"
    make_checkpoint("simplecnn", size=32, classes=["covid", "normal"]).save(checkpoint)
    data = _subset(tmp_path / "set", shared_data / "cxr3-external", 1)
    result = CliRunner().invoke(main, ["evaluate", str(checkpoint), "--data", str(data)])
    assert result.exit_code != 0
    assert "pneumonia" in str(result.exception) and "not among the model's classes" in str(result.exception)
