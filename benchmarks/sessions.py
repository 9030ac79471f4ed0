"""onnxruntime sessions configured for measurement: fixed threads, chosen providers, profiling.

The product's session (``cxr_infer``) picks threads and providers for users; a benchmark must
pin them instead, so that PyTorch and onnxruntime get the same number of threads and a CUDA run
is refused rather than silently measured on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cxr_infer.contract import INPUT

CPU = "CPUExecutionProvider"
# onnxruntime-gpu logs a CUDA library-load error per session on hosts without CUDA; errors
# that matter surface as exceptions or as missing providers, which the callers check.
ort.set_default_logger_severity(3)


class ProviderUnavailable(RuntimeError):
    """A session did not get the execution provider it asked for."""


def open_session(
    path: str | Path,
    threads: int,
    providers: Sequence[str | tuple[str, dict[str, Any]]] = (CPU,),
    profile_prefix: str | None = None,
    optimize: bool = True,
) -> ort.InferenceSession:
    """A session with ``threads`` intra-op threads that really runs on ``providers[0]``.

    ``optimize=False`` keeps the graph as exported (one node per ONNX operator), which is what
    FLOP counting needs; timing always uses full optimization, as users get it.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # As cxr_infer's sessions run since issue 16: idle threads sleep. Spinning ones also took a
    # core from whichever variant ran next in the interleaved order (benchmarks/timing.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    session = ort.InferenceSession(str(path), options, providers=list(providers))
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if session.get_providers()[0] != wanted:
        raise ProviderUnavailable(f"{path}: asked for {wanted}, session got {session.get_providers()}")
    return session


def runner(session: ort.InferenceSession, batch: np.ndarray, outputs: Sequence[str] | None = None):
    """A no-argument callable running one batch (for :func:`benchmarks.timing.interleave`)."""
    names = list(outputs) if outputs is not None else None
    feed = {INPUT: batch}
    return lambda: session.run(names, feed)
