"""Scoring a trained model on labelled folders: metrics JSON, confusion-matrix PNG, checkpoint record.

The same :func:`predict_logits` scores the validation split during ``fit`` and the data sets of
``cxr-train evaluate``, so "evaluate reproduces the metrics of fit" holds by construction
(evaluate adds the checkpoint's calibration temperature, and reports the raw ECE beside it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxr_infer.metrics import classification_metrics, expected_calibration_error, format_metrics
from cxr_infer.sources import sources_for
from cxr_train.calibrate import scaled_probs
from cxr_train.checkpoint import Checkpoint
from cxr_train.data import SPLITS, discover, load_tensors


def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Logits (N, K) in float32 on the CPU, in eval mode, without gradients."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            out.append(model(x[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def predict_probs(model: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """The raw softmax (N, K) in float32, as ``fit`` scores each epoch (before any temperature)."""
    return scaled_probs(predict_logits(model, x, device), 1.0)


def dataset_name(path: Path) -> str:
    """``cxr3-internal/test`` for a split folder, ``cxr3-external`` for a plain one."""
    path = path.resolve()
    return f"{path.parent.name}/{path.name}" if path.name in SPLITS else path.name


def plot_confusion(report: dict[str, Any], title: str, path: Path) -> None:
    """A confusion-matrix heat map with counts and row-normalized recall in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(report["confusion_matrix"])
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    classes = report["classes"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(matrix.shape):
        ax.text(j, i, f"{matrix[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center",
                color="white" if rates[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\nmacro-F1 {report['macro_f1']:.3f}, n={report['n']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def score(checkpoint: Checkpoint, logits: torch.Tensor, labels: torch.Tensor, sources: list[str] | None) -> dict[str, Any]:
    """The report of calibrated probabilities (as the exported model gives them), with the ECE
    of the raw softmax beside it when the checkpoint carries a temperature."""
    report = classification_metrics(labels.numpy(), scaled_probs(logits, checkpoint.temperature), checkpoint.classes, sources)
    if checkpoint.calibration:
        raw = scaled_probs(logits, 1.0).astype(np.float64)  # float64, as classification_metrics scores it
        report["ece_uncalibrated"] = expected_calibration_error(labels.numpy(), raw)
        report["temperature"] = checkpoint.temperature
    return report


def evaluate_checkpoint(
    checkpoint_path: Path, data_dirs: list[Path], out: Path | None = None, record: bool = False, threads: int = 1,
    sources: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Score one checkpoint on each labelled folder; returns ``{data-set name: report}``.

    Each report has the per-(class, source) audit when sources are known (``sources`` CSV, or
    the ``MANIFEST.csv`` beside the data). With ``out``, writes ``<name>.json`` and
    ``<name>.png`` per data set there (``/`` in the name becomes ``_``). With ``record``, stores
    the reports in the checkpoint's ``metrics`` (keyed by data-set name, replacing older reports
    of the same set) and saves it in place.
    """
    checkpoint = Checkpoint.load(checkpoint_path)
    model = checkpoint.build()
    reports = {}
    for folder in data_dirs:
        dataset = discover(folder, classes=checkpoint.classes).with_sources(sources_for(folder, sources))
        x, y = load_tensors(dataset, checkpoint.preprocess, threads=threads)
        report = score(checkpoint, predict_logits(model, x, torch.device("cpu")), y, dataset.sources)
        report["file_list_sha256"] = dataset.file_list_sha256()
        name = dataset_name(Path(folder))
        reports[name] = report
        print(f"== {name} ({checkpoint_path})\n{format_metrics(report)}\n", file=sys.stderr)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            stem = name.replace("/", "_")
            (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
            plot_confusion(report, f"{checkpoint.model} on {name}", out / f"{stem}.png")
    if record:
        checkpoint.metrics.update(reports)
        checkpoint.save(checkpoint_path)
    return reports
