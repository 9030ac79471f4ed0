"""Measurement 7: CUDA and TensorRT providers, fp32 and fp16, over a batch sweep.

Runs unchanged on a CUDA host (``python -m benchmarks run --part gpu``, a few minutes, most
of it TensorRT engine builds, cached under the work folder); elsewhere it skips and says why.
Times include the host-to-device copy of each batch and the copy of all outputs back, as a
user calling ``session.run`` with numpy arrays gets them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import onnxruntime as ort

from benchmarks.inputs import EXTERNAL, Labelled, batch_of
from benchmarks.machine import gpu_info
from benchmarks.models import ModelFiles, read_info
from benchmarks.sessions import CPU, open_session, runner
from benchmarks.timing import Summary, calls_for, interleave

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
IMAGES_PER_BLOCK = 256


def unavailable() -> str | None:
    """Why this host cannot run the GPU part, or ``None`` when it can."""
    if not gpu_info():
        return "no NVIDIA GPU on this host (nvidia-smi is missing or lists none)"
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {CUDA} (install onnxruntime-gpu)"
    return None


def fp16_model(path: Path, work: Path) -> Path:
    """The model with float16 weights and compute, float32 input and outputs (needs ``onnx``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = work / f"{path.stem}-fp16.onnx"
    if not out.exists():
        onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(out))
    return out


def tensorrt(fp16: bool, size: int, max_batch: int, work: Path) -> list[Any]:
    """TensorRT with one optimization profile covering the sweep (no rebuild per batch size)."""
    shape = f"1x{size}x{size}"
    options = {
        "trt_fp16_enable": fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(work / "trt-cache"),
        "trt_profile_min_shapes": f"image:1x{shape}",
        "trt_profile_opt_shapes": f"image:{min(8, max_batch)}x{shape}",
        "trt_profile_max_shapes": f"image:{max_batch}x{shape}",
    }
    return [(TENSORRT, options), CUDA, CPU]


def sessions(model: ModelFiles, size: int, max_batch: int, work: Path) -> tuple[dict[str, ort.InferenceSession], list[dict[str, str]]]:
    """Open every provider/precision variant that this host supports; record why others failed."""
    makers = {
        "CUDA fp32": lambda: open_session(model.reference, 1, [CUDA, CPU]),
        "CUDA fp16": lambda: open_session(fp16_model(model.reference, work), 1, [CUDA, CPU]),
        "TensorRT fp32": lambda: open_session(model.reference, 1, tensorrt(False, size, max_batch, work)),
        "TensorRT fp16": lambda: open_session(model.reference, 1, tensorrt(True, size, max_batch, work)),
    }
    opened, skipped = {}, []
    for name, make in makers.items():
        try:
            opened[name] = make()
        except Exception as error:  # each variant may be missing on a host; the others still run
            skipped.append({"model": model.arch, "variant": name, "reason": f"{type(error).__name__}: {error}"})
    return opened, skipped


def run(config: Any, models: list[ModelFiles]) -> dict[str, Any]:
    with contextlib.suppress(Exception):  # a library still missing shows when the sessions open
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels (torch's) where no system CUDA exists
    records, skipped = [], []
    labelled = Labelled.discover(EXTERNAL).take(max(config.gpu_batches))
    max_batch = max(config.gpu_batches)
    (config.work / "trt-cache").mkdir(parents=True, exist_ok=True)
    for model in models:
        spec = read_info(model.reference).preprocess
        images = labelled.tensors(spec)
        opened, failed = sessions(model, spec.size, max_batch, config.work)
        skipped += failed
        for batch in config.gpu_batches:
            x = batch_of(images, batch)
            samples = interleave({name: runner(s, x) for name, s in opened.items()}, batch, config.repeats,
                                 calls_for(batch, IMAGES_PER_BLOCK), warmup=3)
            records.append({
                "model": model.arch, "batch": batch, "samples": samples,
                "img_s": {name: Summary.of(values).as_dict() for name, values in samples.items()},
                "providers": {name: s.get_providers() for name, s in opened.items()},
            })
    return {"throughput": records, "skipped": skipped, "gpus": gpu_info()}
