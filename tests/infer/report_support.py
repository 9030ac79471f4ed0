"""A small labelled run with a report, made from generated images (no data folder needed).

Every kind of row the page must show: classified inputs of every class (8-bit and 16-bit PNG,
JPEG, a file name with a space and a ``#`` that a URL must encode), a file that is no image
(an error row) and a text file (a skipped row).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from click.testing import CliRunner

from cxr_infer.cli import main

CLASSES = ("covid", "normal", "pneumonia")
PER_CLASS = 4
HOSTILE_NAME = '"><img src=x onerror=alert(1)><svg onload=alert(2)>.png'  # must show as text, never run
NAMED = {1: "case #1 a.png", 6: HOSTILE_NAME}  # names a URL or the page could get wrong


def generated_radiograph(seed: int, bits: int = 8) -> np.ndarray:
    """A gray image with a bright body, two darker lung fields and noise (not a real radiograph)."""
    rng = np.random.default_rng(seed)
    height, width = 120 + 8 * (seed % 3), 100
    yy, xx = np.mgrid[0:height, 0:width]
    image = 0.55 + 0.1 * rng.standard_normal((height, width))
    for centre in (0.32, 0.68):
        image -= 0.3 * np.exp(-(((xx / width - centre) / 0.13) ** 2 + ((yy / height - 0.5) / 0.28) ** 2))
    full = 255 if bits == 8 else 65535
    return (np.clip(image, 0, 1) * full).astype(np.uint8 if bits == 8 else np.uint16)


def make_labelled_folder(folder: Path) -> Path:
    """``folder/{covid,normal,pneumonia}/...``: 12 generated images, one broken file, one text file."""
    for k, label in enumerate(CLASSES):
        (folder / label).mkdir(parents=True)
        for i in range(PER_CLASS):
            seed = k * PER_CLASS + i
            name = NAMED.get(seed, f"img{seed:02d}.{'jpg' if i == 3 else 'png'}")
            _, encoded = cv2.imencode(Path(name).suffix, generated_radiograph(seed, bits=16 if i == 2 else 8))
            (folder / label / name).write_bytes(encoded.tobytes())  # cv2.imwrite silently skips some names
    (folder / "normal" / "broken.png").write_bytes(b"this is not an image\n" * 8)
    (folder / "notes.txt").write_text("not an input\n")
    return folder


def run_report(images: Path, out: Path, model: Path, *extra: str) -> Any:
    """``cxr-infer IMAGES --explain --report`` with the gate only flagging (generated images are no radiographs)."""
    args = [str(images), "--recursive", "--model", str(model), "--explain", "--report", "--gate", "warn", "--out", str(out), "--quiet", "--threads", "2", *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def run_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text())
