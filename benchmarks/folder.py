"""Measurement 5: the whole ``cxr-infer --explain`` folder pipeline against the bare session.

``python -m benchmarks pipeline`` writes ``results-pipeline.json``. The pipeline run is the
command's own code (``run_classification``: discover, decode, gate, preprocess, infer, Grad-CAM,
overlays, result rows) on a folder of real radiographs, with the model loaded once as a
long-running service would. The bare run is the same ONNX file's session, opened as the command
opens it (the same options and threads), on the same images already preprocessed, at the same
batch size, all outputs: the ratio is what the pipeline's own work costs. Two pipeline variants run
interleaved with the bare session in every repeat:

- *new defaults*: JPEGs decoded reduced where they are far larger than needed, overlays at a
  display size (long side 1024) as JPEG;
- *old settings*: every file decoded at full size, full-size PNG overlays (zlib level 1), and
  onnxruntime threads that spin while idle, as ``cxr-infer`` ran before issue 16 (its own
  sessions' threads now sleep: :func:`cxr_infer.session.open_session`).

The evidence behind the ratios: the milliseconds each step adds per image on one thread, for
both settings, and the image work (decode to encode) in two threads against two processes,
which shows whether the GIL holds the workers back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.inputs import DATA, EXTERNAL, Labelled
from benchmarks.machine import describe, load_average, save_results
from benchmarks.sessions import open_session
from benchmarks.timing import Summary, interleave, paired_ratio
from cxr_infer.api import DECODE_MARGIN, Classifier
from cxr_infer.bundled import resolve_model
from cxr_infer.cli import RunOptions, run_classification
from cxr_infer.contract import INPUT
from cxr_infer.gate import GateModel, bundled_gate, inspect
from cxr_infer.gradcam import upsample
from cxr_infer.overlay import OverlayStyle, render_overlay, write_overlay
from cxr_infer.preprocess import PreprocessSpec, preprocess
from cxr_infer.image_header import raster_size
from cxr_infer.readers import RASTER_EXTENSIONS, available_readers, read_image
from cxr_infer.session import open_session as product_session, read_contract

BARE = "bare session"
NEW, OLD = "pipeline, new defaults", "pipeline, old settings"
SETTINGS = {  # variant -> overlay style; the command decodes for it (full size for long_side 0)
    NEW: OverlayStyle(),
    OLD: OverlayStyle(long_side=0, format="png"),
}
TARGET = 0.9
STAGES = ("decode", "gate checks", "preprocess", "heatmap", "overlay", "encode")
THREADS, PROCESSES = "2 threads", "2 processes"


def bare(session: ort.InferenceSession, images: np.ndarray, batch: int) -> Callable[[], object]:
    """All outputs for every image, ``batch`` at a time (the last batch shorter, as the pipeline)."""
    return lambda: [session.run(None, {INPUT: images[i:i + batch]}) for i in range(0, len(images), batch)]


def pipeline(classifier: Classifier, folder: Path, out: Path, batch: int, style: OverlayStyle) -> Callable[[], object]:
    """One ``cxr-infer FOLDER --explain`` run on the loaded model; its summary line is swallowed."""
    options = RunOptions((str(folder),), out, explain=True, batch_size=batch, quiet=True, overlay=style)

    def run() -> object:
        with contextlib.redirect_stdout(io.StringIO()):
            return run_classification(classifier, options)

    return run


def spinning(classifier: Classifier, threads: int) -> Classifier:
    """The same model and the bundled gate with onnxruntime's default idle spinning (the old settings)."""
    gate = GateModel(open_session(bundled_gate(), threads), bundled_gate())
    return Classifier(open_session(classifier.info.path, threads), classifier.info, threads, classifier.gate, gate, "cpu")


def image_work(path: Path, spec: PreprocessSpec, style: OverlayStyle, out: Path, seconds: dict[str, float]) -> None:
    """What the pipeline does to one image outside the session, step by step, timed into ``seconds``."""
    readers = available_readers()
    long_side = style.long_side or None
    sides = {} if long_side is None else {"min_side": DECODE_MARGIN * spec.size, "min_long_side": long_side}
    cam = np.random.default_rng(0).random((7, 7), dtype=np.float32)
    image = _timed(seconds, "decode", lambda: read_image(path, readers, **sides))
    _timed(seconds, "gate checks", lambda: inspect(image))
    _timed(seconds, "preprocess", lambda: preprocess(image, spec))
    heat = _timed(seconds, "heatmap", lambda: upsample(cam, *image.shape[:2]))
    drawn = _timed(seconds, "overlay", lambda: render_overlay(image, heat, "covid", 0.5, style.long_side))
    _timed(seconds, "encode", lambda: write_overlay(out / f"{path.stem}{style.suffix}", drawn, style))


def stage_costs(files: list[Path], spec: PreprocessSpec, style: OverlayStyle, out: Path) -> dict[str, float]:
    """Milliseconds per image of each step, one thread (after one untimed pass)."""
    image_work(files[0], spec, style, out, dict.fromkeys(STAGES, 0.0))
    seconds = dict.fromkeys(STAGES, 0.0)
    for path in files:
        image_work(path, spec, style, out, seconds)
    return {step: 1000 * total / len(files) for step, total in seconds.items()}


def _timed(seconds: dict[str, float], step: str, work: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = work()
    seconds[step] += time.perf_counter() - start
    return result


def _work_one(args: tuple[Path, PreprocessSpec, OverlayStyle, Path]) -> None:
    image_work(*args, dict.fromkeys(STAGES, 0.0))


def workers(files: list[Path], spec: PreprocessSpec, out: Path, repeats: int) -> dict[str, Any]:
    """Images/s of the per-image work (new defaults) in two threads against two processes,
    interleaved; the pools are started before timing, as the pipeline's pool is."""
    jobs = [(path, spec, OverlayStyle(), out) for path in files]
    spawn = multiprocessing.get_context("spawn")  # no fork of a process holding onnxruntime's threads
    with ThreadPoolExecutor(2) as threads, ProcessPoolExecutor(2, mp_context=spawn) as processes:
        def mapped(pool: Executor) -> Callable[[], object]:
            return lambda: list(pool.map(_work_one, jobs))

        samples = interleave({THREADS: mapped(threads), PROCESSES: mapped(processes)}, len(jobs), repeats)
    return {"images": len(jobs), "img_s": {k: Summary.of(v).as_dict() for k, v in samples.items()},
            "ratio": paired_ratio(samples[PROCESSES], samples[THREADS]).as_dict()}


def measure(name: str, files: list[Path], batches: list[int], threads: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    """Pipeline variants and bare images/s per batch size, interleaved, on a copy of ``files``."""
    path = resolve_model(name)
    name = path.stem  # a bundled name, or the file's name
    folder = tmp / name / "images"
    folder.mkdir(parents=True)
    for i, source in enumerate(files):
        shutil.copyfile(source, folder / f"{i:04d}{source.suffix}")
    session = product_session(path, "cpu", threads)
    spec = read_contract(session, path).preprocess
    readers = available_readers()
    images = np.stack([preprocess(read_image(p, readers), spec) for p in files])
    records = []
    with Classifier.load(path, device="cpu", threads=threads) as classifier, spinning(classifier, threads) as old:
        for batch in batches:
            variants = {BARE: bare(session, images, batch)}
            variants |= {v: pipeline(old if v == OLD else classifier, folder, tmp / name / v, batch, style)
                         for v, style in SETTINGS.items()}
            samples = interleave(variants, len(images), repeats)
            records.append({
                "model": name, "batch": batch, "images": len(images), "samples": samples,
                "img_s": {v: Summary.of(s).as_dict() for v, s in samples.items()},
                "ratios": {v: paired_ratio(samples[v], samples[BARE]).as_dict() for v in SETTINGS},
            })
    records[-1]["stage_ms"] = {v: stage_costs(list(files), spec, style, tmp / name / "stages") for v, style in SETTINGS.items()}
    return records


def folder_files(folder: str, images: int) -> list[Path]:
    """The first ``images`` files of a folder: ``cxr3-external`` (224-320 px JPEGs, the classes
    interleaved) or ``originals`` (full-resolution JPEG, PNG and WebP files of 500-2059 px)."""
    if folder == "cxr3-external":
        return list(Labelled.discover(EXTERNAL).take(images).files)
    return sorted(p for p in (DATA / folder).iterdir() if p.suffix.lower() in RASTER_EXTENSIONS)[:images]


def describe_files(files: list[Path]) -> str:
    """Formats and the range of short sides, as the headers declare them."""
    sizes = [raster_size(p) for p in files]
    formats = ", ".join(sorted({s.format for s in sizes if s}))
    shorts = [min(s.width, s.height) for s in sizes if s]
    return f"{formats}, short side {min(shorts)}-{max(shorts)} px"


def run_pipeline(models: list[str], batches: list[int], threads: int, repeats: int, images: int, out: Path,
                 folder: str = "cxr3-external") -> Path:
    """Measurement 5 into ``out/results-pipeline.json`` (another folder: ``results-pipeline-FOLDER.json``)."""
    files = folder_files(folder, images)
    result: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "config": {"models": models, "batches": batches, "threads": threads, "repeats": repeats, "images": len(files),
                   "folder": folder, "files": describe_files(files), "settings": {v: vars(s) for v, s in SETTINGS.items()}},
        "machine": describe(),
        "load_before": load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        result["pipeline"] = [r for name in models for r in measure(name, files, batches, threads, repeats, Path(tmp))]
        spec = read_contract(open_session(resolve_model(models[0]), 1), resolve_model(models[0])).preprocess
        result["workers"] = workers(files, spec, Path(tmp) / "workers", repeats)
    for record in result["pipeline"]:
        del record["samples"]
    return save_results(result, out, "results-pipeline.json" if folder == "cxr3-external" else f"results-pipeline-{folder}.json")


def pipeline_section(result: dict[str, Any]) -> list[str]:
    """The "5. Folder pipeline" section of RESULTS.md."""
    from benchmarks.report import machine_section, spread, table

    c = result["config"]
    batches = sorted({r["batch"] for r in result["pipeline"]})
    lines = [f"## 5. Folder pipeline vs bare session: {c['folder']}", "",
             f"Generated {result['generated_at']} by `{result['command']}`: `cxr-infer --explain` on {c['images']} "
             f"`{c['folder']}` images ({c.get('files', 'JPEG, short side 224-320 px')}) with the model loaded once, against the bare "
             f"session on the same images already preprocessed; {c['repeats']} interleaved repeats, ratios per repeat.",
             "", *machine_section({**result, "config": c})]
    rows = []
    for name in dict.fromkeys(r["model"] for r in result["pipeline"]):
        for variant in SETTINGS:
            by_batch = {r["batch"]: r["ratios"][variant] for r in result["pipeline"] if r["model"] == name}
            verdicts = [s["median"] >= TARGET for s in by_batch.values()]
            verdict = "met" if all(verdicts) else "**missed** at some batch sizes" if any(verdicts) else "**missed**"
            rows.append([name, variant, *(spread(by_batch[b]) for b in batches), f">= {TARGET}", verdict])
    lines += table(["model", "pipeline / bare session throughput", *(f"batch {b}" for b in batches), "target", "verdict"], rows)
    variants = [BARE, *SETTINGS]
    lines += ["Images/s, median [IQR]:", ""]
    lines += table(["model", "batch", *variants], [
        [r["model"], r["batch"], *(spread(r["img_s"][v], 1) for v in variants)] for r in result["pipeline"]])
    lines += ["Work the pipeline adds per image outside the session (ms, one thread; on this host it shares "
              "the cores with inference):", ""]
    lines += table(["model", "settings", *STAGES, "total"], [
        [r["model"], v, *(f"{ms[s]:.2f}" for s in STAGES), f"{sum(ms.values()):.2f}"]
        for r in result["pipeline"] if "stage_ms" in r for v, ms in r["stage_ms"].items()])
    w = result["workers"]
    lines += [f"**Workers: threads or processes.** The per-image work (new defaults) on {w['images']} images: "
              f"{THREADS} {spread(w['img_s'][THREADS], 1)} images/s, {PROCESSES} {spread(w['img_s'][PROCESSES], 1)}; "
              f"processes / threads {spread(w['ratio'])}.", ""]
    return lines
