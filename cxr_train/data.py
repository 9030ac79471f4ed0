"""Labelled data sets on disk and their in-memory tensors.

A labelled set is any folder of ``class_name/*.{png,jpg,...,dcm}``; a folder holding ``train/``,
``val/`` (and ``test/``) such sets is a split collection. Class names are the sorted folder
names, so the class order a model records never depends on the file system.

Images are decoded with :func:`cxr_infer.readers.read_image` and turned into model inputs with
:func:`cxr_infer.preprocess.preprocess`, the very functions inference uses, once per image.
Decoding costs far more than a SimpleCNN step on two cores, so the tensors stay in memory for
all epochs and can be cached to a file keyed by the file list and the preprocessing spec.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxr_infer.preprocess import PreprocessSpec, preprocess
from cxr_infer.readers import DICOM_EXTENSIONS, RASTER_EXTENSIONS, ReadError, available_readers, read_image
from cxr_infer.sources import SourceTable

IMAGE_EXTENSIONS = RASTER_EXTENSIONS + DICOM_EXTENSIONS
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabelledSet:
    """The files of one labelled folder: paths relative to ``root``, labels indexing ``classes``,
    and (when a source table is known) each file's source."""

    root: Path
    classes: list[str]
    files: list[str]
    labels: list[int]
    sources: list[str] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> list[int]:
        """Images per class, in ``classes`` order."""
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes)).tolist()

    def file_list_sha256(self) -> str:
        """sha256 of the sorted ``relative/path<TAB>class`` lines: names exactly what a model saw."""
        lines = sorted(f"{path}\t{self.classes[label]}" for path, label in zip(self.files, self.labels))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def limit_per_class(self, n: int, seed: int) -> "LabelledSet":
        """A seeded random subset of at most ``n`` images per class (for quick runs and tests)."""
        rng = random.Random(seed)
        keep: list[int] = []
        for k in range(len(self.classes)):
            members = [i for i, label in enumerate(self.labels) if label == k]
            keep += sorted(rng.sample(members, min(n, len(members))))
        keep.sort()
        return self.subset(keep)

    def subset(self, keep: list[int]) -> "LabelledSet":
        """The images at the indices ``keep``, with their labels and sources."""
        sources = None if self.sources is None else [self.sources[i] for i in keep]
        return LabelledSet(self.root, self.classes, [self.files[i] for i in keep], [self.labels[i] for i in keep], sources)

    def with_sources(self, table: SourceTable | None) -> "LabelledSet":
        """The same set with each file's source from ``table`` (``None``: sources stay unknown)."""
        if table is None:
            return self
        return LabelledSet(self.root, self.classes, self.files, self.labels, table.sources_of(self.root / f for f in self.files))

    def groups(self) -> dict[tuple[str, str], int]:
        """Image count per (class, source); one ``unknown`` source per class without a table."""
        sources = self.sources or ["unknown"] * len(self)
        counts: dict[tuple[str, str], int] = {}
        for label, source in zip(self.labels, sources):
            key = (self.classes[label], source)
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def discover(root: str | Path, classes: list[str] | None = None) -> LabelledSet:
    """Read a ``class_name/image`` folder. With ``classes`` given (e.g. a model's), folders must
    be among them and labels index that list, so a test set with a missing class still scores."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and any(_is_image(f) for f in d.rglob("*")))
    if not folders:
        raise ValueError(f"{root}: no class folders with images (expected {root}/<class>/<image>)")
    if set(folders) & set(SPLITS):
        raise ValueError(f"{root}: holds split folders {sorted(set(folders) & set(SPLITS))}; pass one split, e.g. {root}/test")
    classes = list(classes) if classes is not None else folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise ValueError(f"{root}: class folders {unknown} are not among the model's classes {classes}")
    files, labels = [], []
    for name in folders:
        for path in sorted(p for p in (root / name).rglob("*") if _is_image(p)):
            files.append(path.relative_to(root).as_posix())
            labels.append(classes.index(name))
    return LabelledSet(root, classes, files, labels)


def split_folders(root: str | Path) -> dict[str, Path]:
    """The ``train``/``val``/``test`` sub-folders that exist under a split collection."""
    root = Path(root)
    return {name: root / name for name in SPLITS if (root / name).is_dir()}


def _load_one(path: Path, spec: PreprocessSpec, readers: dict) -> np.ndarray:
    try:
        return preprocess(read_image(path, readers), spec)
    except (ReadError, ValueError) as error:
        raise ReadError(f"{path}: {error}") from error


def _cache_key(dataset: LabelledSet, spec: PreprocessSpec) -> str:
    text = json.dumps([str(dataset.root.resolve()), dataset.file_list_sha256(), spec.to_json()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_tensors(
    dataset: LabelledSet, spec: PreprocessSpec, cache_dir: Path | None = None, threads: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and preprocess every image once: ``(x (N, 1, S, S) float32, y (N,) int64)``.

    With ``cache_dir`` the result is stored as ``<key>.pt`` there and reused when the same files
    (paths and labels) are loaded with the same preprocessing again.
    """
    cache = cache_dir / f"{_cache_key(dataset, spec)}.pt" if cache_dir is not None else None
    if cache is not None and cache.exists():
        payload = torch.load(cache, weights_only=True)
        return payload["x"], payload["y"]
    readers = available_readers()
    paths = [dataset.root / f for f in dataset.files]
    print(f"decoding {len(paths)} images from {dataset.root} ...", file=sys.stderr)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        arrays = list(pool.map(lambda p: _load_one(p, spec, readers), paths))
    x = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 1, spec.size, spec.size)
    y = torch.tensor(dataset.labels, dtype=torch.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{uuid.uuid4().hex}.tmp")  # writers on several nodes never share one
        torch.save({"x": x, "y": y}, tmp)
        tmp.replace(cache)
    return x, y
