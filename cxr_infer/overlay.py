"""Heatmap overlays: the Grad-CAM map over the radiograph, with a legend naming class and probability.

The overlay keeps the radiograph's own size and aspect (the legend is drawn inside the image,
not in an added band), so it can stand in for the original in a viewer or be burnt into a DICOM
Secondary Capture of the same geometry.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cxr_infer.preprocess import to_gray

COLORMAP = cv2.COLORMAP_JET
HEAT_WEIGHT = 0.45  # at heat 1 the colour covers 45 % of the pixel; at heat 0 the film shows as is
DISPLAY_PERCENTILES = (0.5, 99.5)
PERCENTILE_SIDE = 256  # display levels are estimated on a grid of at most this many pixels a side


def to_display(image: np.ndarray) -> np.ndarray:
    """Map any decoded radiograph (8/16-bit, float DICOM values, colour) to 8-bit gray for viewing."""
    gray = to_gray(np.asarray(image)).astype(np.float32, copy=False)
    step = -(-max(gray.shape) // PERCENTILE_SIDE)  # a regular subsample: exact enough, 10x faster
    lo, hi = np.percentile(gray[::step, ::step], DISPLAY_PERCENTILES)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((gray - lo) * scale, 0, 255).astype(np.uint8)


def render_overlay(gray: np.ndarray, heatmap: np.ndarray, label: str, probability: float) -> np.ndarray:
    """Return the BGR uint8 overlay of ``heatmap`` (float in [0, 1]) on the radiograph ``gray``.

    ``gray`` may be any decoded image (it is reduced to 8-bit gray); a heatmap of another size
    is resized to the image. The colour weight follows the heat, so cold regions stay readable.
    """
    base = to_display(gray)
    height, width = base.shape
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if heat.shape != base.shape:
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), COLORMAP)
    weight = HEAT_WEIGHT * heat
    overlay = cv2.blendLinear(cv2.cvtColor(base, cv2.COLOR_GRAY2BGR), colour, 1.0 - weight, weight)
    _draw_legend(overlay, f"{label} {probability:.1%}")
    return overlay


def _draw_legend(image: np.ndarray, text: str) -> None:
    """Draw, in the top-left corner, the text and a colour bar from 0 (low) to 1 (high)."""
    height, width = image.shape[:2]
    scale = max(0.4, min(width, height) / 900)
    thickness = max(1, round(scale * 2))
    margin = max(4, round(8 * scale))
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    bar_h = max(6, text_h // 2)
    box_w = min(width, text_w + 2 * margin)
    box_h = min(height, text_h + baseline + bar_h + 3 * margin)
    region = image[:box_h, :box_w]
    region[:] = (region.astype(np.float32) * 0.35).astype(np.uint8)  # darken for contrast
    cv2.putText(image, text, (margin, margin + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    bar_top = margin * 2 + text_h + baseline
    bar_w = max(1, box_w - 2 * margin)
    ramp = np.linspace(0, 255, bar_w, dtype=np.float32).astype(np.uint8)[None, :].repeat(bar_h, axis=0)
    bar = cv2.applyColorMap(ramp, COLORMAP)
    bottom = min(bar_top + bar_h, height)
    if bottom > bar_top:
        image[bar_top:bottom, margin : margin + bar_w] = bar[: bottom - bar_top]


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG, creating parent folders; the error names the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    encoded.tofile(path)
