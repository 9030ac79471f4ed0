"""The installed ``cxr-densenet`` plugin end to end: fit, export with in-graph Grad-CAM, verify
against eager Grad-CAM, classify with ``cxr-infer`` (a dozen real radiographs at 64 px)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cxr_infer.cli import main as infer_main
from cxr_infer.plugins import describe_plugins
from cxr_train.checkpoint import Checkpoint
from cxr_train.cli import main as train_main
from cxr_train.models import available_models, get_model_spec
from cxr_train.plugins import get_plugin_manager


def run(command, args: list[str]) -> str:
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


def test_installed_and_listed() -> None:
    spec = get_model_spec("densenet121")
    assert (spec.plugin, spec.target_layer, spec.input_size) == ("densenet", "features", 224)
    assert {"simplecnn", "resnet50", "densenet121"} <= set(available_models())
    row = next(row for row in describe_plugins(get_plugin_manager()) if row["name"] == "densenet")
    assert row["package"] == "cxr-densenet" and row["hooks"] == ["register_models"]


def test_one_channel_in_k_logits_out() -> None:
    network = get_model_spec("densenet121").factory(4, False).eval()
    assert network.features.conv0.in_channels == 1
    assert network(torch.rand(2, 1, 64, 64)).shape == (2, 4)


def test_fit_export_verify_infer(data_dir: Path, tmp_path: Path) -> None:
    """One chain in one test: under ``pytest -n 2`` a shared fixture would be rebuilt by each worker."""
    run(train_main, ["fit", "--data", str(data_dir / "cxr3-internal"), "--model", "densenet121", "--epochs", "1",
                     "--limit-per-class", "4", "--image-size", "64", "--batch-size", "12", "--out", str(tmp_path)])
    trained = tmp_path / "best.pt"
    checkpoint = Checkpoint.load(trained)
    assert (checkpoint.model, checkpoint.target_layer, checkpoint.preprocess.size) == ("densenet121", "features", 64)
    assert checkpoint.classes == ["covid", "normal", "pneumonia"]

    exported = tmp_path / "densenet121.onnx"
    run(train_main, ["export", str(trained), "--out", str(exported)])
    run(train_main, ["verify", str(exported), str(trained), "--data", str(data_dir / "cxr3-internal" / "test"),
                     "--limit", "6", "--json", str(tmp_path / "verify.json")])
    report = json.loads((tmp_path / "verify.json").read_text())
    assert report["images"] == 6 and report["failures"] == []
    assert report["gradcam"] <= 1e-3 and report["logits_rel"] <= 1e-4  # in-graph Grad-CAM equals eager hooks

    images = sorted((data_dir / "cxr3-external" / "normal").glob("*"))[:3]
    out = tmp_path / "infer"
    run(infer_main, [*map(str, images), "--model", str(exported), "--explain", "--out", str(out), "--quiet"])
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == list(map(str, images))
    for row in rows:
        assert row["error"] == "" and Path(row["heatmap"]).is_file()
        assert sum(float(row[f"prob_{name}"]) for name in checkpoint.classes) == pytest.approx(1.0, abs=1e-4)


def test_allow_list_excludes_it(allow_only) -> None:
    allow_only("clahe,fhir")
    assert "densenet121" not in available_models()
    with pytest.raises(KeyError, match="unknown model 'densenet121'"):
        get_model_spec("densenet121")
