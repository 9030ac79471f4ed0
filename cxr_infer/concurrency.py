"""How a classifier divides the host's cores between onnxruntime and the image workers.

The workers decode, preprocess and inspect inputs and finish results (Grad-CAM resize,
overlays, DICOM results) in threads: OpenCV and numpy release the GIL in decoding, resizing,
table lookups and encoding, and ``python -m benchmarks pipeline`` measures threads against
processes for this work (threads kept up; see benchmarks/RESULTS.md, "workers").

The rule (``split_threads``):

- up to :data:`SHARED_UP_TO` cores, onnxruntime and the workers each get all of them. A
  worker has work only while a batch is being prepared or finished, so the two overlap in
  time; giving inference fewer threads on 2 cores would halve its speed to save little.
- above that, a quarter of the cores (at least 2) become workers and onnxruntime gets the
  rest, so neither oversubscribes the host. The share follows the per-image costs measured
  on the 2-core host (measurement 5): the pipeline's own work is a fifth (ResNet-50) to a half
  (SimpleCNN) of the session's, and onnxruntime's intra-op scaling flattens well before 16
  threads for 96-128 px images, so a quarter of the cores costs inference little. Not yet
  measured on a 16-core host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SHARED_UP_TO = 4  # at most this many cores: inference and workers share all of them
WORKER_SHARE = 4  # above it: one core in this many becomes a worker


@dataclass(frozen=True)
class ThreadSplit:
    """onnxruntime intra-op threads and image worker threads."""

    intra_op: int
    workers: int


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split_threads(cores: int | None = None) -> ThreadSplit:
    """Divide ``cores`` (default: the usable CPUs) between onnxruntime and the workers."""
    cores = cores or usable_cpus()
    if cores <= SHARED_UP_TO:
        return ThreadSplit(cores, cores)
    workers = max(2, cores // WORKER_SHARE)
    return ThreadSplit(cores - workers, workers)
