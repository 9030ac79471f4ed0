"""Measurement 5: the whole ``cxr-infer`` folder pipeline against the bare session.

The pipeline run is the command's own code (``run_classification``: discover, decode,
preprocess, infer, Grad-CAM, overlay PNGs, result rows) on a folder of real radiographs, with
the model loaded once as a long-running service would. The bare run is the same ONNX file's
session on the same images already preprocessed, at the same batch size, all outputs.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.inputs import Labelled
from benchmarks.models import ModelFiles, read_info
from benchmarks.sessions import open_session
from benchmarks.timing import Summary, interleave, paired_ratio
from cxr_infer.api import Classifier
from cxr_infer.cli import RunOptions, run_classification
from cxr_infer.contract import INPUT
from cxr_infer.gradcam import upsample
from cxr_infer.overlay import OverlayStyle, render_overlay, write_overlay
from cxr_infer.preprocess import preprocess
from cxr_infer.readers import available_readers, read_image

PIPELINE = "cxr-infer folder pipeline"
BARE = "bare session"
TARGET = 0.9
STAGES = ("decode", "preprocess", "heatmap", "overlay", "png")


def bare(session: ort.InferenceSession, images: np.ndarray, batch: int) -> Callable[[], object]:
    """All outputs for every image, ``batch`` at a time (the last batch shorter, as the pipeline)."""
    return lambda: [session.run(None, {INPUT: images[i:i + batch]}) for i in range(0, len(images), batch)]


def pipeline(classifier: Classifier, folder: Path, out: Path, batch: int) -> Callable[[], object]:
    """One ``cxr-infer FOLDER --explain`` run on the loaded model; its summary line is swallowed."""
    options = RunOptions((str(folder),), out, explain=True, batch_size=batch, quiet=True)

    def run() -> object:
        with contextlib.redirect_stdout(io.StringIO()):
            return run_classification(classifier, options)

    return run


def stage_costs(model: ModelFiles, labelled: Labelled, out: Path) -> dict[str, float]:
    """Milliseconds per image of each step the pipeline adds around the session, one thread.

    The evidence for the pipeline ratio: on a few cores these steps compete with inference.
    """
    info = read_info(model.explain)
    readers = available_readers()
    seconds = dict.fromkeys(STAGES, 0.0)
    label, cam = info.classes[0], np.random.default_rng(0).random((7, 7), dtype=np.float32)
    for index, path in enumerate(labelled.files):
        image = _timed(seconds, "decode", lambda: read_image(path, readers))
        _timed(seconds, "preprocess", lambda: preprocess(image, info.preprocess))
        heat = _timed(seconds, "heatmap", lambda: upsample(cam, *image.shape[:2]))
        overlay = _timed(seconds, "overlay", lambda: render_overlay(image, heat, label, 0.5))
        _timed(seconds, "png", lambda: write_overlay(out / f"{index}.png", overlay, OverlayStyle(format="png")))
    return {step: 1000 * total / len(labelled.files) for step, total in seconds.items()}


def _timed(seconds: dict[str, float], step: str, work: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = work()
    seconds[step] += time.perf_counter() - start
    return result


def measure(model: ModelFiles, labelled: Labelled, images: np.ndarray, batches: list[int], threads: int,
            repeats: int) -> list[dict[str, Any]]:
    """Pipeline and bare images/s per batch size, interleaved, on a temporary copy of the images."""
    if model.explain is None:
        return []
    records = []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, path in enumerate(labelled.files):
            shutil.copyfile(path, folder / f"{i:04d}{path.suffix}")
        session = open_session(model.explain, threads)
        with Classifier.load(model.explain, device="cpu", threads=threads) as classifier:
            for batch in batches:
                variants = {PIPELINE: pipeline(classifier, folder, Path(tmp) / "out", batch),
                            BARE: bare(session, images, batch)}
                samples = interleave(variants, len(images), repeats)
                records.append({
                    "model": model.arch, "batch": batch, "images": len(images), "samples": samples,
                    "img_s": {name: Summary.of(values).as_dict() for name, values in samples.items()},
                })
        records[-1]["stage_ms"] = stage_costs(model, labelled, Path(tmp) / "stages")
    return records


def compare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{
        "comparison": "pipeline_vs_bare", "model": r["model"], "batch": r["batch"],
        "meaning": "folder pipeline / bare session throughput",
        "ratio": paired_ratio(r["samples"][PIPELINE], r["samples"][BARE]).as_dict(),
        "target": TARGET, "at_least": True,
    } for r in records]
