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

import numpy as np

from cxr_infer.overlay import OverlayStyle, shrink_to, to_display, write_overlay
from cxr_infer.preprocess import to_gray

SIDE = 192  # pixels on the long side: sharp at 64 px on a 3x screen, and in the page's 3x hover zoom
STYLE = OverlayStyle(SIDE, "jpg", 82)  # thumbnail files: written as overlay files are, JPEG quality 82
RESIZABLE = (np.uint8, np.uint16, np.float32)  # dtypes cv2.resize takes; others are converted first


def thumbnail(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """An 8-bit gray image of at most ``side`` pixels on the long side, windowed for display."""
    gray = to_gray(np.asarray(image))
    if gray.dtype not in RESIZABLE:
        gray = gray.astype(np.float32)
    return to_display(shrink_to(gray, side))


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
            write_overlay(path, thumbnail(image), STYLE)
            with self._lock:
                self._written[prediction.source] = path
            return {}

        return thumbnail_annotator

    def of(self, source: str) -> Path | None:
        with self._lock:
            return self._written.get(source)
