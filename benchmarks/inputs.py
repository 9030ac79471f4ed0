"""Real radiographs as benchmark inputs: a labelled folder decoded and preprocessed once.

Timing runs on real preprocessed images (not zeros), and the int8 accuracy check needs the
labels, so both come from one list of ``class_name/*`` files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_infer.preprocess import PreprocessSpec, preprocess
from cxr_infer.readers import DICOM_EXTENSIONS, RASTER_EXTENSIONS, available_readers, read_image

DATA = Path(os.environ.get("CXR_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data")  # as the tests
EXTERNAL = DATA / "cxr3-external"


@dataclass(frozen=True)
class Labelled:
    """Files of a ``class_name/*`` folder, their class names, taken round-robin across classes."""

    files: tuple[Path, ...]
    labels: tuple[str, ...]

    @classmethod
    def discover(cls, root: Path, per_class: int | None = None) -> "Labelled":
        """Sorted files per class folder, interleaved so that any prefix mixes the classes."""
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: labelled folder not found")
        extensions = set(RASTER_EXTENSIONS + DICOM_EXTENSIONS)
        per_folder = {
            folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)[:per_class]
            for folder in sorted(root.iterdir()) if folder.is_dir()
        }
        pairs = [
            (files[i], name)
            for i in range(max(map(len, per_folder.values()), default=0))
            for name, files in per_folder.items() if i < len(files)
        ]
        if not pairs:
            raise FileNotFoundError(f"{root}: no images in class subfolders")
        return cls(tuple(p for p, _ in pairs), tuple(n for _, n in pairs))

    def take(self, n: int) -> "Labelled":
        return Labelled(self.files[:n], self.labels[:n])

    def tensors(self, spec: PreprocessSpec) -> np.ndarray:
        """(N, 1, size, size) float32 model inputs, decoded and preprocessed as inference does."""
        readers = available_readers()
        return np.stack([preprocess(read_image(path, readers), spec) for path in self.files])


def batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """A contiguous batch of ``batch`` images, repeating the available ones if there are fewer."""
    index = np.arange(batch) % len(images)
    return np.ascontiguousarray(images[index])
