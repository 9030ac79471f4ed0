"""onnxruntime sessions: device choice, honest provider reporting, and a model file's contract.

onnxruntime-gpu lists CUDA in ``get_available_providers()`` even on a host without a GPU and
then falls back to the CPU, logging library-load errors at ERROR severity for every session. So
the device a user asked for is checked against ``session.get_providers()`` (what the session
really got), and for ``auto``/``cpu`` the log is limited to FATAL before the session exists. An
explicit ``cuda``/``tensorrt`` request keeps ERROR messages: there the loader's reason (say, a
missing libcublas) is what the user needs to read next to our error.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path

import onnxruntime as ort

from cxr_infer.contract import ModelInfo

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_REQUESTED = {"cpu": [CPU], "cuda": [CUDA, CPU], "tensorrt": [TENSORRT, CUDA, CPU]}
_REQUIRED = {"cuda": CUDA, "tensorrt": TENSORRT}
ORT_ERROR, ORT_FATAL = 3, 4  # onnxruntime log severities (0 verbose .. 4 fatal)
TENSORRT_CACHE_ENV = "CXR_TENSORRT_CACHE"


class DeviceError(RuntimeError):
    """The requested device cannot be used on this host; the message says why."""


class ModelLoadError(RuntimeError):
    """The model file cannot be opened as an ONNX session; the message names the file."""


@dataclass(frozen=True)
class ModelFileInfo(ModelInfo):
    """A model's contract (:class:`ModelInfo`) plus where it came from, for audit trails."""

    path: Path = Path()
    sha256: str = ""


def quiet_onnxruntime(device: str = "auto") -> None:
    """Keep onnxruntime's CUDA library-load noise off the screen unless the GPU was demanded."""
    ort.set_default_logger_severity(ORT_ERROR if device in _REQUIRED else ORT_FATAL)


def requested_providers(device: str) -> list[str]:
    """Providers to ask for; ``auto`` asks for CUDA only where this onnxruntime build has it."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r} (choose from {', '.join(DEVICES)})")
    if device == "auto":
        return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]
    return list(_REQUESTED[device])


def tensorrt_cache_dir() -> Path:
    """Where TensorRT engines persist (``$CXR_TENSORRT_CACHE``, else the user's cache folder)."""
    return Path(os.environ.get(TENSORRT_CACHE_ENV) or Path.home() / ".cache" / "cxr-toolkit" / "tensorrt")


def provider_options(provider: str, cache_dir: Path | None = None) -> dict[str, str]:
    """Options for one execution provider. TensorRT builds an engine per model and input shape,
    which takes minutes for ResNet-50; its engine and timing caches make that a one-time cost
    per host instead of one per process (the cache is keyed by the model's hash)."""
    if provider != TENSORRT:
        return {}
    cache = str(cache_dir or tensorrt_cache_dir())
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache}


def open_session(path: Path, device: str = "auto", threads: int | None = None) -> ort.InferenceSession:
    """Create the session once; refuse a ``cuda``/``tensorrt`` request the session did not get."""
    names = requested_providers(device)
    if TENSORRT in names:
        tensorrt_cache_dir().mkdir(parents=True, exist_ok=True)
    providers = [(name, provider_options(name)) for name in names]
    quiet_onnxruntime(device)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_ERROR
    # Idle intra-op threads sleep instead of spinning: the workers that decode and write overlays
    # run on the same cores between runs, and spinning threads took their CPU (benchmarks/folder.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:
        raise ModelLoadError(f"{path}: cannot load the ONNX model ({type(error).__name__}: {error})") from error
    required = _REQUIRED.get(device)
    if required is not None and required not in session.get_providers():
        raise DeviceError(_unavailable(device, required, session.get_providers()))
    return session


def _unavailable(device: str, provider: str, got: list[str]) -> str:
    if provider not in ort.get_available_providers():
        return f"--device {device}: this onnxruntime build has no {provider} (install onnxruntime-gpu)"
    return (
        f"--device {device}: {provider} could not be initialised on this host (no usable GPU, or "
        f"its CUDA/cuDNN/TensorRT libraries are missing); the session got only {', '.join(got)}. "
        "Use --device cpu or auto."
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_contract(session: ort.InferenceSession, path: Path) -> ModelFileInfo:
    """Validate the session's metadata and tensor names against the contract."""
    info = ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, path)
    info.check_io([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()], path)
    values = {f.name: getattr(info, f.name) for f in fields(ModelInfo)}
    return ModelFileInfo(**values, path=Path(path), sha256=file_sha256(Path(path)))

