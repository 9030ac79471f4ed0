"""Where onnxruntime spends its time, and how much arithmetic a model does, from ORT's profiler.

The profiler records every node's operator, input/output shapes and duration. FLOPs come from
the unoptimized graph (one node per ONNX operator, shapes as exported), so counting needs
neither torch nor the ``onnx`` package; time shares come from the optimized graph users run.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.sessions import open_session
from cxr_infer.contract import INPUT


def _shape(entry: dict[str, list[int]]) -> list[int]:
    return next(iter(entry.values()))


def node_flops(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int:
    """Floating-point operations (a multiply-add counts 2) of one Conv, Gemm or MatMul node."""
    if not outputs or not inputs:
        return 0
    out = math.prod(outputs[0])
    if op == "Conv":
        return 2 * out * math.prod(inputs[1][1:])  # weight (M, C/groups, kh, kw)
    if op == "Gemm":
        return 2 * out * (math.prod(inputs[0]) // outputs[0][0])  # A is (M, K) or (K, M)
    if op == "MatMul":
        return 2 * out * inputs[0][-1]
    return 0


def _profile(path: Path, batch: np.ndarray, threads: int, runs: int, optimize: bool) -> list[dict[str, Any]]:
    """Node events of all but the first (warm-up) of ``runs`` profiled runs."""
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(path, threads, profile_prefix=str(Path(tmp) / "ort"), optimize=optimize)
        for _ in range(runs):
            session.run(None, {INPUT: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run"][1:]
    return [
        e for e in events
        if e.get("cat") == "Node" and "op_name" in e.get("args", {}) and any(a <= e["ts"] <= b for a, b in windows)
    ]


def model_flops(path: Path, image_shape: tuple[int, ...], threads: int = 1) -> float:
    """FLOPs per image of one forward run of the ONNX file at ``image_shape`` (C, H, W)."""
    batch = np.zeros((1, *image_shape), dtype=np.float32)
    nodes = _profile(path, batch, threads, runs=2, optimize=False)
    return float(sum(
        node_flops(n["args"]["op_name"], [_shape(s) for s in n["args"].get("input_type_shape", [])],
                   [_shape(s) for s in n["args"].get("output_type_shape", [])])
        for n in nodes
    ))


def op_time_shares(path: Path, batch: np.ndarray, threads: int, runs: int = 4, top: int = 6) -> dict[str, Any]:
    """Milliseconds per run and the share of it each operator type takes (largest first)."""
    nodes = _profile(path, batch, threads, runs=runs + 1, optimize=True)
    per_op: dict[str, float] = defaultdict(float)
    for node in nodes:
        per_op[node["args"]["op_name"]] += node["dur"]
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda item: -item[1])
    shares = {op: round(us / total, 3) for op, us in ranked[:top]}
    if len(ranked) > top:
        shares["other"] = round(sum(us for _, us in ranked[top:]) / total, 3)
    return {"ms_per_run": total / runs / 1000.0, "shares": shares}
