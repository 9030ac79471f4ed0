"""The CPU part: throughput of every variant and their ratios (measurements 1-4), GFLOP/s against
the matmul peak (6), int8 agreement on cxr3-external, and operator profiles as the evidence
behind each ratio. Measurement 5 (the folder pipeline) is ``python -m benchmarks pipeline``."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import profiling, throughput
from benchmarks.inputs import EXTERNAL, Labelled, batch_of
from benchmarks.models import ModelFiles, read_info
from benchmarks.peak import measure_peak
from benchmarks.timing import Summary

PROFILE_BATCH = 8


def profiles(model: ModelFiles, images: np.ndarray, threads: int) -> dict[str, Any]:
    """Where onnxruntime spends its time for each ONNX variant of the model."""
    batch = batch_of(images, PROFILE_BATCH)
    files = {throughput.ORT: model.plain, throughput.EXPLAIN: model.explain, throughput.INT8: model.int8}
    return {name: profiling.op_time_shares(path, batch, threads) for name, path in files.items() if path is not None}


def int8_agreement(model: ModelFiles) -> dict[str, Any]:
    """The quantizer's own comparison of int8 with fp32 (top-1 agreement, largest probability
    difference, accuracy and macro-F1 of both), stored in the int8 file's metadata."""
    report = read_info(model.int8).quantization.get("agreement", {})
    return {"model": model.arch, "trained": model.trained, **report}


def run(config: Any, models: list[ModelFiles]) -> dict[str, Any]:
    labelled = Labelled.discover(EXTERNAL).take(max(config.batches))
    peak = {name: Summary.of(s).as_dict() for name, s in measure_peak(config.threads, config.repeats, config.peak_size).items()}
    peak_gflops = max(p["median"] for p in peak.values())
    records, flops, profile = [], {}, {}
    for model in models:
        spec = read_info(model.reference).preprocess
        images = labelled.tensors(spec)
        records += throughput.measure(model, images, list(config.batches), config.threads, config.repeats,
                                      config.images_per_block)
        flops[model.arch] = profiling.model_flops(model.plain or model.reference, images.shape[1:], config.threads)
        profile[model.arch] = profiles(model, images, config.threads)
    return {
        "throughput": records,
        "comparisons": throughput.compare(records),
        "peak_gflops": {"by_library": peak, "best": peak_gflops, "size": config.peak_size},
        "flops_per_image": flops,
        "gflops": throughput.gflops(records, flops, peak_gflops),
        "profiles": profile,
        "int8_accuracy": [int8_agreement(model) for model in models if model.int8 is not None],
    }
