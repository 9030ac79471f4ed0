"""Measurement 7: CUDA and TensorRT providers, fp32 and fp16, over a batch sweep, against bare
TensorRT on the same GPU.

Runs unchanged on a CUDA host (``python -m benchmarks run --part gpu``, a few minutes, most
of it TensorRT engine builds, cached under the work folder); elsewhere it skips and says why.
Three ways of feeding each session, interleaved:

- ``session.run`` with numpy arrays: the host-to-device copy of each batch and the copy of all
  outputs back, as a plain user gets them;
- IO binding, pinned: the batch copied in per call, the outputs written into page-locked host
  buffers bound once (``cuda_pinned``), so the copy back is a fast DMA;
- IO binding, on device: input and outputs stay in GPU memory; the compute alone, which is
  what bare TensorRT (the ``tensorrt`` Python API with an engine built from the same file, when
  installed) is timed on.

The float16 file comes from :func:`cxr_train.fp16.convert_fp16` (float32 input, outputs,
backward pass and head).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.inputs import EXTERNAL, Labelled, batch_of
from benchmarks.machine import gpu_info
from benchmarks.models import ModelFiles, read_info
from benchmarks.sessions import CPU, open_session, runner
from benchmarks.timing import Summary, calls_for, interleave
from cxr_infer.contract import INPUT
from cxr_infer.session import CUDA, TENSORRT, provider_options

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
    from cxr_train.fp16 import convert_fp16

    out = work / f"{path.stem}-fp16.onnx"
    if not out.exists():
        convert_fp16(path, out)
    return out


def tensorrt(fp16: bool, size: int, max_batch: int, work: Path) -> list[Any]:
    """TensorRT with one optimization profile covering the sweep (no rebuild per batch size),
    engine and timing caches as ``cxr_infer.session`` sets them, under the work folder."""
    shape = f"1x{size}x{size}"
    options = {
        **provider_options(TENSORRT, work / "trt-cache"),
        "trt_fp16_enable": fp16,
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
        bare, why = bare_engines(model, spec.size, max_batch, config.work)
        skipped += why
        for batch in config.gpu_batches:
            x = batch_of(images, batch)
            feeds, failed = feeders(opened, x, model.arch)
            skipped += failed
            feeds.update({name: engine.runner(x) for name, engine in bare.items()})
            samples = interleave(feeds, batch, config.repeats, calls_for(batch, IMAGES_PER_BLOCK), warmup=3)
            records.append({
                "model": model.arch, "batch": batch, "samples": samples,
                "img_s": {name: Summary.of(values).as_dict() for name, values in samples.items()},
                "providers": {name: s.get_providers() for name, s in opened.items()},
            })
    return {"throughput": records, "skipped": skipped, "gpus": gpu_info()}


def bound(session: ort.InferenceSession, x: Any, where: str) -> Callable[[], object]:
    """A run through IO binding: ``device`` keeps input and outputs in GPU memory; ``pinned``
    copies the batch in per call and writes the outputs into page-locked host buffers."""
    binding = session.io_binding()
    if where == "device":
        binding.bind_ortvalue_input(INPUT, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)
    else:
        pinned = pinned_memory()
        shapes = {o.name: v.shape for o, v in zip(session.get_outputs(), session.run(None, {INPUT: x}))}
        for name, shape in shapes.items():
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, memory_info=pinned))

    def run() -> object:
        if where == "pinned":
            binding.bind_cpu_input(INPUT, x)
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return None

    return run


def pinned_memory() -> Any:
    """Page-locked host memory of the CUDA device (onnxruntime's ``HOST_ACCESSIBLE`` memory)."""
    for device in ort.get_ep_devices():
        if device.ep_name == CUDA:
            return device.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)
    raise RuntimeError(f"onnxruntime lists no {CUDA} device, so no pinned host memory to bind outputs to")


def feeders(opened: dict[str, ort.InferenceSession], x: Any, arch: str) -> tuple[dict[str, Callable[[], object]], list[dict[str, str]]]:
    """Every session three ways (numpy run, IO binding pinned, IO binding on device)."""
    feeds, skipped = {}, []
    for name, session in opened.items():
        feeds[name] = runner(session, x)
        for where in ("pinned", "device"):
            try:
                feeds[f"{name}, IO binding {where}"] = bound(session, x, where)
            except Exception as error:  # a build without pinned-memory support still measures the rest
                skipped.append({"model": arch, "variant": f"{name}, IO binding {where}", "reason": f"{type(error).__name__}: {error}"})
    return feeds, skipped


def bare_engines(model: ModelFiles, size: int, max_batch: int, work: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Bare TensorRT fp32 and fp16 engines of the model's file (``tensorrt`` package needed)."""
    from benchmarks.bare_tensorrt import BareEngine

    engines, skipped = {}, []
    for fp16 in (False, True):
        name = f"bare TensorRT {'fp16' if fp16 else 'fp32'}"
        try:
            engines[name] = BareEngine.build(model.reference, size, max_batch, fp16, work / "bare-trt")
        except Exception as error:  # no tensorrt package, or a parser error: the providers still run
            skipped.append({"model": model.arch, "variant": name, "reason": f"{type(error).__name__}: {error}"})
    return engines, skipped
