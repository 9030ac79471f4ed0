"""Small JPEG thumbnails of the inputs for the report page, written while the run decodes them.

The page shows 1,000 inputs; linking the full-size radiographs would make the browser decode
gigapixels. A thumbnail is made from the image the run already decoded (no second read):
reduced to gray and shrunk first, then windowed for display, so its cost does not grow with
the source resolution.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path, PurePath

import cv2
import numpy as np

from cxr_infer.overlay import to_display
from cxr_infer.preprocess import to_gray

SIDE = 192  # pixels on the long side: sharp at 64 px on a 3x screen, and in the page's 3x hover zoom
JPEG_QUALITY = 82
RESIZABLE = (np.uint8, np.uint16, np.float32)  # dtypes cv2.resize takes; others are converted first


def thumbnail(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """An 8-bit gray image of at most ``side`` pixels on the long side, windowed for display."""
    gray = to_gray(np.asarray(image))
    if gray.dtype not in RESIZABLE:
        gray = gray.astype(np.float32)
    height, width = gray.shape
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return to_display(gray)


def write_jpeg(path: Path, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write a JPEG, creating parent folders; the error names the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    encoded.tofile(path)


class Thumbnails:
    """Writes one thumbnail per classified input under ``folder`` and remembers where.

    ``name_of(source)`` gives the input's file name below the folder (the run's overlay names,
    so thumbnails keep the inputs' folder structure and never leave the folder); the suffix
    becomes ``.jpg``.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._written: dict[str, Path] = {}
        self._lock = threading.Lock()

    def annotator(self, name_of: Callable[[str], PurePath]) -> Callable[..., dict]:
        """A run annotator (worker thread) that writes the thumbnail and adds no row field."""

        def thumbnail_annotator(prediction, image: np.ndarray) -> dict:
            path = self.folder / name_of(prediction.source).with_suffix(".jpg")
            write_jpeg(path, thumbnail(image))
            with self._lock:
                self._written[prediction.source] = path
            return {}

        return thumbnail_annotator

    def of(self, source: str) -> Path | None:
        with self._lock:
            return self._written.get(source)
