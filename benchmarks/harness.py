"""Runs the measurement parts and writes their JSON results; the report is rendered from those.

Parts: ``cpu`` (measurements 1-6 and operator profiles) and ``gpu`` (7). Each part writes its
own ``results-<part>.json``, so a GPU host adds its part without discarding the CPU figures.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.inputs import DATA, EXTERNAL
from benchmarks.models import ROOT, Int8Plan, ModelFiles, exported_from, from_files, prepare, shown, with_plain
from cxr_infer.concurrency import usable_cpus

PARTS = ("cpu", "gpu")
CALIBRATION = DATA / "cxr3-internal" / "train"


@dataclass(frozen=True)
class Config:
    """What to measure and how long; :meth:`tiny` is the smoke-test preset."""

    models: tuple[str, ...] = ("simplecnn", "resnet50")
    batches: tuple[int, ...] = (1, 8, 32)
    repeats: int = 5
    images_per_block: int = 8  # each timed block runs batches until it covers this many images
    threads: int = field(default_factory=usable_cpus)
    size: int = 224  # input size of random-init models (trained ones bring their own)
    calibration_images: int = 200
    compare_images: int | None = None  # int8 vs fp32 on this many cxr3-external images (None: all)
    peak_size: int = 2048
    use_runs: bool = True  # measure the newest trained runs/*/best.pt of each architecture
    gpu_batches: tuple[int, ...] = (1, 8, 32, 128)
    work: Path = ROOT / ".cache" / "benchmarks"
    onnx: tuple[Path, ...] = ()  # measure these files instead of exporting (grouped by architecture)
    checkpoints: tuple[Path, ...] = ()  # export from these; with ``onnx``, the torch side's weights

    @classmethod
    def tiny(cls, work: Path) -> "Config":
        """Seconds, not minutes: one small random model, two batch sizes, few repeats."""
        return cls(models=("simplecnn",), batches=(1, 2), repeats=2, images_per_block=2, threads=1, size=64,
                   calibration_images=3, compare_images=3, peak_size=256, use_runs=False,
                   gpu_batches=(1, 2), work=work)

    def int8_plan(self) -> Int8Plan:
        return Int8Plan(CALIBRATION, self.calibration_images, EXTERNAL, self.compare_images)


def select_models(config: Config, int8: bool) -> list[ModelFiles]:
    """Given ONNX files as they are; else export from given checkpoints; else per architecture."""
    plan = config.int8_plan() if int8 else None
    if config.onnx:
        return [with_plain(m, config.work) for m in from_files(list(config.onnx), list(config.checkpoints))]
    if config.checkpoints:
        return [exported_from(path, config.work, plan) for path in config.checkpoints]
    return [prepare(arch, config.size, config.work, plan, config.use_runs) for arch in config.models]


def describe_models(models: list[ModelFiles]) -> dict[str, Any]:
    return {
        m.arch: {"source": m.source, "trained": m.trained,
                 "files": {k: shown(v) for k, v in (("explain", m.explain), ("plain", m.plain), ("int8", m.int8)) if v}}
        for m in models
    }


def run_part(part: str, config: Config, out: Path) -> Path:
    """Run one part and write ``out/results-<part>.json``; returns its path."""
    from benchmarks import cpu, gpu

    if machine.installed("torch"):
        from benchmarks.torch_side import set_threads

        set_threads(config.threads)
    result: dict[str, Any] = {
        "part": part,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "machine": machine.describe(),
        "load_before": machine.load_average(),
    }
    reason = gpu.unavailable() if part == "gpu" else None
    if reason is not None:
        result.update({"models": {}, "throughput": [], "skipped": [{"reason": reason}]})
    else:
        found = select_models(config, int8=part == "cpu")
        models = [m for m in found if m.explain or m.plain]
        result["models"] = describe_models(models)
        result.update((cpu.run if part == "cpu" else gpu.run)(config, models))
        result.setdefault("skipped", []).extend(
            {"model": m.arch, "reason": f"no fp32 ONNX file: {m.source}"} for m in found if m not in models
        )
    return machine.save_results(result, out, f"results-{part}.json")
