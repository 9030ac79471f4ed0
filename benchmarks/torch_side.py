"""The PyTorch baselines: eager forward under ``inference_mode`` and eager hook-based Grad-CAM.

Imported only when torch is installed. The Grad-CAM baseline is the verification step's own
(``cxr_train.verify.eager_gradcam``), so the benchmark times exactly what parity is checked
against, restricted to each image's predicted class: one backward pass, as pytorch-grad-cam
runs with its default target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxr_train.checkpoint import Checkpoint
from cxr_train.verify import eager_gradcam as verify_gradcam


class PredictedClass(nn.Module):
    """The network's logit of each image's predicted class (N, 1): Grad-CAM of one target."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.network(images)
        return logits.gather(1, logits.argmax(dim=1, keepdim=True))


@dataclass(frozen=True)
class Eager:
    """A checkpoint's network in eval mode on the CPU, and the layer Grad-CAM explains."""

    network: nn.Module
    target_layer: str


def load(checkpoint: Path) -> Eager:
    """Build the network once per model (all batch sizes share it)."""
    loaded = Checkpoint.load(checkpoint)
    return Eager(loaded.build(), loaded.target_layer)


def set_threads(threads: int) -> None:
    """Give PyTorch the same intra-op thread count as onnxruntime."""
    torch.set_num_threads(threads)


def eager_forward(eager: Eager, batch: np.ndarray) -> Callable[[], object]:
    """One eager forward pass per call, as a PyTorch user runs inference."""
    tensor = torch.from_numpy(batch)

    def run() -> object:
        with torch.inference_mode():
            return eager.network(tensor)

    return run


def eager_gradcam(eager: Eager, batch: np.ndarray) -> Callable[[], object]:
    """Eager Grad-CAM of the predicted class per call: forward, then backward through hooks."""
    tensor = torch.from_numpy(batch)
    scored = PredictedClass(eager.network).eval()
    return lambda: verify_gradcam(scored, f"network.{eager.target_layer}", tensor)


def eager_gradcam_all(eager: Eager, batch: np.ndarray) -> Callable[[], object]:
    """Eager Grad-CAM of every class per call: one forward, one backward per class, as the
    verification step runs it. This is what one run of the explain graph delivers
    (``gradients`` holds every class)."""
    tensor = torch.from_numpy(batch)
    return lambda: verify_gradcam(eager.network, eager.target_layer, tensor)
