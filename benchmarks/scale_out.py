"""``python -m benchmarks scale-out``: images/s of ``cxr-infer --engine ray`` on a local Ray
against the plain command, on the same host, the same images and the same cores.

Each variant is the whole command (``cxr-infer FOLDER --model M -q``, in this process), so model
loading and, for Ray, starting the actor pool are inside the time. Every variant also runs on a
single image, and the marginal rate ``(N - 1) / (t_N - t_1)`` is the throughput once running:
the figure a long archive run sees, where the fixed cost is spread over millions of images.
The local Ray is started once (its start-up time is reported apart), as a cluster would be.

The per-image cost of each step (reading the bytes, decoding, preprocessing, the model alone) is
measured too: it says which of them limits a node of another shape (more cores, a GPU, network
storage), which is what the README's "Scaling out" estimates rest on.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import numpy as np

from benchmarks.inputs import DATA, EXTERNAL, Labelled
from benchmarks.machine import describe, load_average, save_results
from benchmarks.models import read_info
from benchmarks.sessions import open_session
from benchmarks.timing import Summary
from cxr_infer.api import DECODE_MARGIN
from cxr_infer.bundled import resolve_model
from cxr_infer.cli import main as cxr_infer
from cxr_infer.contract import INPUT, PROBS
from cxr_infer.preprocess import preprocess
from cxr_infer.readers import available_readers, read_image

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
    originals = tuple(sorted(p for folder in ("originals", "dicom") for p in (DATA / folder).iterdir()))
    record["stage_ms"] = {"benchmark images": stage_ms(model, Labelled.discover(EXTERNAL).take(images).files, threads, batch),
                          "originals": stage_ms(model, originals, threads, batch)}  # full-size files, as archives hold
    record["img_s"] = {name: summarise(times["all"], times["one"], images) for name, times in samples.items()}
    record["ray_vs_plain"] = {key: record["img_s"]["ray"][key]["median"] / record["img_s"]["plain"][key]["median"]
                              for key in ("end_to_end", "marginal")}
    record["samples_s"] = samples
    return save_results(record, out, "results-scale-out.json")


def stage_ms(model: str, files: tuple[Path, ...], threads: int, batch: int) -> dict[str, float]:
    """Milliseconds per image of each step, the file steps on one thread: reading the bytes (from
    the page cache here, so a floor for network storage), decoding (reduced, as the classifier
    decodes without ``--explain``), preprocessing; then the model
    alone (``probs``) at ``threads`` threads and ``batch``. Also the mean file size, in MB."""
    path = resolve_model(model)
    spec, readers = read_info(path).preprocess, available_readers()
    spent = {"read": 0.0, "decode": 0.0, "preprocess": 0.0}
    tensors = []
    for file in files:
        start = time.perf_counter()
        file.read_bytes()
        read = time.perf_counter()
        image = read_image(file, readers, min_side=DECODE_MARGIN * spec.size)  # as classifying without --explain
        decoded = time.perf_counter()
        tensors.append(preprocess(image, spec))
        spent["read"] += read - start
        spent["decode"] += decoded - read
        spent["preprocess"] += time.perf_counter() - decoded
    session, images = open_session(path, threads), np.stack(tensors)
    session.run([PROBS], {INPUT: images[:batch]})  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        session.run([PROBS], {INPUT: images[i:i + batch]})
    spent["model"] = time.perf_counter() - start
    result = {step: 1000 * total / len(files) for step, total in spent.items()}
    result["file_mb"] = sum(file.stat().st_size for file in files) / len(files) / 1e6
    return result


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
    for name, stages in record["stage_ms"].items():
        lines.append(f"\nper image, {name} ({stages['file_mb']:.2f} MB on average): "
                     + ", ".join(f"{step} {ms:.2f} ms" for step, ms in stages.items() if step != "file_mb"))
    ratio = record["ray_vs_plain"]
    lines.append(f"\nray / plain: end-to-end {ratio['end_to_end']:.2f}, marginal {ratio['marginal']:.2f}; "
                 f"local Ray start {record['ray_start_s']:.1f} s; load {record['load_before']} -> {record['load_after']}")
    return "\n".join(lines)
