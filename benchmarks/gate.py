"""Measurement 8: the input gate, what it rejects, what it lets through, and what it costs.

- **Rejection of non-chest inputs**: every ``ood/`` image through the whole gate (cheap checks,
  then the learned check) as inference runs it, per category, split into the images the bundled
  gate was trained on (seen: optimistic), its validation part and the sources held out of its
  training altogether; generated negatives of seeds the training never used, per kind.
- **Leave-one-category-out**: each ``--loco`` gate was trained without one ``ood/`` category;
  its rejection of that category is the estimate for kinds of input nobody here has.
- **False rejects** on real frontal radiographs: ``cxr3-internal/test`` and ``cxr3-external``,
  per class and per source.
- **Cost**: gate (cheap checks + 64-px preprocessing + the gate session) against
  classification (the model's preprocessing + its session, probabilities only) per decoded
  image, both on the same decoded radiographs, one thread each, interleaved repeats.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inputs import DATA
from benchmarks.machine import describe, load_average, save_results
from benchmarks.timing import Summary, interleave, paired_ratio
from cxr_infer.bundled import bundled_models
from cxr_infer.contract import INPUT, PROBS
from cxr_infer.gate import GateModel, GateResult, inspect
from cxr_infer.preprocess import preprocess
from cxr_infer.readers import available_readers, read_image
from cxr_infer.session import open_session, read_contract

OOD = DATA / "ood"
POSITIVE_SETS = {"cxr3-internal/test": DATA / "cxr3-internal" / "test", "cxr3-external": DATA / "cxr3-external"}
GENERATED_SEED = 20261201  # not a seed fit-gate uses (it uses --seed and --seed + 10000)
BATCH = 16
TARGETS = {"non_chest_rejected": 0.95, "radiographs_rejected": 0.01, "cost_ratio": 0.10}


def gate_files(model: GateModel, paths: list[Path]) -> list[GateResult]:
    """The gate's verdicts for files, decoded as inference decodes them, in batches."""
    readers = available_readers()
    inspections = [inspect(read_image(p, readers)) for p in paths]
    return [v for start in range(0, len(paths), BATCH) for v in model.decide(inspections[start : start + BATCH])]


def rates(verdicts: list[GateResult], names: list[str]) -> dict[str, dict[str, Any]]:
    """Rejected count and share per name, and ``all``; score-less rejections were cheap checks."""
    groups: dict[str, list[GateResult]] = defaultdict(list)
    for verdict, name in zip(verdicts, names):
        groups[name].append(verdict)
        groups["all"].append(verdict)
    return {
        name: {"n": len(vs), "rejected": sum(v.rejected for v in vs), "rate": sum(v.rejected for v in vs) / len(vs),
               "by_cheap_check": sum(v.rejected and v.score is None for v in vs)}
        for name, vs in sorted(groups.items())
    }


def ood_rejection(model: GateModel) -> dict[str, Any]:
    """Per ``ood/`` category: all images, and apart the seen / validation / held-out parts."""
    split = model.info.card.get("ood_split", {})
    part_of = {path: part for part, paths in split.items() for path in paths}
    rows = list(csv.DictReader(open(OOD / "MANIFEST.csv", newline="", encoding="utf-8")))
    verdicts = gate_files(model, [OOD / r["path"] for r in rows])
    report = {"all": rates(verdicts, [r["category"] for r in rows])}
    for part in ("train", "val", "held_out"):
        chosen = [(v, r) for v, r in zip(verdicts, rows) if part_of.get(r["path"]) == part]
        if chosen:
            report[part] = rates([v for v, _ in chosen], [f"{r['category']} ({r['source_repo']})" if part == "held_out" else r["category"] for _, r in chosen])
    report["missed"] = [{"path": r["path"], "score": v.score} for v, r in zip(verdicts, rows) if not v.rejected]
    return report


def loco_rejection(paths: list[Path]) -> dict[str, Any]:
    """Each leave-one-category-out gate on the category it never saw."""
    report = {}
    for path in paths:
        model = GateModel.load(path, "cpu", 1)
        held = model.info.card["config"]["hold_out"]
        files = [p for category in held for p in sorted((OOD / category).glob("*.jpg"))]
        report["+".join(held)] = {**rates(gate_files(model, files), ["held out"] * len(files))["all"],
                                  "threshold": model.settings.threshold, "file": str(path)}
    return report


def generated_rejection(model: GateModel, per_kind: int) -> dict[str, Any]:
    from cxr_train.gate_negatives import GENERATORS, generate

    rng = np.random.default_rng(GENERATED_SEED)
    images, kinds = [], []
    for kind in GENERATORS:
        for seed in rng.integers(0, 2**31, per_kind):
            images.append(generate(kind, int(seed)))
            kinds.append(kind)
    inspections = [inspect(image) for image in images]
    verdicts = [v for start in range(0, len(images), BATCH) for v in model.decide(inspections[start : start + BATCH])]
    return rates(verdicts, kinds)


def false_rejects(model: GateModel) -> dict[str, Any]:
    """Per positive set: by class folder and by source (``MANIFEST.csv``); the rejected files listed."""
    sources = {}
    with open(DATA / "MANIFEST.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            sources[row["path"]] = row["source_repo"]
    report = {}
    for name, root in POSITIVE_SETS.items():
        files = sorted(p for p in root.glob("*/*") if p.is_file())
        verdicts = gate_files(model, files)
        relative = [p.relative_to(DATA).as_posix() for p in files]
        report[name] = {
            "by_class": rates(verdicts, [p.parent.name for p in files]),
            "by_source": rates(verdicts, [sources.get(r, "unknown") for r in relative]),
            "rejected": [{"path": r, "score": v.score, "reason": v.reason} for v, r in zip(verdicts, relative) if v.rejected],
        }
    return report


def cost(model: GateModel, model_names: list[str], repeats: int, images: int) -> dict[str, Any]:
    """Milliseconds per decoded image: gate vs each bundled classifier (probabilities only)."""
    readers = available_readers()
    files = sorted((DATA / "cxr3-external").glob("*/*.jpg"))[:images]
    start = time.perf_counter()
    decoded = [read_image(p, readers) for p in files]
    decode_ms = 1000 * (time.perf_counter() - start) / len(files)

    def gate_all() -> object:
        inspections = [inspect(image) for image in decoded]
        return [model.decide(inspections[i : i + BATCH]) for i in range(0, len(decoded), BATCH)]

    report: dict[str, Any] = {"images": len(decoded), "batch": BATCH, "decode_ms": decode_ms, "models": {}}
    for name in model_names:
        path = bundled_models()[name]
        session = open_session(path, "cpu", 1)
        spec = read_contract(session, path).preprocess
        classify = _classifier(session, spec, decoded)
        samples = interleave({"gate": gate_all, "classify": classify}, len(decoded), repeats)
        report["models"][name] = {
            "gate_ms": 1000 / Summary.of(samples["gate"]).median,
            "classify_ms": 1000 / Summary.of(samples["classify"]).median,
            "gate_over_classify": paired_ratio(samples["classify"], samples["gate"]).as_dict(),
        }
    return report


def _classifier(session, spec, decoded: list[np.ndarray]) -> Callable[[], object]:
    def run() -> object:
        tensors = np.stack([preprocess(image, spec) for image in decoded])
        return [session.run([PROBS], {INPUT: tensors[i : i + BATCH]}) for i in range(0, len(decoded), BATCH)]

    return run


def run_gate(gate: Path | None, loco: list[Path], models: list[str], repeats: int, per_kind: int, cost_images: int, out: Path) -> Path:
    """All gate measurements into ``out/results-gate.json``."""
    model = GateModel.load(gate, "cpu", 1)
    results = {
        "gate": {"file": str(model.info.path), "sha256": model.info.sha256, "threshold": model.settings.threshold,
                 "chosen_on": model.settings.chosen_on, "hold_out": model.info.card.get("config", {}).get("hold_out", [])},
        "machine": describe(),
        "load_before": load_average(),
        "ood": ood_rejection(model),
        "generated": generated_rejection(model, per_kind),
        "loco": loco_rejection(loco),
        "false_rejects": false_rejects(model),
        "cost": cost(model, models, repeats, cost_images),
    }
    return save_results(results, out, "results-gate.json")


def _pct(entry: dict[str, Any]) -> str:
    return f"{entry['rate']:.1%} ({entry['rejected']}/{entry['n']})"


def gate_section(results: dict[str, Any]) -> list[str]:
    """The "Input gate" section of RESULTS.md."""
    from benchmarks.report import table

    gate, ood = results["gate"], results["ood"]
    lines = ["## 8. Input gate", "",
             f"Gate `{Path(gate['file']).name}` (sha256 {gate['sha256'][:12]}), threshold {gate['threshold']:.4f}: "
             f"{gate['chosen_on']}. Held out of its training: {', '.join(gate['hold_out']) or 'nothing'}. "
             f"Load average {results['load_before']} before, {results['load_after']} after.", "",
             "**Non-chest inputs rejected** (target >= 95 %), per `ood/` category; *seen* images were in the "
             "gate's training set, *val* ones chose its epoch and threshold, *held out* ones it never saw:", ""]
    categories = sorted(k for k in ood["all"] if k != "all") + ["all"]
    rows = [[c, _pct(ood["all"][c]), *(_pct(ood[p][c]) if c in ood.get(p, {}) else "-" for p in ("train", "val"))] for c in categories]
    lines += table(["category", "all", "seen (train)", "val"], rows)
    if "held_out" in ood:
        lines += table(["held-out source", "rejected"], [[k, _pct(v)] for k, v in ood["held_out"].items() if k != "all"])
    if results["loco"]:
        lines += ["**Leave one category out**: a gate trained without the category, on that category:", ""]
        lines += table(["held-out category", "rejected", "its threshold"], [[k, _pct(v), f"{v['threshold']:.4f}"] for k, v in results["loco"].items()])
    lines += ["**Generated negatives** (seeds never used in training; blank ones fall to the cheap checks):", ""]
    lines += table(["kind", "rejected", "by a cheap check"], [[k, _pct(v), v["by_cheap_check"]] for k, v in results["generated"].items()])
    lines += ["**Real frontal radiographs rejected** (target <= 1 %):", ""]
    rows = []
    for name, entry in results["false_rejects"].items():
        rows += [[name, f"class {k}", _pct(v)] for k, v in entry["by_class"].items()]
        rows += [[name, f"source {k}", _pct(v)] for k, v in entry["by_source"].items() if k != "all"]
    lines += table(["set", "part", "rejected"], rows)
    c = results["cost"]
    lines += [f"**Cost per decoded image** (target <= 10 % of classification), {c['images']} external radiographs, "
              f"batch {c['batch']}, one thread each, interleaved; decoding alone costs {c['decode_ms']:.2f} ms:", ""]
    lines += table(["model", "gate ms", "classification ms", "gate / classification, median [IQR]"],
                   [[m, f"{v['gate_ms']:.3f}", f"{v['classify_ms']:.3f}",
                     f"{v['gate_over_classify']['median']:.1%} [{v['gate_over_classify']['q1']:.1%}-{v['gate_over_classify']['q3']:.1%}]"]
                    for m, v in c["models"].items()])
    return lines
