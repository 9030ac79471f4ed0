"""The one preprocessing function of the project.

Training (``cxr_train``) and inference (``cxr_infer``) both call :func:`preprocess`; there is no
second implementation that could drift. The parameters travel inside every exported ONNX file
(metadata key ``cxr.preprocess``), so inference never guesses them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from cxr_infer import errors
from cxr_infer.readers import ReadError

PREPROCESS_VERSION = 1
RESIZE_RULES = ("stretch",)
INTENSITY_RULES = ("percentile", "equalize")
_CV_COLOR_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_BAND_ROWS = 256  # rows composited at once (bounds the float copies of a large BGRA image)


class UnusableImage(ReadError):
    """A decoded image no model input can be made from (too small, non-finite pixels): a
    :class:`ReadError` with its kind, so the input's row names its problem, not an internal error."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded grayscale radiograph becomes a model input.

    ``stretch`` resizes the whole image to ``size`` x ``size``: a centre crop would cut lung
    fields off wide or tall films, while a mild aspect change is harmless to a CNN trained on it.
    ``percentile`` maps the ``low``..``high`` percentiles to 0..1 (clipped) so that exposure,
    bit depth and the window a source chose do not become features the model can learn.
    ``equalize`` goes further: each pixel becomes its rank among the image's pixels (histogram
    equalization, after the same percentile clip), so every image has the same flat intensity
    histogram and a source's contrast curve or film processing is not a feature either.
    """

    size: int = 224
    resize: str = "stretch"
    intensity: str = "percentile"
    low: float = 0.5
    high: float = 99.5
    version: int = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        problems = []
        if self.version != PREPROCESS_VERSION:
            problems.append(f"version {self.version} (this toolkit knows {PREPROCESS_VERSION})")
        if self.resize not in RESIZE_RULES:
            problems.append(f"resize rule {self.resize!r} (known: {', '.join(RESIZE_RULES)})")
        if self.intensity not in INTENSITY_RULES:
            problems.append(f"intensity rule {self.intensity!r} (known: {', '.join(INTENSITY_RULES)})")
        if not 8 <= self.size <= 4096:
            problems.append(f"size {self.size}")
        if not 0 <= self.low < self.high <= 100:
            problems.append(f"percentiles {self.low}..{self.high}")
        if problems:
            raise ValueError("unsupported preprocessing: " + "; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessSpec":
        """Parse the ``cxr.preprocess`` metadata; unknown keys are an error, not ignored."""
        data = json.loads(text)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unsupported preprocessing keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Reduce a decoded image (H x W, H x W x 3 BGR, or H x W x 4 BGRA) to one channel.

    Alpha is composited on black, as a viewer showing the radiograph on a dark background would.
    """
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected a 2-D image or 1/3/4 channels, got shape {image.shape}")
    if image.shape[2] == 1:
        return image[:, :, 0]
    if image.shape[2] == 4:
        return _composite_on_black(image)
    if image.dtype not in _CV_COLOR_DTYPES:  # signed or 32/64-bit colour: OpenCV converts only these
        image = image.astype(np.float32)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _composite_on_black(image: np.ndarray) -> np.ndarray:
    """Gray of a BGRA image times its alpha, in float32, a band of rows at a time: done at once,
    the float copies of a 36-MP 16-bit BGRA PNG (under the pixel limit) took 1.5 GB."""
    full_scale = np.iinfo(image.dtype).max if image.dtype.kind == "u" else 1.0
    gray = np.empty(image.shape[:2], np.float32)
    for top in range(0, image.shape[0], _BAND_ROWS):
        band = image[top : top + _BAND_ROWS]
        alpha = band[:, :, 3:4].astype(np.float32) / full_scale
        gray[top : top + _BAND_ROWS] = cv2.cvtColor(band[:, :, :3].astype(np.float32) * alpha, cv2.COLOR_BGR2GRAY)
    return gray


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Return the (1, size, size) float32 model input in [0, 1] for one decoded image.

    Accepts any integer or float dtype (8/16-bit PNG, 12-bit DICOM, ...). Resizing happens
    before the percentile step so its cost does not grow with the source resolution.
    """
    image = np.asarray(image)
    if image.dtype.kind not in "uif":  # complex, bool, text, objects: no pixel values to normalise
        raise ValueError(f"image pixels must be integers or real floats, got dtype {image.dtype}")
    gray = to_gray(image)
    if gray.size == 0 or min(gray.shape) < 2:
        height, width = gray.shape[:2]
        raise UnusableImage(f"image of {width}x{height} pixels is too small to classify (2 pixels a side at least)", errors.UNSUPPORTED)
    if gray.dtype.kind == "f" and not np.isfinite(gray).all():  # resizing could average it away
        raise UnusableImage("image contains non-finite pixel values (NaN or infinity)", errors.CORRUPT)
    small = cv2.resize(gray.astype(np.float32, copy=False), (spec.size, spec.size), interpolation=cv2.INTER_AREA)
    lo, hi = np.percentile(small, (spec.low, spec.high))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise UnusableImage("image contains non-finite pixel values (NaN or infinity)", errors.CORRUPT)
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((small - lo) * scale, 0.0, 1.0)
    if spec.intensity == "equalize":
        out = equalize(out)
    return out[None, :, :].astype(np.float32, copy=False)


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram equalization of a float image in [0, 1]: each value becomes the fraction of
    pixels at or below it (ties share one value), so it works at any bit depth, unlike 8-bit
    ``cv2.equalizeHist``. A constant image stays constant (all zeros)."""
    flat = image.ravel()
    values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if values.size < 2:
        return np.zeros_like(image)
    cdf = np.cumsum(counts).astype(np.float64)
    levels = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    return levels[inverse].reshape(image.shape).astype(np.float32)
