"""Temperature scaling: make a probability of 0.99 mean right 99 % of the time.

A network trained with cross-entropy to near-zero training loss is over-confident. One scalar
``T`` fitted on the validation split (minimum negative log-likelihood of ``softmax(logits / T)``)
fixes most of that without changing any decision: the arg-max, and so every accuracy, recall and
F1 figure, stays exactly the same. The exporter folds ``T`` into the ONNX ``probs`` output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxr_infer.metrics import expected_calibration_error
from cxr_train.checkpoint import Checkpoint
from cxr_train.data import LabelledSet


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The ``T`` minimising the NLL of ``softmax(logits / T)`` (optimised over ``log T`` so T > 0)."""
    logits, labels = logits.detach().double(), labels.detach()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, temperature: float, fitted_on: str) -> dict[str, Any]:
    """What goes into the checkpoint (and the ONNX metadata): T and NLL/ECE before and after."""
    y = labels.numpy()

    def figures(t: float) -> tuple[float, float]:
        scaled = logits.double() / t
        probs = torch.softmax(scaled, dim=1).numpy()
        return float(F.cross_entropy(scaled, labels)), expected_calibration_error(y, probs)

    (nll_before, ece_before), (nll_after, ece_after) = figures(1.0), figures(temperature)
    return {"method": "temperature", "temperature": temperature, "fitted_on": fitted_on, "n": int(y.size),
            "nll_before": nll_before, "nll_after": nll_after, "ece_before": ece_before, "ece_after": ece_after}


def calibrate(checkpoint: Checkpoint, logits: torch.Tensor, labels: torch.Tensor, fitted_on: str) -> dict[str, Any]:
    """Fit ``T`` on these (validation) logits and store the report in ``checkpoint.calibration``."""
    if labels.numel() == 0:
        raise ValueError("no validation images to fit the temperature on")
    report = calibration_report(logits, labels, fit_temperature(logits, labels), fitted_on)
    checkpoint.calibration = report
    print(f"temperature {report['temperature']:.3f} fitted on {fitted_on} (n={report['n']}): "
          f"ECE {report['ece_before']:.3f} -> {report['ece_after']:.3f}, NLL {report['nll_before']:.3f} -> "
          f"{report['nll_after']:.3f}", file=sys.stderr)
    return report


def calibrate_file(path: Path, val: LabelledSet, tensors: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """Fit the temperature of the checkpoint at ``path`` on the val split and save it in place,
    with the val report recomputed from the calibrated probabilities.

    Val already chose the epoch; reusing it for one scalar that changes no decision is the
    standard recipe (Guo et al. 2017) and keeps test and external untouched.
    """
    from cxr_train.evaluate import dataset_name, predict_logits, score

    checkpoint = Checkpoint.load(path)
    logits = predict_logits(checkpoint.build(), tensors[0], torch.device("cpu"))
    report = calibrate(checkpoint, logits, tensors[1], dataset_name(val.root))
    checkpoint.metrics[dataset_name(val.root)] = score(checkpoint, logits, tensors[1], val.sources)
    checkpoint.save(path)
    return report


def scaled_probs(logits: np.ndarray | torch.Tensor, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` as float32 numpy: what the exported ``probs`` output computes."""
    return torch.softmax(torch.as_tensor(logits).float() / temperature, dim=1).numpy()
