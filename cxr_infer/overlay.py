"""Heatmap overlays: the Grad-CAM map over the radiograph, with a legend naming class and probability.

The overlay keeps the radiograph's aspect (the legend is drawn inside the image, not in an added
band). By default it keeps its size too, so it can be burnt into a DICOM Secondary Capture of the
same geometry; the files ``cxr-infer --explain`` writes are made at a display size instead
(:class:`OverlayStyle`: long side 1024 px, JPEG), which is all a viewer shows and costs a
fraction of a full-size PNG to draw and encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from cxr_infer.preprocess import to_gray

COLORMAP = cv2.COLORMAP_JET
HEAT_WEIGHT = 0.45  # at heat 1 the colour covers 45 % of the pixel; at heat 0 the film shows as is
DISPLAY_PERCENTILES = (0.5, 99.5)
PERCENTILE_SIDE = 256  # display levels are estimated on a grid of at most this many pixels a side
DISPLAY_LONG_SIDE = 1024  # overlay files: long side in pixels (a viewer's screen, not the detector's)
# format -> (suffix, OpenCV parameter, lowest, highest, default): JPEG quality or PNG zlib level
FORMATS = {
    "jpg": (".jpg", cv2.IMWRITE_JPEG_QUALITY, 1, 100, 90),
    "png": (".png", cv2.IMWRITE_PNG_COMPRESSION, 0, 9, 1),
}


@dataclass(frozen=True)
class OverlayStyle:
    """How overlay files are written: ``long_side`` in pixels (0: the image's own size; never
    enlarged), ``format`` ``jpg`` or ``png``, and ``quality``: JPEG quality 1-100 (default 90)
    or PNG zlib level 0-9 (default 1, with the ``SUB`` row filter: lossless and fast).

    JPEG at quality 90 encodes a 320 x 390 overlay about 12x faster than PNG at level 1 and
    into a file about 7x smaller (``python -m benchmarks pipeline`` measures both).
    """

    long_side: int = DISPLAY_LONG_SIDE
    format: str = "jpg"
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"overlay format {self.format!r} is not one of {', '.join(FORMATS)}")
        _, _, low, high, _ = FORMATS[self.format]
        if self.quality is not None and not low <= self.quality <= high:
            raise ValueError(f"overlay quality {self.quality} is out of range for {self.format} ({low}-{high})")
        if self.long_side < 0:
            raise ValueError(f"overlay size must be 0 (the image's own) or a positive long side, got {self.long_side}")

    @property
    def suffix(self) -> str:
        return FORMATS[self.format][0]

    def encode(self, image: np.ndarray) -> np.ndarray:
        """The encoded file's bytes (uint8 array)."""
        suffix, parameter, _, _, default = FORMATS[self.format]
        params = [parameter, default if self.quality is None else self.quality]
        if self.format == "png":
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]  # 1.5x faster than adaptive filters
        ok, encoded = cv2.imencode(suffix, image, params)
        if not ok:
            raise OSError(f"{self.format} encoding failed")
        return encoded


def to_display(image: np.ndarray) -> np.ndarray:
    """Map any decoded radiograph (8/16-bit, float DICOM values, colour) to 8-bit gray for viewing."""
    gray = to_gray(np.asarray(image))
    step = -(-max(gray.shape) // PERCENTILE_SIDE)  # a regular subsample: exact enough, 10x faster
    lo, hi = np.percentile(gray[::step, ::step], DISPLAY_PERCENTILES)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    if gray.dtype == np.uint8:  # one table lookup per pixel instead of float arithmetic
        levels = np.arange(256, dtype=np.float32)
        return cv2.LUT(gray, np.clip((levels - lo) * scale, 0, 255).astype(np.uint8))
    return np.clip((gray.astype(np.float32, copy=False) - lo) * scale, 0, 255).astype(np.uint8)


def render_overlay(gray: np.ndarray, heatmap: np.ndarray, label: str, probability: float, long_side: int = 0) -> np.ndarray:
    """Return the BGR uint8 overlay of ``heatmap`` (float in [0, 1]) on the radiograph ``gray``.

    ``gray`` may be any decoded image (it is reduced to 8-bit gray); a heatmap of another size
    is resized to the image. The colour weight follows the heat, so cold regions stay readable.
    With ``long_side`` > 0 an image whose long side is longer is drawn scaled down to it.
    """
    base = shrink_to(to_display(gray), long_side)
    height, width = base.shape
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != base.shape:
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    level = cv2.convertScaleAbs(np.clip(heat, 0.0, 1.0), alpha=255.0)  # heat as 0..255
    overlay = np.take(_blend_table(), (level.astype(np.uint16) << 8) | base, axis=0)
    _draw_legend(overlay, f"{label} {probability:.1%}")
    return overlay


def shrink_to(image: np.ndarray, long_side: int) -> np.ndarray:
    """``image`` scaled down (area interpolation) so its long side is at most ``long_side``;
    0, or an image already that small, comes back unchanged: never enlarged."""
    height, width = image.shape[:2]
    if not 0 < long_side < max(height, width):
        return image
    scale = long_side / max(height, width)
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


@cache
def _blend_table() -> np.ndarray:
    """(256 * 256, 3) BGR of every (heat level, film level) pair: ``film * (1 - w) + colour * w``
    with ``w = HEAT_WEIGHT * heat``. One lookup per pixel replaces colour mapping and float
    blending (2-3x faster); at heat 0 the film comes out unchanged."""
    colours = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], COLORMAP)[:, 0, :].astype(np.float32)
    weight = HEAT_WEIGHT * np.arange(256, dtype=np.float32)[:, None, None] / 255.0
    film = np.arange(256, dtype=np.float32)[None, :, None]
    table = film * (1.0 - weight) + colours[:, None, :] * weight
    return np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(256 * 256, 3)


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


def write_overlay(path: Path, image: np.ndarray, style: OverlayStyle = OverlayStyle()) -> None:
    """Write an overlay in ``style``'s format, creating parent folders; the error names the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        encoded = style.encode(image)
    except OSError as error:
        raise OSError(f"{path}: {error}") from None
    encoded.tofile(path)
