"""Interleaved timing and robust summaries.

Variants run round-robin inside each repeat (with the starting variant rotated), so a burst of
load from another process lands on all variants alike instead of biasing whichever ran during
it. Ratios are taken per repeat (paired) and then summarized, which cancels most of that noise.

Each timed block starts after one untimed call of its own variant. Without it, a block paid for
its predecessor: onnxruntime's and PyTorch's idle worker threads keep spinning for a while after
a run, and on a 2-core host they steal a core from the next variant. Rotation keeps the cyclic
order, so the same variant always followed the same other one, and the bias was systematic: the
explain file measured up to 1.6x slower than its own explain-plus-Grad-CAM runs when it followed
another session and the Grad-CAM runs followed it (benchmarks/RESULTS.md of 2026-11-28).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Median and interquartile range of repeated samples."""

    median: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> "Summary":
        q1, median, q3 = np.percentile(np.asarray(samples, dtype=np.float64), (25, 50, 75))
        return cls(float(median), float(q1), float(q3), len(samples))

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "n": self.n}


def interleave(
    variants: Mapping[str, Callable[[], object]],
    work_per_call: float,
    repeats: int,
    calls: int = 1,
    warmup: int = 1,
    settle: int = 1,
) -> dict[str, list[float]]:
    """Time each variant ``calls`` times per repeat, round-robin; return work/s per repeat.

    ``work_per_call`` is what one call does (images for a model, FLOPs for a matmul).

    ``warmup`` untimed calls per variant first absorb one-off costs (arena growth, lazy kernel
    selection, first-touch page faults) that a long-running service does not pay per image.
    ``settle`` untimed calls precede every timed block (see the module docstring).
    """
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            for _ in range(settle):
                variants[name]()
            start = time.perf_counter()
            for _ in range(calls):
                variants[name]()
            samples[name].append(work_per_call * calls / (time.perf_counter() - start))
    return samples


def paired_ratio(numerator: list[float], denominator: list[float]) -> Summary:
    """Summary of per-repeat ratios of two interleaved sample lists."""
    return Summary.of([a / b for a, b in zip(numerator, denominator, strict=True)])


def calls_for(batch: int, images: int) -> int:
    """Calls per repeat so that each timed block covers about ``images`` images (at least one call)."""
    return max(1, round(images / batch))
