"""Verification of an exported model against its checkpoint: the eager reference itself, the
report, and the CLI's exit code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from click.testing import CliRunner

from cxr_train.cli import main
from cxr_train.verify import FP32_TOLERANCES, INT8_TOLERANCES, eager_gradcam, judge, normalize_maps, onnx_gradcam, verify
from tests.data_root import DATA

VAL = DATA / "cxr3-internal" / "val"


def test_eager_gradcam_matches_the_closed_form_of_a_gap_linear_head():
    """For GAP -> Linear, d logit_k / d A = W[k] / (h w) everywhere: Grad-CAM is known exactly."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2))
    network = nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)).eval()
    images = torch.rand(2, 1, 32, 32)
    logits, maps = eager_gradcam(network, "0", images)
    with torch.no_grad():
        expected_logits = network(images)
        activations = trunk(images)
        weights = network[3].weight / activations[0, 0].numel()
        cams = torch.relu(torch.einsum("kc,nchw->nkhw", weights, activations)).numpy()
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps, normalize_maps(cams), atol=1e-5)


def test_onnx_formula_agrees_with_the_eager_reference_on_the_same_tensors():
    rng = np.random.default_rng(0)
    activations = rng.random((2, 4, 3, 3), dtype=np.float32)
    gradients = rng.standard_normal((2, 3, 4, 3, 3), dtype=np.float32)
    maps = onnx_gradcam(activations, gradients)
    assert maps.shape == (2, 3, 3, 3) and maps.min() >= 0 and maps.max() <= 1
    weights = gradients.mean(axis=(3, 4))
    k_one = np.maximum((weights[1, 2][:, None, None] * activations[1]).sum(0), 0)
    np.testing.assert_allclose(maps[1, 2], normalize_maps(k_one), atol=1e-6)


@pytest.mark.data
def test_verify_report_on_real_images(tiny_model_path, tiny_checkpoint_path):
    report = verify(tiny_model_path, tiny_checkpoint_path, VAL, limit=6)
    assert report["images"] == 6 and report["failures"] == []
    assert report["logits_rel"] <= 1e-4 and report["gradcam"] <= 1e-3
    assert len(report["gradcam_per_class"]) == 3 and report["top1_agreement"] == 1.0


@pytest.mark.data
def test_cli_passes_and_prints_json(tiny_plain_model_path, tiny_checkpoint_path, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        main, ["verify", str(tiny_plain_model_path), str(tiny_checkpoint_path), "--data", str(VAL), "--limit", "3", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["images"] == 3 and "gradcam" not in report and report["failures"] == []


@pytest.mark.data
def test_cli_fails_beyond_tolerance(tiny_model_path, make_checkpoint, tmp_path):
    """Other weights under the same contract must be caught, and the exit code says so."""
    other = tmp_path / "other.pt"
    make_checkpoint("simplecnn", seed=7).save(other)
    result = CliRunner().invoke(main, ["verify", str(tiny_model_path), str(other), "--data", str(VAL), "--limit", "3"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "logits_rel" in result.output


def test_int8_is_judged_on_decisions_and_the_predicted_map():
    report = {"logits_rel": 0.2, "probs": 0.3, "gradcam": 1.0, "gradcam_predicted": 0.2, "top1_agreement": 0.96}
    assert judge(report, INT8_TOLERANCES) == ["top1_agreement 0.9600 < 0.97"]
    assert judge({**report, "top1_agreement": 0.99}, INT8_TOLERANCES) == []
    assert [line.split()[0] for line in judge(report, FP32_TOLERANCES)] == ["logits_rel", "probs", "gradcam", "gradcam_predicted"]
