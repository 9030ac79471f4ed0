"""Reduced JPEG decoding against full decoding: do the models' answers change?

``python -m benchmarks decode-agreement`` writes ``results-decode.json``. Every image of a
folder is classified twice by each bundled model, once decoded at full size and once decoded
as the classifier decodes it (:data:`cxr_infer.api.DECODE_MARGIN`: the short side keeps at
least twice the model's input side), with the same session. Forced scale-downs (1/2, 1/4, 1/8,
whatever the rule says) show how much margin the rule leaves: ``cxr3-external`` is stored at a
short side of 224-320 px, so the rule itself leaves most of its files whole for these 96-128 px
models, and the forced factors are where answers would start to move. Also measured: the time
to decode, by the rule and in full.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inputs import DATA, EXTERNAL
from benchmarks.machine import describe, load_average, save_results
from cxr_infer.api import DECODE_MARGIN
from cxr_infer.bundled import resolve_model
from cxr_infer.contract import INPUT, PROBS
from cxr_infer.image_header import raster_size
from cxr_infer.preprocess import PreprocessSpec, preprocess
from cxr_infer.readers import available_readers, read_image
from cxr_infer.session import open_session, read_contract

FOLDERS = {"cxr3-external": EXTERNAL, "originals": DATA / "originals"}
RULE = "rule"
FORCED = (2, 4, 8)
TOLERANCE = {"top1_agreement": 0.99, "max_prob_diff": 0.05}  # stated before measuring; see README "Performance"
BATCH = 32


def decoders(path: Path, spec: PreprocessSpec) -> dict[str, dict[str, int]]:
    """``read_image`` keyword arguments per way of decoding one file: full, by the rule, forced 1/f."""
    short = DECODE_MARGIN * spec.size
    ways: dict[str, dict[str, int]] = {"full": {}, RULE: {"min_side": short}}
    size = raster_size(path)
    if size is not None and size.format == "JPEG":
        low = min(size.width, size.height)
        ways |= {f"1/{f}": {"min_side": -(-low // f)} for f in FORCED}  # the largest reduction keeping that side
    return ways


def classify(session: Any, tensors: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([session.run([PROBS], {INPUT: np.stack(tensors[i:i + BATCH])})[0]
                           for i in range(0, len(tensors), BATCH)])


def compare(name: str, files: list[Path]) -> dict[str, Any]:
    """Top-1 agreement and the largest probability change of each way of decoding against full,
    each on the files it applies to (the forced factors: the JPEGs)."""
    path = resolve_model(name)
    session = open_session(path, "cpu", 2)
    name = path.stem
    spec = read_contract(session, path).preprocess
    readers = available_readers()
    tensors: dict[str, list[np.ndarray]] = {}
    which: dict[str, list[int]] = {}  # the files' indices per way
    shrunk: dict[str, int] = {}
    kept: dict[str, list[int]] = {}
    for index, file in enumerate(files):
        for way, sides in decoders(file, spec).items():
            image = read_image(file, readers, **sides)
            tensors.setdefault(way, []).append(preprocess(image, spec))
            which.setdefault(way, []).append(index)
            kept.setdefault(way, []).append(min(image.shape[:2]))
            shrunk[way] = shrunk.get(way, 0) + (bool(sides) and min(image.shape[:2]) < _short_side(file))
    probs = {way: classify(session, t) for way, t in tensors.items()}
    rows = {}
    for way, p in probs.items():
        if way == "full":
            continue
        full = probs["full"][which[way]]
        diff = np.abs(p - full)
        rows[way] = {"images": len(p), "reduced": shrunk[way], "top1_agreement": float((p.argmax(1) == full.argmax(1)).mean()),
                     "max_prob_diff": float(diff.max()), "mean_prob_diff": float(diff.mean()),
                     "smallest_short_side": int(min(kept[way]))}
    return {"model": name, "input_size": spec.size, "min_side": DECODE_MARGIN * spec.size, "by_way": rows}


def _short_side(path: Path) -> int:
    size = raster_size(path)
    return min(size.width, size.height) if size else 0


def decode_time(files: list[Path], min_side: int, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per JPEG file to decode in full and by the rule: passes alternate, best of
    ``repeats`` each (a shared host's load lands on both alike)."""
    readers = available_readers()
    jpegs = [file for file in files if _is_jpeg(file)]
    times: dict[str, list[float]] = {"full": [], RULE: []}
    for _ in range(repeats):
        for way, sides in (("full", {}), (RULE, {"min_side": min_side})):
            start = time.perf_counter()
            for file in jpegs:
                read_image(file, readers, **sides)
            times[way].append(time.perf_counter() - start)
    return {way: 1000 * min(t) / max(1, len(jpegs)) for way, t in times.items()}


def run_decode_agreement(models: list[str], out: Path, limit: int | None = None) -> Path:
    """Agreement per model and folder (its first ``limit`` files: all by default) into
    ``out/results-decode.json``."""
    result: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "machine": describe(), "load_before": load_average(), "tolerance": TOLERANCE, "margin": DECODE_MARGIN,
        "folders": {},
    }
    for folder, root in FOLDERS.items():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".jfif", ".png", ".webp"))[:limit]
        entry = {"images": len(files), "jpeg": sum(_is_jpeg(p) for p in files),
                 "models": [compare(name, files) for name in models]}
        entry["decode_min_side"] = min(m["min_side"] for m in entry["models"])
        entry["decode_ms"] = decode_time(files, entry["decode_min_side"])
        result["folders"][folder] = entry
    return save_results(result, out, "results-decode.json")


def _is_jpeg(path: Path) -> bool:
    size = raster_size(path)
    return size is not None and size.format == "JPEG"


def decode_section(result: dict[str, Any]) -> list[str]:
    """The "Reduced decoding" section of RESULTS.md."""
    from benchmarks.report import table

    tol = result["tolerance"]
    lines = ["## 5a. Reduced JPEG decoding: the models' answers", "",
             f"Generated {result['generated_at']} by `{result['command']}`. Each file classified after a full "
             f"decode and after a reduced one, same session; *rule*: the classifier's own choice (the short side "
             f"keeps >= {result['margin']}x the model input), *1/f*: every JPEG forced to 1/f. Tolerance, stated "
             f"before measuring: top-1 agreement >= {tol['top1_agreement']}, max |dp| <= {tol['max_prob_diff']}.", ""]
    rows = []
    for folder, entry in result["folders"].items():
        for m in entry["models"]:
            for way, r in m["by_way"].items():
                ok = r["top1_agreement"] >= tol["top1_agreement"] and r["max_prob_diff"] <= tol["max_prob_diff"]
                rows.append([folder, m["model"], m["input_size"], way, f"{r['reduced']}/{r['images']}", r["smallest_short_side"],
                             f"{r['top1_agreement']:.4f}", f"{r['max_prob_diff']:.4f}", f"{r['mean_prob_diff']:.5f}",
                             "within" if ok else "**outside**"])
    lines += table(["folder", "model", "input px", "decode", "files reduced", "smallest short side", "top-1 agreement",
                    "max abs dp", "mean abs dp", "tolerance"], rows)
    lines += ["Decoding time per JPEG file (ms, one thread, best of 5 alternating passes; load average "
              f"{result['load_before']} before, {result['load_after']} after):", ""]
    lines += table(["folder", "files (JPEG)", "full decode", "by the rule (short side kept)"], [
        [f, f"{e['images']} ({e['jpeg']})", f"{e['decode_ms']['full']:.2f}", f"{e['decode_ms'][RULE]:.2f} (>= {e['decode_min_side']} px)"]
        for f, e in result["folders"].items()])
    return lines
