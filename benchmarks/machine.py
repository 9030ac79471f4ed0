"""What a result was measured on: CPU, its vector extensions, GPU, load and library versions.

Speed figures mean nothing without the machine, and ratios such as int8/fp32 depend on
instruction-set extensions (VNNI, AMX), so these are recorded with every run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")
DISTRIBUTIONS = ("cxr-toolkit", "numpy", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless",
                 "opencv-python", "torch", "torchvision", "onnx", "scikit-learn", "tensorrt")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model, usable cores and the instruction-set flags that matter for fp32/int8 kernels."""
    model, flags = platform.processor() or platform.machine(), set()
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {
        "model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
    }


def gpu_info() -> list[dict[str, str]]:
    """GPUs as nvidia-smi lists them (empty without an NVIDIA driver); no torch needed."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split(", ") for line in out.strip().splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) == 3]


def versions() -> dict[str, str]:
    """Installed versions of the libraries whose speed is measured (absent ones left out)."""
    found = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def installed(module: str) -> bool:
    """Whether a module can be imported, without importing it (torch takes seconds to import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook refused it, or it is a broken stub
        return False


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: contention from other processes, stated with results."""
    return [round(value, 2) for value in os.getloadavg()]


def describe() -> dict[str, Any]:
    return {
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions(),
    }


def save_results(result: dict[str, Any], out: Path, name: str) -> Path:
    """Stamp the load average after the measurement and write ``out/name`` (JSON): every part's
    figures end the same way, so RESULTS.md can always say how busy the host was."""
    result["load_after"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path
