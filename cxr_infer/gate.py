"""The input gate: "is this a frontal chest radiograph?" asked before any classifier answers.

A classifier trained on three chest classes gives one of them to *anything*: a black frame, a
photo, a page of text, a lateral view. The gate stands in front of every path (``cxr-infer``, the
:class:`~cxr_infer.api.Classifier` API, ``serve-dicom``) and every model, bundled or plugin,
because it depends on nothing the classifier knows. It decides in two steps:

1. **Cheap checks** on the decoded image (too small, extreme aspect ratio, blank or
   near-constant) and, for DICOM, on the header (Modality not CR/DX, a lateral or oblique
   ViewPosition, a BodyPartExamined that is not the chest). Each gives a reason in words.
2. **A learned check**: a tiny CNN (``exported/gate/gate.onnx``, 64 px, trained by
   ``cxr-train fit-gate``) scores P(frontal chest radiograph); below the threshold stored in
   the file (``cxr.gate`` metadata, chosen on validation data), the input is rejected.

Modes: ``reject`` (default: a rejected input gets no class), ``warn`` (it is classified, and
flagged), ``off`` (no gate; the gate columns stay empty).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset

from cxr_infer.contract import INPUT, PROBS, ContractError
from cxr_infer.preprocess import PreprocessSpec, preprocess, to_gray

GATE_MODES = ("reject", "warn", "off")
DEFAULT_MODE = "reject"
PASS, REJECT = "pass", "reject"
GATE_CLASSES = ("frontal", "other")
GATE_SPEC = PreprocessSpec(size=64)
KEY_GATE = "cxr.gate"
GATE_FILE = Path("gate") / "gate.onnx"  # inside the bundled exported/ folder

MIN_SIDE = 64  # pixels on the short side; the ood/ and shared data never go below 128
MAX_ASPECT = 2.5  # long side / short side; chest films are about 0.8-1.3
MIN_CONTRAST = 0.02  # 0.5-99.5 percentile spread, as a share of the image's full scale
CHEST_MODALITIES = ("CR", "DX")
NOT_FRONTAL_VIEWS = {"LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral", "RLO": "oblique", "LLO": "oblique"}
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG")


@dataclass(frozen=True)
class GateSettings:
    """The ``cxr.gate`` metadata of a gate model: which output class means "frontal chest
    radiograph", the threshold on its probability, and how that threshold was chosen."""

    positive_class: str
    threshold: float
    chosen_on: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> "GateSettings":
        try:
            data = json.loads(text)
            settings = cls(**data)
        except (ValueError, TypeError) as error:
            raise ContractError(f"{source}: metadata {KEY_GATE} is not a gate description ({error})") from error
        if not 0.0 <= settings.threshold <= 1.0:
            raise ContractError(f"{source}: {KEY_GATE} threshold {settings.threshold} is not a probability")
        return settings


@dataclass(frozen=True)
class GateResult:
    """The gate's answer for one input: ``verdict`` pass/reject ("" when the gate is off),
    ``score`` P(frontal chest radiograph) from the learned check (``None`` when a cheap check
    already decided), and the reason in words for a rejection."""

    verdict: str = ""
    score: float | None = None
    reason: str = ""

    @property
    def rejected(self) -> bool:
        return self.verdict == REJECT


@dataclass(frozen=True)
class Inspection:
    """What a worker thread found out about one image: a cheap-check reason, or the gate input."""

    reason: str | None = None
    tensor: np.ndarray | None = None


def image_reason(gray: np.ndarray) -> str | None:
    """Why a decoded 2-D image cannot be a chest radiograph by its shape, or ``None``."""
    h, w = gray.shape[:2]
    if min(h, w) < MIN_SIDE:
        return f"image too small for a radiograph: {w}x{h} pixels (the short side must be at least {MIN_SIDE})"
    if max(h, w) / min(h, w) > MAX_ASPECT:
        return f"extreme aspect ratio {max(h, w) / min(h, w):.1f}:1 for a chest radiograph (at most {MAX_ASPECT}:1)"
    return None


def blank_reason(thumbnail: np.ndarray, dtype: np.dtype) -> str | None:
    """Why a (downsampled) image is blank or near-constant, or ``None``.

    The spread between the 0.5th and 99.5th percentile is compared with the image's full scale:
    255 for 8-bit data, otherwise its largest magnitude (16-bit PNGs and DICOM use any part
    of their range, so a fixed bit depth would call a real 10-bit film blank).
    """
    lo, hi = np.percentile(thumbnail, (0.5, 99.5))
    full_scale = 255.0 if dtype == np.uint8 else max(abs(float(lo)), abs(float(hi)))
    if hi - lo <= MIN_CONTRAST * full_scale:
        return f"blank or near-constant image (pixel values {lo:.4g}..{hi:.4g})"
    return None


def header_reason(ds: Dataset) -> str | None:
    """Why a DICOM header says this is not a frontal chest radiograph, or ``None``.

    Only what the header states is judged: a missing Modality, ViewPosition or
    BodyPartExamined is no reason (many exports leave them empty); the learned check decides.
    """
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality not in CHEST_MODALITIES:
        return f"DICOM Modality {modality} is not a radiograph ({'/'.join(CHEST_MODALITIES)})"
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if view in NOT_FRONTAL_VIEWS:
        return f"DICOM ViewPosition {view} is a {NOT_FRONTAL_VIEWS[view]} view, not frontal (PA/AP)"
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and not any(part in body_part for part in CHEST_BODY_PARTS):
        return f"DICOM BodyPartExamined {body_part} is not the chest"
    return None


def dicom_header(path: Path) -> Dataset | None:
    """The header of a DICOM file (pixels not read), or ``None`` for a file that is not DICOM.

    Read apart from the pixels (which the reader already decoded) because readers return
    images only; a header is a few kilobytes, so this costs a small part of a decode.
    """
    import pydicom

    from cxr_infer.readers import DICOM_EXTENSIONS, is_dicom

    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
        if not is_dicom(head) and path.suffix.lower() not in (*DICOM_EXTENSIONS, ""):
            return None
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # not DICOM after all: the image checks and the learned check still apply
        return None


def inspect(image: np.ndarray, header: Dataset | None = None) -> Inspection:
    """The cheap checks, then the learned check's input (worker thread, per image).

    The gate input is preprocessed from a 64x64 area-averaged thumbnail, which equals
    preprocessing the full image (the same resize happens first there), so the blank check and
    the gate share one pass over the pixels.
    """
    reason = header_reason(header) if header is not None else None
    if reason:
        return Inspection(reason)
    gray = to_gray(np.asarray(image))
    reason = image_reason(gray)
    if reason:
        return Inspection(reason)
    size = (GATE_SPEC.size, GATE_SPEC.size)
    thumbnail = cv2.resize(gray.astype(np.float32, copy=False), size, interpolation=cv2.INTER_AREA)
    reason = blank_reason(thumbnail, gray.dtype)
    if reason:
        return Inspection(reason)
    return Inspection(tensor=preprocess(thumbnail, GATE_SPEC))


class GateModel:
    """The learned check: an onnxruntime session of a gate ONNX file and its ``cxr.gate`` settings."""

    def __init__(self, session, path: Path):
        from cxr_infer.session import read_contract

        self.info = read_contract(session, path)
        props = session.get_modelmeta().custom_metadata_map
        if KEY_GATE not in props:
            raise ContractError(f"{path}: not a gate model (no {KEY_GATE} metadata)")
        self.settings = GateSettings.from_json(props[KEY_GATE], path)
        if self.settings.positive_class not in self.info.classes:
            raise ContractError(f"{path}: {KEY_GATE} names class {self.settings.positive_class!r}, not among {list(self.info.classes)}")
        if self.info.preprocess != GATE_SPEC:
            raise ContractError(f"{path}: gate preprocessing {self.info.preprocess.to_json()} differs from {GATE_SPEC.to_json()}")
        self._positive = self.info.classes.index(self.settings.positive_class)
        self._session = session

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto", threads: int | None = None) -> "GateModel":
        """Open a gate ONNX file (default: the bundled one)."""
        from cxr_infer.session import open_session

        path = Path(path) if path is not None else bundled_gate()
        return cls(open_session(path, device, threads), path)

    def scores(self, tensors: np.ndarray) -> np.ndarray:
        """P(frontal chest radiograph) for a batch of gate inputs (N, 1, 64, 64)."""
        probs = self._session.run([PROBS], {INPUT: tensors})[0]
        return probs[:, self._positive]

    def decide(self, inspections: Sequence[Inspection]) -> list[GateResult]:
        """Verdicts for a batch: cheap-check reasons stand; the rest are scored in one run."""
        results = [GateResult(REJECT, None, i.reason) if i.reason else None for i in inspections]
        pending = [k for k, result in enumerate(results) if result is None]
        if pending:
            batch = np.stack([inspections[k].tensor for k in pending])
            for k, score in zip(pending, self.scores(batch)):
                results[k] = self._verdict(float(score))
        return results

    def _verdict(self, score: float) -> GateResult:
        if score >= self.settings.threshold:
            return GateResult(PASS, score)
        return GateResult(
            REJECT,
            score,
            f"not a frontal chest radiograph (gate score {score:.3f} < threshold {self.settings.threshold:.3f})",
        )


def bundled_gate() -> Path:
    from cxr_infer.bundled import ModelNotFoundError, exported_dir

    path = exported_dir() / GATE_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: the bundled input gate is missing; reinstall, or use gate='off' (--gate off)")
    return path


def check_mode(mode: str) -> str:
    if mode not in GATE_MODES:
        raise ValueError(f"unknown gate mode {mode!r} (choose from {', '.join(GATE_MODES)})")
    return mode
