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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.inputs import Labelled
from benchmarks.models import ModelFiles
from benchmarks.sessions import open_session
from benchmarks.timing import Summary, interleave, paired_ratio
from cxr_infer.api import Classifier
from cxr_infer.cli import RunOptions, run_classification
from cxr_infer.contract import INPUT

PIPELINE = "cxr-infer folder pipeline"
BARE = "bare session"
TARGET = 0.9


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
    return records


def compare(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{
        "comparison": "pipeline_vs_bare", "model": r["model"], "batch": r["batch"],
        "meaning": "folder pipeline / bare session throughput",
        "ratio": paired_ratio(r["samples"][PIPELINE], r["samples"][BARE]).as_dict(),
        "target": TARGET, "at_least": True,
    } for r in records]
