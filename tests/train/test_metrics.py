"""Metrics against hand-computed values (numpy/scikit-learn only)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cxr_infer.metrics import classification_metrics, expected_calibration_error, format_metrics

CLASSES = ["covid", "normal", "pneumonia"]


def test_hand_computed_example() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    )
    report = classification_metrics(y, probs, CLASSES)
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 2]]
    assert report["per_class"]["covid"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report["per_class"]["normal"]["precision"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert report["macro_recall"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert report["roc_auc"]["pneumonia"] == 1.0
    json.dumps(report)  # plain JSON, for checkpoints and ONNX metadata


def test_absent_class_has_no_auc_and_counts_in_macro() -> None:
    y = np.array([0, 0, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]])
    report = classification_metrics(y, probs, CLASSES)
    assert report["roc_auc"]["normal"] is None
    assert report["roc_auc_macro"] == 1.0
    assert report["per_class"]["normal"]["support"] == 0
    assert report["macro_f1"] == pytest.approx(2 / 3)


def test_ece_of_perfectly_calibrated_and_overconfident() -> None:
    y = np.array([0, 1, 0, 1])
    half = np.full((4, 2), 0.5)
    half[:, 0] += 1e-9  # argmax 0, right half of the time at confidence 0.5
    assert expected_calibration_error(y, half) == pytest.approx(0.0, abs=1e-6)
    sure = np.array([[1.0, 0.0]] * 4)
    assert expected_calibration_error(y, sure) == pytest.approx(0.5)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], np.ones((2, 2)), CLASSES)
    with pytest.raises(ValueError, match="labels"):
        classification_metrics([0, 3], np.ones((2, 3)) / 3, CLASSES)


def test_format_lists_every_class_and_the_matrix() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=30)
    text = format_metrics(classification_metrics(rng.integers(0, 3, 30), probs, CLASSES))
    for name in CLASSES:
        assert name in text
    assert "macro-F1" in text and "confusion matrix" in text


def test_metrics_module_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, cxr_infer.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
