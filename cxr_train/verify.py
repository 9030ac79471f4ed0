"""Check an exported ONNX file against its checkpoint in eager PyTorch, on real images.

The reference Grad-CAM is computed the way pytorch-grad-cam does it: a forward hook keeps the
target layer's output, a tensor hook catches its gradient during ``backward()``, once per class.
It shares nothing with the exported graph (which computes gradients with ``autograd.grad`` under
tracing), so agreement means the in-graph gradients are right, not merely self-consistent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from cxr_infer.contract import ACTIVATIONS, GRADIENTS, INPUT, LOGITS, PROBS, ModelInfo
from cxr_infer.gradcam import class_maps
from cxr_infer.session import open_session, read_contract
from cxr_train.calibrate import scaled_probs
from cxr_train.checkpoint import Checkpoint
from cxr_train.data import discover, load_tensors
from cxr_train.export import target_module

NORMALIZE_EPS = 1e-7
BATCH = 8


@dataclass(frozen=True)
class Tolerances:
    """Accepted differences (``None``: not judged). ``logits_rel`` is relative to the largest
    |logit|, ``probs`` absolute, ``gradcam`` the largest difference of min-max-normalized maps
    over every class, ``gradcam_predicted`` the same over the predicted class only (the map a
    user is shown), ``top1_agreement`` the smallest accepted share of equal predictions."""

    logits_rel: float | None = 1e-4
    probs: float | None = 1e-4
    gradcam: float | None = 1e-3
    gradcam_predicted: float | None = 1e-3
    top1_agreement: float | None = None


FP32_TOLERANCES = Tolerances()
# int8 is judged on decisions, not digits. The map of a class the model rejects is weak and its
# normalization amplifies quantization noise (a 3x3 map flips its peak), so only the predicted
# class's map is judged; measured on the trained ResNet-50 (96 px): max 0.21, median 0.05.
INT8_TOLERANCES = Tolerances(logits_rel=None, probs=None, gradcam=None, gradcam_predicted=0.35, top1_agreement=0.97)


def normalize_maps(cams: np.ndarray) -> np.ndarray:
    """Min-max normalize each (h, w) map to [0, 1] (pytorch-grad-cam's ``scale_cam_image`` rule)."""
    low = cams.min(axis=(-2, -1), keepdims=True)
    shifted = cams - low
    return shifted / (NORMALIZE_EPS + shifted.max(axis=(-2, -1), keepdims=True))


def eager_gradcam(network: nn.Module, target_layer: str, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) and normalized Grad-CAM maps (N, K, h, w) for every class, with hooks.

    One forward pass; one ``backward()`` per class with the graph retained, as pytorch-grad-cam
    runs it per target.
    """
    layer = target_module(network.eval(), target_layer)
    store: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        store["activations"] = output
        output.register_hook(lambda grad: store.__setitem__("gradients", grad))

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = network(images.clone().requires_grad_(True))
            cams = []
            for k in range(logits.shape[1]):
                network.zero_grad(set_to_none=True)
                logits[:, k].sum().backward(retain_graph=k + 1 < logits.shape[1])
                weights = store["gradients"].mean(dim=(2, 3), keepdim=True)
                cams.append(torch.relu((weights * store["activations"]).sum(dim=1)).detach())
    finally:
        handle.remove()
    return logits.detach().numpy(), normalize_maps(torch.stack(cams, 1).numpy())


def onnx_gradcam(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Normalized maps (N, K, h, w) from the exported outputs, by the formula ``cxr-infer`` ships."""
    every_class = [class_maps(activations, gradients, np.full(len(activations), k)) for k in range(gradients.shape[1])]
    return normalize_maps(np.stack(every_class, 1))


def load_model(path: str | Path) -> tuple[ort.InferenceSession, ModelInfo]:
    """A CPU session on ``path``, opened as ``cxr_infer`` opens it, and its validated contract."""
    session = open_session(Path(path), "cpu")
    return session, read_contract(session, Path(path))


def run_session(session: ort.InferenceSession, images: np.ndarray, batch: int = BATCH) -> dict[str, np.ndarray]:
    """All outputs of ``session`` over ``images``, in batches, concatenated by name."""
    names = [o.name for o in session.get_outputs()]
    parts = [session.run(names, {INPUT: images[i : i + batch]}) for i in range(0, len(images), batch)]
    return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}


def compare(
    session: ort.InferenceSession, network: nn.Module, target_layer: str, images: np.ndarray, batch: int = BATCH,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Differences between ``session`` and the eager network on ``images`` (N, 1, S, S).

    ``gradcam`` is absent when the model has no explain outputs.
    """
    outputs = run_session(session, images, batch)
    ref_logits, ref_maps = [], []
    for i in range(0, len(images), batch):
        logits, maps = eager_gradcam(network, target_layer, torch.from_numpy(images[i : i + batch]))
        ref_logits.append(logits)
        ref_maps.append(maps)
    logits = np.concatenate(ref_logits)
    scale = max(float(np.abs(logits).max()), NORMALIZE_EPS)
    report: dict[str, Any] = {
        "images": int(len(images)),
        "logits_rel": float(np.abs(outputs[LOGITS] - logits).max() / scale),
        "probs": float(np.abs(outputs[PROBS] - scaled_probs(logits, temperature)).max()),
        "top1_agreement": float((outputs[LOGITS].argmax(1) == logits.argmax(1)).mean()),
    }
    if ACTIVATIONS in outputs and GRADIENTS in outputs:
        diff = np.abs(onnx_gradcam(outputs[ACTIVATIONS], outputs[GRADIENTS]) - np.concatenate(ref_maps))
        report["gradcam"] = float(diff.max())
        report["gradcam_per_class"] = diff.max(axis=(0, 2, 3)).astype(float).tolist()
        report["gradcam_predicted"] = float(diff[np.arange(len(diff)), logits.argmax(1)].max())
        report["gradcam_mean"] = float(diff.mean())
    return report


def judge(report: dict[str, Any], tolerances: Tolerances) -> list[str]:
    """The tolerances ``report`` misses, as readable lines (empty when it passes)."""
    failures = []
    for key, limit in asdict(tolerances).items():
        if limit is None or key not in report:
            continue
        if key == "top1_agreement" and report[key] < limit:
            failures.append(f"{key} {report[key]:.4f} < {limit:g}")
        elif key != "top1_agreement" and report[key] > limit:
            failures.append(f"{key} {report[key]:.3g} > {limit:g}")
    return failures


def verify(
    model_path: str | Path,
    checkpoint_path: str | Path,
    data: str | Path,
    limit: int | None = None,
    tolerances: Tolerances | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare ``model_path`` with ``checkpoint_path`` on up to ``limit`` images of the labelled
    folder ``data`` (a seeded, class-balanced pick). ``failures`` lists exceeded tolerances;
    defaults are strict for float models and decision-level for quantized ones."""
    session, info = load_model(model_path)
    checkpoint = Checkpoint.load(checkpoint_path)
    if list(info.classes) != list(checkpoint.classes) or info.preprocess != checkpoint.preprocess:
        raise ValueError(f"{model_path}: classes/preprocessing differ from checkpoint {checkpoint_path}")
    dataset = discover(data, checkpoint.classes)
    if limit is not None:
        dataset = dataset.limit_per_class(max(1, -(-limit // len(dataset.classes))), seed)
    images, _labels = load_tensors(dataset, checkpoint.preprocess)
    images = images[:limit] if limit is not None else images
    tolerances = tolerances or (INT8_TOLERANCES if info.quantized else FP32_TOLERANCES)
    report = compare(session, checkpoint.build(), checkpoint.target_layer, images.numpy(), temperature=checkpoint.temperature)
    report.update(model=str(model_path), checkpoint=str(checkpoint_path), data=str(data), quantized=info.quantized)
    report["tolerances"] = asdict(tolerances)
    report["failures"] = judge(report, tolerances)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a few readable lines (the CLI prints these, then the JSON)."""
    lines = [
        f"{report['model']} vs {report['checkpoint']} on {report['images']} images of {report['data']}",
        f"  logits max rel diff   {report['logits_rel']:.3g}",
        f"  probs max abs diff    {report['probs']:.3g}",
        f"  top-1 agreement       {report['top1_agreement']:.4f}",
    ]
    if "gradcam" in report:
        per_class = ", ".join(f"{d:.3g}" for d in report["gradcam_per_class"])
        lines.append(f"  Grad-CAM max abs diff {report['gradcam']:.3g} (per class: {per_class}; mean {report['gradcam_mean']:.3g})")
        lines.append(f"  Grad-CAM predicted    {report['gradcam_predicted']:.3g} (max diff of the predicted class's maps)")
    else:
        lines.append("  Grad-CAM              not exported (no explain outputs)")
    lines.append("  PASS" if not report["failures"] else "  FAIL: " + "; ".join(report["failures"]))
    return "\n".join(lines)

