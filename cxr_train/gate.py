"""``cxr-train fit-gate``: train the input gate's "is this a frontal chest radiograph?" model.

Positives are every radiograph of ``DATA/train`` (all classes and sources: they are all frontal
chest films); negatives are the ``ood/`` images (laterals, CT, other radiographs, photos,
documents) plus generated ones (:mod:`cxr_train.gate_negatives`). The network is deliberately
tiny (64 px, four conv blocks, about 20k weights) so that it costs a few per cent of a
classification and trains in minutes on one CPU thread.

Selection never looks at a test set: the epoch and the threshold are chosen on ``DATA/val``
positives plus a held-in part of ``ood/`` (split by patient or figure, so near-identical images
of one patient never sit on both sides) and generated images of another seed. ``--hold-out``
removes whole ``ood/`` categories or sources from training and validation, and the report says
how many of them the gate still rejects: the honest measure of how it meets inputs nobody here has.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from cxr_infer import __version__
from cxr_infer.contract import CLASSIFY_OUTPUTS, ModelInfo
from cxr_infer.gate import GATE_CLASSES, GATE_SPEC, KEY_GATE, GateSettings
from cxr_infer.metrics import classification_metrics
from cxr_infer.preprocess import preprocess
from cxr_infer.readers import available_readers, read_image
from cxr_train.augment import build_pipeline
from cxr_train.data import discover, load_tensors
from cxr_train.export import build_graph, graph_to_onnx, model_opset, write_model
from cxr_train.fit import seed_everything
from cxr_train.gate_negatives import generate_many

POSITIVE, NEGATIVE = 0, 1
AUGMENT = [
    "affine:p=0.7,degrees=10.0,scale=0.12,translate=0.08",
    "crop:p=0.5,min_area=0.6,max_aspect=1.33",
    "contrast:p=0.5,strength=0.3",
    "gamma:p=0.5,strength=0.4",
    "blur:p=0.3,sigma=1.0",
    "gaussian_noise:p=0.3,std=0.03",
]
SHARES = {"positive": 0.5, "ood": 0.3, "generated": 0.2}  # of the draws per epoch


@dataclass
class GateConfig:
    """Every option of ``cxr-train fit-gate``; stored in the report and the model card."""

    data: str
    ood: str
    out: str
    hold_out: list[str] = field(default_factory=list)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    generated: int = 1600
    val_fraction: float = 0.3
    max_false_reject: float = 0.0
    seed: int = 0
    threads: int = 1


@dataclass(frozen=True)
class OodImage:
    path: Path
    category: str
    source: str
    group: str  # patient or figure: images of one group stay on one side of the split


class GateNet(nn.Module):
    """Four 3x3 conv blocks (8-16-32-32 channels) and a linear head on the 4x4 map.

    The head keeps the spatial layout (no global pooling): "two lung fields side by side" is
    exactly what separates a frontal film from a lateral one.
    """

    def __init__(self) -> None:
        super().__init__()
        blocks, channels = [], 1
        for width in (8, 16, 32, 32):
            blocks += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(channels * 4 * 4, len(GATE_CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def read_ood(root: Path) -> list[OodImage]:
    """The ``ood/MANIFEST.csv`` rows as images with category, source and patient/figure group."""
    with open(root / "MANIFEST.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    images = []
    for row in rows:
        patient = re.search(r"patient (\d+)", row["note"])
        group = f"patient {patient.group(1)}" if patient else row["path"]
        images.append(OodImage(root / row["path"], row["category"], row["source_repo"], group))
    return images


def split_ood(images: list[OodImage], hold_out: list[str], val_fraction: float, seed: int) -> dict[str, list[OodImage]]:
    """``held_out`` (categories or sources named in ``hold_out``), and ``train``/``val`` of the rest,
    split by group within each category."""
    held = [i for i in images if i.category in hold_out or i.source in hold_out]
    rest = [i for i in images if i not in held]
    rng = random.Random(seed)
    val_groups: set[tuple[str, str]] = set()
    for category in sorted({i.category for i in rest}):
        groups = sorted({i.group for i in rest if i.category == category})
        rng.shuffle(groups)
        val_groups |= {(category, g) for g in groups[: max(1, round(len(groups) * val_fraction))]}
    return {
        "train": [i for i in rest if (i.category, i.group) not in val_groups],
        "val": [i for i in rest if (i.category, i.group) in val_groups],
        "held_out": held,
    }


def ood_tensors(images: list[OodImage]) -> torch.Tensor:
    readers = available_readers()
    arrays = [preprocess(read_image(i.path, readers), GATE_SPEC) for i in images]
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 1, GATE_SPEC.size, GATE_SPEC.size)


def generated_tensors(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    made = generate_many(n, seed)
    return torch.from_numpy(np.stack([preprocess(image, GATE_SPEC) for _, image in made])), [kind for kind, _ in made]


@dataclass
class GateData:
    """All tensors of one run, by part; labels follow from the part (positives or not)."""

    parts: dict[str, torch.Tensor]
    names: dict[str, list[str]]  # per-image category (ood), kind (generated) or class (positives)

    def train(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x, y and per-image draw weights realising :data:`SHARES`."""
        pieces = {"positive": self.parts["positive_train"], "ood": self.parts["ood_train"], "generated": self.parts["generated_train"]}
        x = torch.cat(list(pieces.values()))
        y = torch.cat([torch.full((len(t),), POSITIVE if k == "positive" else NEGATIVE) for k, t in pieces.items()])
        w = torch.cat([torch.full((len(t),), SHARES[k] / max(len(t), 1)) for k, t in pieces.items()])
        return x, y, w


def load_data(config: GateConfig, split: dict[str, list[OodImage]]) -> GateData:
    data = Path(config.data)
    cache = Path(config.out) / "cache"
    sets = {name: discover(data / name) for name in ("train", "val")}
    positives = {name: load_tensors(s, GATE_SPEC, cache, config.threads)[0] for name, s in sets.items()}
    parts, names = {}, {}
    for name, s in sets.items():
        parts[f"positive_{name}"], names[f"positive_{name}"] = positives[name], [s.classes[k] for k in s.labels]
    for name, images in split.items():
        parts[f"ood_{name}"], names[f"ood_{name}"] = ood_tensors(images), [i.category for i in images]
    for name, seed in (("train", config.seed), ("val", config.seed + 10_000)):
        count = config.generated if name == "train" else config.generated // 4
        parts[f"generated_{name}"], names[f"generated_{name}"] = generated_tensors(count, seed)
    return GateData(parts, names)


def scores(network: nn.Module, x: torch.Tensor) -> np.ndarray:
    """P(frontal chest radiograph) per image, as the exported graph computes it."""
    network.eval()
    with torch.inference_mode():
        return torch.cat([torch.softmax(network(b), 1)[:, POSITIVE] for b in x.split(256)]).numpy() if len(x) else np.empty(0)


def choose_threshold(positive_scores: np.ndarray, max_false_reject: float) -> float:
    """The highest threshold (reject below it) that rejects at most ``max_false_reject`` of the
    validation radiographs: as strict as the false-reject budget allows."""
    ordered = np.sort(positive_scores)
    allowed = int(np.floor(max_false_reject * len(ordered)))
    return float(ordered[allowed])


def rejection(values: np.ndarray, names: list[str], threshold: float) -> dict[str, dict[str, float]]:
    """Rejected share and count per name (category, kind or class), plus ``all``."""
    rejected = values < threshold
    table = {}
    for name in sorted(set(names)) + ["all"]:
        mask = np.ones(len(names), bool) if name == "all" else np.asarray([n == name for n in names])
        if mask.any():
            table[name] = {"n": int(mask.sum()), "rejected": int(rejected[mask].sum()), "rate": float(rejected[mask].mean())}
    return table


def validate(network: nn.Module, data: GateData, max_false_reject: float) -> dict[str, Any]:
    """Threshold from val positives; rejection of val negatives at it (the selection figure)."""
    positive = scores(network, data.parts["positive_val"])
    negative = np.concatenate([scores(network, data.parts["ood_val"]), scores(network, data.parts["generated_val"])])
    threshold = choose_threshold(positive, max_false_reject)
    ood = scores(network, data.parts["ood_val"])
    return {
        "threshold": threshold,
        "false_reject": float((positive < threshold).mean()),
        "negatives_rejected": float((negative < threshold).mean()),
        "ood_rejected": float((ood < threshold).mean()) if len(ood) else None,
        "margin": float(np.median(positive) - np.quantile(negative, 0.95)),
    }


def train(config: GateConfig, data: GateData) -> tuple[GateNet, dict[str, Any], list[dict]]:
    """Train with weighted draws and augmentation; keep the epoch with the best val rejection."""
    network = GateNet()
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=1e-4)
    x, y, weights = data.train()
    steps = max(1, len(x) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps * config.epochs)
    augment = build_pipeline(AUGMENT)
    generator = torch.Generator().manual_seed(config.seed)
    best: tuple[tuple[float, float], dict[str, torch.Tensor], dict[str, Any]] | None = None
    log = []
    for epoch in range(config.epochs):
        network.train()
        started, total = time.perf_counter(), 0.0
        for _ in range(steps):
            index = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
            batch = _flip(augment(x[index], generator), generator)
            loss = F.cross_entropy(network(batch), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        val = validate(network, data, config.max_false_reject)
        log.append({"epoch": epoch + 1, "loss": total / steps, "seconds": time.perf_counter() - started, **val})
        print(json.dumps(log[-1]), file=sys.stderr)
        key = (val["negatives_rejected"], val["margin"])
        if best is None or key > best[0]:
            best = (key, {k: v.clone() for k, v in network.state_dict().items()}, {"epoch": epoch + 1, **val})
    network.load_state_dict(best[1])
    return network.eval(), best[2], log


def _flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror half the images: side markers and situs aside, a mirrored film is still a film."""
    chosen = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(chosen.view(-1, 1, 1, 1), batch.flip(-1), batch)


def evaluate(network: nn.Module, data: GateData, threshold: float) -> dict[str, Any]:
    """Per-part rejection tables at the chosen threshold (train parts are seen data: optimistic)."""
    report = {}
    for part, x in data.parts.items():
        if len(x):
            report[part] = rejection(scores(network, x), data.names[part], threshold)
    return report


def val_metrics(network: nn.Module, data: GateData) -> dict[str, Any]:
    """The two-class report (frontal / other) on the validation parts, for the model card."""
    parts = ("positive_val", "ood_val", "generated_val")
    x = torch.cat([data.parts[p] for p in parts])
    y = np.concatenate([np.full(len(data.parts[p]), POSITIVE if p.startswith("positive") else NEGATIVE) for p in parts])
    frontal = scores(network, x)
    return classification_metrics(y, np.stack([frontal, 1 - frontal], axis=1), list(GATE_CLASSES))


def export_gate(network: GateNet, config: GateConfig, settings: GateSettings, report: dict[str, Any], out: Path) -> ModelInfo:
    """Write the self-describing ONNX file: the classifier contract (logits, probs; no Grad-CAM
    outputs) plus ``cxr.gate`` (which class is "frontal", the threshold and how it was chosen)."""
    model = graph_to_onnx(build_graph(network, "", len(GATE_CLASSES), GATE_SPEC.size, explain=False), GATE_SPEC.size, CLASSIFY_OUTPUTS, None)
    info = ModelInfo(
        classes=GATE_CLASSES,
        preprocess=GATE_SPEC,
        model="gatenet",
        target_layer="",
        outputs=CLASSIFY_OUTPUTS,
        trained_on={"datasets": [f"{Path(config.data).name}/train", Path(config.ood).name, "generated"], "hold_out": config.hold_out},
        metrics={"gate validation (cxr3-internal/val + held-in ood val + generated)": report["val_metrics"]},
        toolkit_version=__version__,
        exported_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        opset=model_opset(model),
        name="gate",
        card={
            "command": report["command"],
            "config": asdict(config),
            "epoch": report["selected"]["epoch"],
            "torch": torch.__version__,
            "ood_split": report["ood_split"],  # which ood/ images the gate saw: benchmarks score the others apart
        },
    )
    write_model(model, info, out)
    write_settings(out, settings)
    return info


def write_settings(path: Path, settings: GateSettings) -> None:
    """Store (or replace) the ``cxr.gate`` metadata of a gate ONNX file."""
    model = onnx.load(str(path))
    kept = [prop for prop in model.metadata_props if prop.key != KEY_GATE]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=KEY_GATE, value=settings.to_json())
    onnx.save_model(model, str(path))


def rethreshold(path: Path, data: Path, max_false_reject: float, threads: int = 1) -> GateSettings:
    """Choose a gate file's threshold again on ``DATA/val`` radiographs (``cxr-train gate-threshold``)
    and store it in the file; the network is unchanged."""
    from cxr_infer.gate import GateModel

    model = GateModel.load(path, "cpu", threads)
    val = discover(data / "val")
    scored = model.scores(load_tensors(val, GATE_SPEC, None, threads)[0].numpy())
    threshold = choose_threshold(scored, max_false_reject)
    chosen_on = (
        f"highest threshold rejecting at most {max_false_reject:.1%} of the {len(scored)} {data.name}/val radiographs "
        f"(val false-reject {(scored < threshold).mean():.2%})"
    )
    settings = GateSettings(model.settings.positive_class, threshold, chosen_on)
    write_settings(path, settings)
    return settings


def fit_gate(config: GateConfig, command: str = "") -> Path:
    """Train, choose the threshold on validation, evaluate every part, export; returns the ONNX path."""
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    split = split_ood(read_ood(Path(config.ood)), config.hold_out, config.val_fraction, config.seed)
    data = load_data(config, split)
    network, selected, log = train(config, data)
    threshold = selected["threshold"]
    report = {
        "command": command,
        "config": asdict(config),
        "selected": selected,
        "seconds": time.perf_counter() - started,
        "rejection": evaluate(network, data, threshold),
        "ood_split": {name: sorted(str(i.path.relative_to(config.ood)) for i in images) for name, images in split.items()},
        "val_metrics": val_metrics(network, data),
        "log": log,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    torch.save({"state_dict": network.state_dict(), "config": asdict(config), "threshold": threshold}, out / "gate.pt")
    settings = GateSettings(positive_class=GATE_CLASSES[POSITIVE], threshold=threshold, chosen_on=_chosen_on(config, selected))
    path = out / "gate.onnx"
    export_gate(network, config, settings, report, path)
    (out / "gate.md").write_text(gate_card(report, path), encoding="utf-8")
    return path


def gate_card(report: dict[str, Any], onnx_path: Path) -> str:
    """The gate's model card (Markdown): identity, how it was trained and chosen, and what it
    rejects on every part of its data at the chosen threshold."""
    from cxr_infer.gate import GateModel

    model = GateModel.load(onnx_path, "cpu", 1)
    selected, config = report["selected"], report["config"]
    lines = [
        "# Input gate: is this a frontal chest radiograph?",
        "",
        f"- file: `{onnx_path.name}`, sha256 `{model.info.sha256}`, {onnx_path.stat().st_size / 1024:.0f} KiB",
        f"- network: `gatenet` (4 conv blocks 8-16-32-32, linear head on the 4x4 map), input 64x64 via `{GATE_SPEC.to_json()}`",
        f"- outputs: `logits`, `probs` over {list(GATE_CLASSES)}; gate score = P(`{model.settings.positive_class}`)",
        f"- threshold {model.settings.threshold:.4f}: {model.settings.chosen_on}; selected epoch {selected['epoch']} of {config['epochs']}",
        f"- trained by `{report['command']}` in {report['seconds']:.0f} s ({config['threads']} thread(s))",
        f"- held out of training and validation: {', '.join(config['hold_out']) or 'nothing'}",
        "",
        "Positives: every image of `cxr3-internal/train` (all classes and sources). Negatives: `ood/` "
        "(split by patient or figure into train/val per category) and generated images (noise, clouds, "
        "ramps, patterns, rendered pages, shapes, colour scenes, near-blank frames; see "
        "`cxr_train/gate_negatives.py`). Before this model, cheap checks reject blank, tiny and "
        "elongated images and DICOM headers that name another modality, a lateral view or another body part.",
        "",
        f"## Rejected at the threshold fit-gate chose ({selected['threshold']:.4f}; from training's report, "
        "`python -m benchmarks gate` measures the shipped file at its own threshold)",
        "",
        "| part | group | rejected |",
        "| --- | --- | --- |",
    ]
    for part, table in report["rejection"].items():
        for group, entry in table.items():
            lines.append(f"| {part} | {group} | {entry['rate']:.1%} ({entry['rejected']}/{entry['n']}) |")
    lines += [
        "",
        "`positive_*` rows are false rejects of real radiographs; `*_train` rows were seen in training (optimistic).",
        "",
        "## Limitations",
        "",
        "- It knows frontal chest radiographs of the sources in `cxr3-internal` (pediatric Kermany, NIH, a teaching "
        "file, covid collections) and a narrow set of negatives: other radiographs are mostly hands and a few dental "
        "images; no abdomen, spine, skull, knee or mammography images were available to train on.",
        "- A frontal chest radiograph of very unusual look (heavy burned-in annotation, a photo of a film, extreme "
        "rotation) may be rejected; use `--gate warn` to classify anyway and see the score.",
        "- Research and engineering use only; not for clinical use.",
        "",
    ]
    return "\n".join(lines)


def _chosen_on(config: GateConfig, selected: dict[str, Any]) -> str:
    return (
        f"highest threshold rejecting at most {config.max_false_reject:.1%} of {Path(config.data).name}/val radiographs "
        f"(val false-reject {selected['false_reject']:.2%}, val negatives rejected {selected['negatives_rejected']:.1%})"
    )
