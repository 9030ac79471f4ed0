"""``python -m benchmarks scale-out``: images/s of ``cxr-infer --engine ray`` on a local Ray
against the plain command, on the same host, the same images and the same cores.

Each variant is the whole command (``cxr-infer FOLDER --model M -q``, in this process), so model
loading and, for Ray, starting the actor pool are inside the time. Every variant also runs on a
single image, and the marginal rate ``(N - 1) / (t_N - t_1)`` is the throughput once running:
the figure a long archive run sees, where the fixed cost is spread over millions of images.
The local Ray is started once (its start-up time is reported apart), as a cluster would be.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from benchmarks.inputs import EXTERNAL, Labelled
from benchmarks.machine import describe, load_average
from benchmarks.timing import Summary
from cxr_infer.cli import main as cxr_infer

VARIANTS = {"plain": (), "ray": ("--engine", "ray")}


def folder_of(images: int, root: Path) -> Path:
    """``images`` radiographs of cxr3-external (classes interleaved), linked into one folder."""
    folder = root / "images"
    folder.mkdir()
    for i, path in enumerate(Labelled.discover(EXTERNAL).take(images).files):
        (folder / f"{i:05d}{path.suffix}").symlink_to(path)
    return folder


def seconds(inputs: list[str], out: Path, model: str, threads: int, batch: int, engine: tuple[str, ...]) -> float:
    """Wall time of one whole ``cxr-infer`` run."""
    args = [*inputs, "--model", model, "--threads", str(threads), "--batch-size", str(batch), "--out", str(out), "-q", *engine]
    start = time.perf_counter()
    result = CliRunner().invoke(cxr_infer, args)
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise RuntimeError(f"cxr-infer {' '.join(args)} failed ({result.exit_code}): {result.output[-2000:]}")
    return elapsed


def run_scale_out(model: str, images: int, threads: int, batch: int, repeats: int, out: Path) -> Path:
    """Measure both engines round-robin, ``repeats`` times; write ``results-scale-out.json``."""
    import ray

    record: dict[str, Any] = {"model": model, "images": images, "threads": threads, "batch": batch, "repeats": repeats,
                              "machine": describe(), "load_before": load_average()}
    start = time.perf_counter()
    ray.init(num_cpus=threads, include_dashboard=False, logging_level="WARNING")
    record["ray_start_s"] = time.perf_counter() - start
    samples: dict[str, dict[str, list[float]]] = {name: {"all": [], "one": []} for name in VARIANTS}
    try:
        with tempfile.TemporaryDirectory(prefix="cxr-scale-") as tmp:
            folder = folder_of(images, Path(tmp))
            single = [str(sorted(folder.iterdir())[0])]
            for repeat in range(repeats):
                for name, engine in VARIANTS.items():
                    samples[name]["all"].append(seconds([str(folder)], Path(tmp) / f"{name}-{repeat}", model, threads, batch, engine))
                    samples[name]["one"].append(seconds(single, Path(tmp) / f"{name}-one-{repeat}", model, threads, batch, engine))
    finally:
        ray.shutdown()
    record["load_after"] = load_average()
    record["img_s"] = {name: summarise(times["all"], times["one"], images) for name, times in samples.items()}
    record["ray_vs_plain"] = {key: record["img_s"]["ray"][key]["median"] / record["img_s"]["plain"][key]["median"]
                              for key in ("end_to_end", "marginal")}
    record["samples_s"] = samples
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results-scale-out.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def summarise(all_s: list[float], one_s: list[float], images: int) -> dict[str, Any]:
    """End-to-end images/s per run, marginal images/s (the fixed cost taken out), fixed seconds."""
    return {
        "end_to_end": Summary.of([images / t for t in all_s]).as_dict(),
        "marginal": Summary.of([(images - 1) / max(t - t1, 1e-9) for t, t1 in zip(all_s, one_s)]).as_dict(),
        "one_image_s": Summary.of(one_s).as_dict(),
    }


def table(path: Path) -> str:
    """The figures as a Markdown table, for the README's "Scaling out"."""
    record = json.loads(path.read_text())
    lines = ["| engine | end-to-end img/s | marginal img/s | one-image run, s |", "| --- | --- | --- | --- |"]
    for name, figures in record["img_s"].items():
        lines.append(f"| {name} | {figures['end_to_end']['median']:.1f} | {figures['marginal']['median']:.1f} | "
                     f"{figures['one_image_s']['median']:.1f} |")
    ratio = record["ray_vs_plain"]
    lines.append(f"\nray / plain: end-to-end {ratio['end_to_end']:.2f}, marginal {ratio['marginal']:.2f}; "
                 f"local Ray start {record['ray_start_s']:.1f} s; load {record['load_before']} -> {record['load_after']}")
    return "\n".join(lines)
