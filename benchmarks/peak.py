"""The machine's measured float32 matrix-multiply peak, the yardstick for a model's GFLOP/s.

A vendor's nominal peak is rarely reachable; a large square SGEMM through the installed BLAS
(and through PyTorch when it is installed) is the best the same cores reach in practice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.machine import installed
from benchmarks.timing import interleave


def matmul_variants(size: int, threads: int) -> dict[str, Callable[[], object]]:
    """One SGEMM of ``size`` x ``size`` per call for numpy, and for torch when installed."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))

    def numpy_matmul() -> object:
        with threadpool_limits(threads):
            return a @ b

    variants: dict[str, Callable[[], object]] = {"numpy": numpy_matmul}
    if not installed("torch"):
        return variants
    import torch

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    variants["torch"] = lambda: torch.matmul(ta, tb)
    return variants


def measure_peak(threads: int, repeats: int, size: int = 2048) -> dict[str, list[float]]:
    """GFLOP/s samples per library; the caller takes the best median as the machine's peak."""
    flops = 2.0 * size**3
    return interleave(matmul_variants(size, threads), flops / 1e9, repeats)
