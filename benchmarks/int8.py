"""int8 recipes side by side: speed against the fp32 model and top-1 agreement with it.

Each recipe re-quantizes a fp32 explain file (the shipped one by default: its checkpoint is not
needed) with :func:`cxr_train.quantize.quantize_int8`, which stores its agreement with fp32 on
``cxr3-external`` in the file's metadata; every variant then runs interleaved with the fp32
file (and any given int8 file) at each batch size, so each speed ratio is paired. The issue
asks for both figures of every variant tried; ``python -m benchmarks int8`` writes
``results-int8.json`` and its section of ``RESULTS.md``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.inputs import EXTERNAL, Labelled, batch_of
from benchmarks.models import read_info, shown
from benchmarks.report import spread, table
from benchmarks.sessions import open_session, runner
from benchmarks.timing import Summary, calls_for, interleave, paired_ratio

FP32 = "fp32"
RECIPES = {
    "default (QDQ, per-channel, 7-bit weights, MinMax)": {},
    "full 8-bit weights": {"reduce_range": False},
    "float stem": {"float_stem": True},
    "per-tensor weights": {"per_channel": False},
    "Entropy calibration": {"method": "entropy"},
    "Percentile calibration": {"method": "percentile"},
    "float stem, Percentile": {"float_stem": True, "method": "percentile"},
}


def quantized(fp32: Path, name: str, options: dict[str, Any], work: Path, calibration: Path, images: int) -> Path:
    """The int8 file of one recipe (cached in ``work`` by model, recipe and calibration size)."""
    from cxr_train.quantize import Int8Recipe, quantize_int8

    slug = "-".join(f"{k}={v}" for k, v in sorted(options.items())) or "default"
    out = work / f"{fp32.stem}-int8-{slug}-{images}.onnx"
    if not out.exists():
        work.mkdir(parents=True, exist_ok=True)
        print(f"int8: quantizing {fp32.name} with {name}", file=sys.stderr, flush=True)
        quantize_int8(fp32, out, calibration, EXTERNAL, images, None, Int8Recipe(**options))
    return out


def agreement(path: Path) -> dict[str, Any]:
    """The agreement report the quantizer stored in the file (images, top-1 agreement, ...)."""
    return read_info(path).quantization.get("agreement", {})


def measure(fp32: Path, variants: dict[str, Path], batches: list[int], threads: int, repeats: int,
            images_per_block: int) -> list[dict[str, Any]]:
    """Paired int8/fp32 throughput ratio of every variant at every batch size."""
    spec = read_info(fp32).preprocess
    images = Labelled.discover(EXTERNAL).take(max(batches)).tensors(spec)
    sessions = {FP32: open_session(fp32, threads), **{name: open_session(p, threads) for name, p in variants.items()}}
    rows = []
    for batch in batches:
        x = batch_of(images, batch)
        samples = interleave({name: runner(s, x) for name, s in sessions.items()}, batch, repeats,
                             calls_for(batch, images_per_block))
        rows += [{"variant": name, "batch": batch, "img_s": Summary.of(samples[name]).as_dict(),
                  "ratio": paired_ratio(samples[name], samples[FP32]).as_dict()} for name in variants]
    return rows


def run_int8(fp32_files: list[Path], int8_files: list[Path], recipes: list[str], batches: list[int], threads: int,
             repeats: int, calibration: Path, calibration_images: int, work: Path, out: Path) -> Path:
    """Quantize every recipe for every fp32 file, measure them, write ``out/results-int8.json``."""
    result: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "machine": machine.describe(), "threads": threads, "load_before": machine.load_average(), "models": [],
    }
    for fp32 in fp32_files:
        info = read_info(fp32)
        given = {f"shipped {p.name}": p for p in int8_files if read_info(p).model == info.model}
        made = {name: quantized(fp32, name, RECIPES[name], work, calibration, calibration_images) for name in recipes}
        variants = {**given, **made}
        speed = measure(fp32, variants, batches, threads, repeats, images_per_block=8)
        result["models"].append({
            "model": info.model, "fp32": shown(fp32),
            "variants": [{"name": name, "file": shown(path), "method": read_info(path).quantization.get("method", ""),
                          "agreement": agreement(path), "speed": [r for r in speed if r["variant"] == name]}
                         for name, path in variants.items()],
        })
    return machine.save_results(result, out, "results-int8.json")


def int8_section(result: dict[str, Any]) -> list[str]:
    """The variants table: agreement on cxr3-external and int8/fp32 throughput per batch size."""
    batches = sorted({s["batch"] for m in result["models"] for v in m["variants"] for s in v["speed"]})
    lines = ["## int8 recipes", "",
             f"Generated {result['generated_at']} by `{result['command']}`; {result['threads']} threads; "
             f"load average before {result['load_before']}, after {result['load_after']} (shared 2-core host). "
             "Speed: int8 / fp32 explain throughput, paired per interleaved repeat, median [IQR]. "
             "Agreement: top-1 agreement with the fp32 file on all of cxr3-external (target: >= 3.0 and >= 0.99).", ""]
    header = ["model", "variant", "top-1 agreement", "max abs(p int8 - p fp32)", *(f"batch {b}" for b in batches)]
    rows = []
    for model in result["models"]:
        for v in model["variants"]:
            by_batch = {s["batch"]: s["ratio"] for s in v["speed"]}
            a = v["agreement"]
            rows.append([model["model"], v["name"], f"{a.get('top1_agreement', float('nan')):.4f} (n={a.get('images', 0)})",
                         f"{a.get('max_prob_diff', float('nan')):.3f}",
                         *(spread(by_batch[b]) if b in by_batch else "-" for b in batches)])
    return lines + table(header, rows)
