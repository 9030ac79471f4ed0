"""Leak check for split folders (``cxr-train check-splits``).

The same radiograph in train and test inflates every figure computed on test. Two checks, on
every pair of images from different splits (or, for a folder without splits, every pair):

- exact: the same file content (sha256);
- near: a 16x16 average hash within ``max_hamming`` of 256 bits **and** a 32x32 thumbnail
  correlation of at least ``min_corr`` (the same rule the shared data set was deduplicated
  with), which catches re-encoded, resized or slightly re-windowed copies.

Thumbnails go through :func:`cxr_infer.preprocess.preprocess`, so the comparison ignores the
exposure and bit-depth differences the model ignores too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_infer.preprocess import PreprocessSpec, preprocess
from cxr_infer.readers import available_readers, read_image
from cxr_train.data import IMAGE_EXTENSIONS, split_folders

HASH_SPEC = PreprocessSpec(size=16)
THUMB_SPEC = PreprocessSpec(size=32)


@dataclass(frozen=True)
class Fingerprints:
    """Per image: path relative to the checked folder, split group, sha256, hash bits, thumbnail."""

    paths: list[str]
    groups: np.ndarray
    sha256: list[str]
    bits: np.ndarray  # (N, 256) float32 of 0/1
    thumbs: np.ndarray  # (N, 1024) zero-mean, unit-norm


@dataclass(frozen=True)
class Pair:
    kind: str  # "exact" or "near"
    a: str
    b: str
    hamming: int
    correlation: float


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def fingerprint(root: Path) -> Fingerprints:
    """Decode every image under ``root`` once; splits (train/val/test) become the groups."""
    splits = split_folders(root) or {"": root}
    readers = available_readers()
    paths, groups, digests, bits, thumbs = [], [], [], [], []
    for group, (_, folder) in enumerate(sorted(splits.items())):
        for path in _images(folder):
            image = read_image(path, readers)
            digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
            small = preprocess(image, HASH_SPEC).ravel()
            bits.append(small > small.mean())
            thumb = preprocess(image, THUMB_SPEC).ravel().astype(np.float64)
            thumb -= thumb.mean()
            thumbs.append(thumb / max(np.linalg.norm(thumb), 1e-12))
            paths.append(path.relative_to(root).as_posix())
            groups.append(group)
    if not paths:
        raise ValueError(f"{root}: no images found")
    return Fingerprints(paths, np.asarray(groups), digests, np.asarray(bits, np.float32), np.asarray(thumbs, np.float32))


def find_pairs(prints: Fingerprints, max_hamming: int = 8, min_corr: float = 0.975) -> list[Pair]:
    """Exact and near-identical pairs across groups (within the one group when there are no splits)."""
    n = len(prints.paths)
    single = len(set(prints.groups.tolist())) == 1
    candidates = np.triu(np.ones((n, n), dtype=bool), k=1)
    if not single:
        candidates &= prints.groups[:, None] != prints.groups[None, :]
    bits = prints.bits
    hamming = bits @ (1 - bits).T + (1 - bits) @ bits.T
    correlation = prints.thumbs @ prints.thumbs.T
    content = np.unique(prints.sha256, return_inverse=True)[1]
    same_sha = content[:, None] == content[None, :]
    near = (hamming <= max_hamming) & (correlation >= min_corr)
    pairs = []
    for i, j in zip(*np.nonzero(candidates & (same_sha | near))):
        kind = "exact" if same_sha[i, j] else "near"
        pairs.append(Pair(kind, prints.paths[i], prints.paths[j], int(round(hamming[i, j])), float(correlation[i, j])))
    return pairs
