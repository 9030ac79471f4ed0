"""Bare TensorRT: the yardstick for onnxruntime's TensorRT provider on the same GPU.

An engine is built from the very ONNX file the providers run (one optimization profile over
the batch sweep, serialized under the work folder so a rerun skips the build), with input and
outputs in GPU memory (torch tensors as buffers), timed per ``execute_async_v3`` and stream
synchronize: compute alone, comparable with the "IO binding, on device" runs.

Needs the ``tensorrt`` Python package (TensorRT 10 API) and a CUDA build of torch; without them
:meth:`BareEngine.build` raises and the GPU part records why and measures the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr_infer.contract import INPUT


@dataclass
class BareEngine:
    """A deserialized engine and its execution context."""

    engine: Any
    context: Any

    @classmethod
    def build(cls, onnx_path: Path, size: int, max_batch: int, fp16: bool, work: Path) -> "BareEngine":
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        key = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()[:12]
        plan = work / f"{Path(onnx_path).stem}-{key}-b{max_batch}-{'fp16' if fp16 else 'fp32'}.plan"
        if not plan.exists():
            work.mkdir(parents=True, exist_ok=True)
            plan.write_bytes(_serialized(trt, logger, onnx_path, size, max_batch, fp16))
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise RuntimeError(f"{plan}: TensorRT could not deserialize the engine")
        return cls(engine, engine.create_execution_context())

    def runner(self, x: np.ndarray) -> Callable[[], object]:
        """One batch already on the GPU, outputs left there: compute plus synchronize per call."""
        import tensorrt as trt
        import torch

        self.context.set_input_shape(INPUT, tuple(x.shape))
        stream = torch.cuda.Stream()
        buffers = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = torch.from_numpy(np.zeros(1, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            if name == INPUT:
                buffers[name] = torch.from_numpy(x).to("cuda", dtype)
            else:
                buffers[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, buffers[name].data_ptr())

        def run() -> object:
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            stream.synchronize()
            return buffers

        return run


def _serialized(trt: Any, logger: Any, onnx_path: Path, size: int, max_batch: int, fp16: bool) -> bytes:
    """Parse the ONNX file and build an engine for batches 1..max_batch (optimum at 8)."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser refused the file: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (1, 1, size, size), (min(8, max_batch), 1, size, size), (max_batch, 1, size, size))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT could not build an engine")
    return bytes(serialized)
