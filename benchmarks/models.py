"""The models under test: fp32 ONNX with and without explain outputs, int8, and their checkpoint.

With torch installed, every file is exported here from one checkpoint (the newest trained
``runs/*/best.pt`` of the architecture, else a seeded random initialization: speed does not
depend on the weights), so PyTorch and onnxruntime compare the very same weights. Without
torch, the shipped ``exported/*.onnx`` files are used as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from benchmarks.machine import installed
from cxr_infer.contract import CLASSIFY_OUTPUTS, INPUT, ModelInfo

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
EXPORTED = ROOT / "exported"
CLASSES = ["covid", "normal", "pneumonia"]


@dataclass(frozen=True)
class ModelFiles:
    """One architecture's files; a missing variant is ``None`` and its measurements are skipped."""

    arch: str
    explain: Path | None
    plain: Path | None = None
    int8: Path | None = None
    checkpoint: Path | None = None
    trained: bool = False
    source: str = ""

    @property
    def reference(self) -> Path:
        """The fp32 file whose metadata (classes, preprocessing) describes all variants."""
        found = self.explain or self.plain
        if found is None:
            raise FileNotFoundError(f"{self.arch}: no fp32 ONNX file")
        return found


def shown(path: Path) -> str:
    """A path as results print it: relative to the checkout when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def read_info(path: Path) -> ModelInfo:
    """The ``cxr.*`` metadata of an ONNX file, validated by the inference side's contract."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, path)


def from_files(paths: list[Path], checkpoints: list[Path] = ()) -> list[ModelFiles]:
    """Group ONNX files by the architecture their metadata names, each file's role told by its
    metadata (int8, explain, plain); a checkpoint joins the group of its architecture."""
    found: dict[str, dict[str, Path]] = {}
    for path in paths:
        info = read_info(path)
        kind = {"int8-qdq": "int8"}.get(info.quantized, info.quantized) or ("explain" if info.explain else "plain")
        found.setdefault(info.model, {}).setdefault(kind, path)
    by_arch = {}
    if checkpoints:
        from cxr_train.checkpoint import Checkpoint

        by_arch = {Checkpoint.load(path).model: path for path in checkpoints}
    return [
        ModelFiles(arch, kinds.get("explain"), kinds.get("plain"), kinds.get("int8"), by_arch.get(arch),
                   trained=_trained(kinds), source=", ".join(shown(p) for p in kinds.values()))
        for arch, kinds in found.items()
    ]


def with_plain(model: ModelFiles, work: Path) -> ModelFiles:
    """Give a group without a logits-only file one cut from its explain file: the same nodes up
    to ``logits`` and ``probs``, so explain/plain compares the same weights and graph. Shipped
    models come as explain files only. Needs the ``onnx`` package (else the group is unchanged)."""
    if model.plain is not None or model.explain is None or not installed("onnx"):
        return model
    import dataclasses

    import onnx
    from onnx.utils import Extractor

    key = hashlib.sha256(model.explain.read_bytes()).hexdigest()[:12]
    out = work / f"{model.explain.stem}-{key}-plain.onnx"
    if not out.exists():
        work.mkdir(parents=True, exist_ok=True)
        cut = Extractor(onnx.load(str(model.explain))).extract_model([INPUT], list(CLASSIFY_OUTPUTS))
        info = dataclasses.replace(read_info(model.explain), outputs=CLASSIFY_OUTPUTS)
        cut.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in info.to_metadata().items())
        onnx.save_model(cut, str(out))
    return dataclasses.replace(model, plain=out)


def _trained(kinds: dict[str, Path]) -> bool:
    """Whether the files' metadata records training data (random-init test models record none)."""
    info = read_info(next(iter(kinds.values())))
    return bool(info.trained_on.get("datasets")) and "random-init" not in info.trained_on["datasets"]


def shipped(arch: str, folder: Path = EXPORTED) -> ModelFiles:
    """The shipped files of ``arch`` in ``exported/`` (empty when none ships)."""
    groups = [m for m in from_files(sorted(folder.glob("*.onnx"))) if m.arch == arch]
    return groups[0] if groups else ModelFiles(arch, None, source=f"none in {shown(folder)}/ and no torch to export one")


def newest_trained(arch: str, runs: Path = RUNS) -> Path | None:
    """The newest ``runs/*/best.pt`` holding ``arch`` (checkpoints name their architecture)."""
    from cxr_train.checkpoint import Checkpoint

    candidates = sorted(runs.glob("*/best.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((path for path in candidates if Checkpoint.load(path).model == arch), None)


def random_checkpoint(arch: str, size: int, work: Path) -> Path:
    """A seeded random-init checkpoint (the speed of a network does not depend on its weights)."""
    import torch

    from cxr_infer.preprocess import PreprocessSpec
    from cxr_train.checkpoint import Checkpoint
    from cxr_train.models import get_model_spec

    path = work / f"{arch}-random-{size}.pt"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        spec = get_model_spec(arch)
        torch.manual_seed(0)
        network = spec.factory(len(CLASSES), False).eval()
        Checkpoint(arch, CLASSES, network.state_dict(), PreprocessSpec(size=size), spec.target_layer,
                   trained_on={"datasets": ["random-init"]}).save(path)
    return path


@dataclass(frozen=True)
class Int8Plan:
    """How to quantize: calibration images, and the labelled folder int8 is compared on (the
    quantizer stores that agreement report in the int8 file's metadata)."""

    calibration: Path
    calibration_images: int
    compare: Path
    compare_images: int | None  # None: the whole folder


def exported_from(checkpoint: Path, work: Path, int8_plan: Int8Plan | None) -> ModelFiles:
    """Export (once, cached by checkpoint hash) the explain and plain files of a checkpoint, and
    the int8 file of the explain one when an ``int8_plan`` is given."""
    from cxr_train.checkpoint import Checkpoint
    from cxr_train.export import export_onnx

    loaded = Checkpoint.load(checkpoint)
    key = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    explain, plain, int8 = (work / f"{loaded.model}-{key}-{kind}.onnx" for kind in ("explain", "plain", "int8"))
    work.mkdir(parents=True, exist_ok=True)
    for path, with_explain in ((explain, True), (plain, False)):
        if not path.exists():
            export_onnx(loaded, path, explain=with_explain)
    if int8_plan is not None and not int8.exists():
        from cxr_train.quantize import quantize_int8

        plan = int8_plan
        quantize_int8(explain, int8, plan.calibration, plan.compare, plan.calibration_images, plan.compare_images)
    datasets = loaded.trained_on.get("datasets") or []
    return ModelFiles(loaded.model, explain, plain, int8 if int8.exists() else None, checkpoint,
                      trained=bool(datasets) and "random-init" not in datasets, source=shown(checkpoint))


def prepare(arch: str, size: int, work: Path, int8_plan: Int8Plan | None, use_runs: bool = True) -> ModelFiles:
    """The files to measure for ``arch``: exported here when torch is installed, else shipped.

    ``int8_plan=None`` skips the int8 file; ``use_runs=False`` ignores trained checkpoints
    (a tiny run wants a small random model).
    """
    if not installed("torch"):
        return shipped(arch)
    trained = newest_trained(arch) if use_runs else None
    return exported_from(trained or random_checkpoint(arch, size, work), work, int8_plan)
