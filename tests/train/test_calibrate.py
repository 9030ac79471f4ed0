"""Temperature scaling: fitted on val, folded into the exported ``probs``, decisions unchanged."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cxr_infer.metrics import expected_calibration_error
from cxr_train.calibrate import calibrate, calibration_report, fit_temperature, scaled_probs
from cxr_train.export import export_onnx, read_info


def _overconfident(n: int = 20000, true_t: float = 2.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from softmax(logits / true_t): the right temperature is true_t."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=generator) * 4
    labels = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_the_fitted_temperature_is_the_true_one_and_lowers_ece() -> None:
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.06)
    report = calibration_report(logits, labels, t, "synthetic")
    assert report["ece_after"] < 0.02 < 0.1 < report["ece_before"]
    assert report["nll_after"] < report["nll_before"]
    # one scalar: the arg-max (every accuracy, recall, F1) cannot change
    assert (scaled_probs(logits, t).argmax(1) == logits.argmax(1).numpy()).all()


def test_an_underconfident_model_gets_a_temperature_below_one() -> None:
    logits, labels = _overconfident(true_t=0.5)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.06)


def test_export_folds_the_temperature_into_probs(make_checkpoint, tmp_path) -> None:
    checkpoint = make_checkpoint("simplecnn", size=32)
    logits, labels = _overconfident(n=200)
    calibrate(checkpoint, logits, labels, "synthetic")
    t = checkpoint.temperature
    assert t != 1.0
    out = tmp_path / "calibrated.onnx"
    export_onnx(checkpoint, out, explain=True)
    assert read_info(out).calibration["temperature"] == pytest.approx(t)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    raw, probs = session.run(["logits", "probs"], {"image": image})
    np.testing.assert_allclose(probs, scaled_probs(raw, t), atol=1e-6)
    assert expected_calibration_error(np.zeros(3, int), probs) >= 0  # a valid distribution per row
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)


def test_calibrate_command_stores_the_temperature_in_the_checkpoint(make_checkpoint, tmp_path) -> None:
    import json

    import cv2
    from click.testing import CliRunner

    from cxr_train.checkpoint import Checkpoint
    from cxr_train.cli import main

    rng = np.random.default_rng(1)
    for k, name in enumerate(("covid", "normal", "pneumonia")):
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(tmp_path / "val" / name / f"{i}.png"), (rng.random((40, 40)) * 80 + 60 * k).astype(np.uint8))
    path = tmp_path / "model.pt"
    make_checkpoint("simplecnn", size=32).save(path)
    result = CliRunner().invoke(main, ["calibrate", str(path), "--data", str(tmp_path / "val"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    saved = Checkpoint.load(path)
    assert saved.calibration == report and report["n"] == 12 and report["temperature"] > 0
    assert saved.metrics[report["fitted_on"]]["temperature"] == pytest.approx(report["temperature"])
