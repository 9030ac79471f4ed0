"""Measurements 1-4 (speed) and 6: every variant of one model at one batch size, interleaved.

All variants of a model run round-robin in one run per batch size, so each comparison the
issue asks for (ONNX vs eager, explain vs plain, our Grad-CAM vs eager Grad-CAM, int8 vs fp32)
is a paired ratio of the same repeats under the same load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.machine import installed
from benchmarks.inputs import batch_of
from benchmarks.models import ModelFiles
from benchmarks.sessions import open_session, runner
from benchmarks.timing import Summary, calls_for, interleave, paired_ratio
from cxr_infer.contract import INPUT, LOGITS
from cxr_infer.gradcam import class_maps, upsample

TORCH = "torch eager"
ORT = "ORT fp32"
EXPLAIN = "ORT fp32 explain"
CAM = "ORT explain + Grad-CAM"
INT8 = "ORT int8 explain"
EAGER_CAM = "torch eager Grad-CAM"
EAGER_CAM_ALL = "torch eager Grad-CAM, all classes"


@dataclass(frozen=True)
class Comparison:
    """A ratio of two variants' throughput, and the issue's target for it (if any)."""

    name: str
    numerator: str
    denominator: str
    meaning: str
    target: float | None = None
    at_least: bool = True
    models: tuple[str, ...] | None = None  # the target applies to these models only (None: all)


COMPARISONS = (
    Comparison("onnx_vs_torch", ORT, TORCH, "ORT fp32 / torch eager throughput", 1.4, True, ("resnet50",)),
    Comparison("explain_cost", ORT, EXPLAIN, "explain time / plain time", 1.15, False),
    Comparison("gradcam", CAM, EAGER_CAM, "eager Grad-CAM time / our explain time", 10.0),
    Comparison("gradcam_all", CAM, EAGER_CAM_ALL, "eager Grad-CAM of every class / our explain (which holds every class)"),
    Comparison("int8_speed", INT8, EXPLAIN, "int8 / fp32 throughput", 3.0),
)


def our_explain(session: ort.InferenceSession, batch: np.ndarray) -> Callable[[], object]:
    """All outputs, then the predicted class's Grad-CAM map at input size, as cxr-infer does."""
    feed = {INPUT: batch}
    height, width = batch.shape[2:]

    def run() -> object:
        _, probs, activations, gradients = session.run(None, feed)
        cams = class_maps(activations, gradients, probs.argmax(axis=1))
        return [upsample(cam, height, width) for cam in cams]

    return run


class Variants:
    """Sessions (and the eager network) of one model, opened once for all batch sizes."""

    def __init__(self, model: ModelFiles, threads: int):
        self.model = model
        self.sessions = {
            name: open_session(path, threads)
            for name, path in ((ORT, model.plain), (EXPLAIN, model.explain), (INT8, model.int8))
            if path is not None
        }
        self.eager = None
        if model.checkpoint is not None and installed("torch"):
            from benchmarks import torch_side

            self.eager = torch_side.load(model.checkpoint)

    def at(self, batch: np.ndarray) -> dict[str, Callable[[], object]]:
        found: dict[str, Callable[[], object]] = {}
        if self.eager is not None:
            from benchmarks import torch_side

            found[TORCH] = torch_side.eager_forward(self.eager, batch)
        if ORT in self.sessions:
            found[ORT] = runner(self.sessions[ORT], batch, [LOGITS])
        if EXPLAIN in self.sessions:
            found[EXPLAIN] = runner(self.sessions[EXPLAIN], batch)
            found[CAM] = our_explain(self.sessions[EXPLAIN], batch)
        if INT8 in self.sessions:
            found[INT8] = runner(self.sessions[INT8], batch)
        if self.eager is not None and self.model.explain is not None:
            found[EAGER_CAM] = torch_side.eager_gradcam(self.eager, batch)
            found[EAGER_CAM_ALL] = torch_side.eager_gradcam_all(self.eager, batch)
        return found


def measure(model: ModelFiles, images: np.ndarray, batches: list[int], threads: int, repeats: int,
            images_per_block: int) -> list[dict[str, Any]]:
    """One record per batch size: images/s samples and summary of every available variant."""
    variants = Variants(model, threads)
    records = []
    for batch in batches:
        samples = interleave(variants.at(batch_of(images, batch)), batch, repeats, calls_for(batch, images_per_block))
        records.append({
            "model": model.arch,
            "batch": batch,
            "samples": samples,
            "img_s": {name: Summary.of(values).as_dict() for name, values in samples.items()},
        })
    return records


def compare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired ratios for every comparison whose two variants were measured."""
    rows = []
    for record in records:
        for comparison in COMPARISONS:
            samples = record["samples"]
            if comparison.numerator not in samples or comparison.denominator not in samples:
                continue
            ratio = paired_ratio(samples[comparison.numerator], samples[comparison.denominator])
            applies = comparison.models is None or record["model"] in comparison.models
            rows.append({
                "comparison": comparison.name,
                "model": record["model"],
                "batch": record["batch"],
                "meaning": comparison.meaning,
                "ratio": ratio.as_dict(),
                "target": comparison.target if applies else None,
                "at_least": comparison.at_least,
            })
    return rows


def gflops(records: list[dict[str, Any]], flops_per_image: dict[str, float], peak_gflops: float) -> list[dict[str, Any]]:
    """Achieved GFLOP/s of ORT fp32 and torch eager, and as a fraction of the measured matmul
    peak (median and IQR, from the images/s samples)."""
    rows = []
    for record in records:
        flops = flops_per_image.get(record["model"])
        for variant in (ORT, TORCH):
            if flops is None or variant not in record["img_s"]:
                continue
            rate = record["img_s"][variant]
            fraction = {k: rate[k] * flops / 1e9 / peak_gflops for k in ("median", "q1", "q3")}
            rows.append({
                "model": record["model"], "batch": record["batch"], "variant": variant,
                "gflop_per_image": flops / 1e9, "gflops": rate["median"] * flops / 1e9, "fraction_of_peak": fraction,
            })
    return rows
