"""Grad-CAM in numpy from the ``activations`` and ``gradients`` the exported graph outputs.

The graph already holds d logits[:, k] / d activations for every class k, so explaining costs
one forward pass and a weighted sum here: no backward pass, no torch.
"""

from __future__ import annotations

import cv2
import numpy as np


def class_maps(activations: np.ndarray, gradients: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """Raw Grad-CAM maps (N, h, w) for one class per image: ``relu(sum_c mean_hw(grad) * act)``.

    ``activations`` is (N, C, h, w), ``gradients`` (N, K, C, h, w) and ``class_index`` (N,)
    picks the class explained for each image.
    """
    picked = gradients[np.arange(len(class_index)), class_index]  # (N, C, h, w)
    weights = picked.mean(axis=(2, 3))  # (N, C): the channel importances
    cams = np.einsum("nc,nchw->nhw", weights, activations)
    return np.maximum(cams, 0.0).astype(np.float32, copy=False)


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one raw map to the decoded image's size and scale it to [0, 1] (float32).

    The model saw the whole image stretched to a square, so the map stretches back over the
    whole image. A map that is zero everywhere (no evidence for the class) stays zero.
    """
    resized = cv2.resize(cam.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR)
    peak = float(resized.max())
    return resized / peak if peak > 0 else np.zeros_like(resized)
