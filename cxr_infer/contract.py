"""The exported-model contract: tensor names and the ``cxr.*`` metadata of every ONNX file.

The exporter (``cxr_train.export``) writes :meth:`ModelInfo.to_metadata` into the file's
``metadata_props``; inference reads it back with :meth:`ModelInfo.from_metadata`, which refuses
a file it does not fully understand instead of guessing classes, preprocessing or outputs.
This module depends on nothing heavier than the standard library and the preprocessing spec, so
both sides (and tools that only inspect files) can import it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_infer.preprocess import PreprocessSpec

CONTRACT_VERSION = 1

INPUT = "image"
LOGITS = "logits"
PROBS = "probs"
ACTIVATIONS = "activations"
GRADIENTS = "gradients"
CLASSIFY_OUTPUTS = (LOGITS, PROBS)
EXPLAIN_OUTPUTS = (ACTIVATIONS, GRADIENTS)
ALL_OUTPUTS = CLASSIFY_OUTPUTS + EXPLAIN_OUTPUTS

QUANTIZATIONS = ("int8-qdq", "fp16")  # fp16: float16 weights and compute for GPUs, float32 I/O

PREFIX = "cxr."
KEY_CONTRACT = "cxr.contract"
KEY_CLASSES = "cxr.classes"
KEY_PREPROCESS = "cxr.preprocess"
KEY_MODEL = "cxr.model"
KEY_TARGET_LAYER = "cxr.target_layer"
KEY_OUTPUTS = "cxr.outputs"
KEY_EXPLAIN = "cxr.explain"
KEY_TRAINED_ON = "cxr.trained_on"
KEY_METRICS = "cxr.metrics"
KEY_TOOLKIT_VERSION = "cxr.toolkit_version"
KEY_EXPORTED_AT = "cxr.exported_at"
KEY_OPSET = "cxr.opset"
KEY_QUANTIZED = "cxr.quantized"
KEY_QUANTIZATION = "cxr.quantization"
KEY_NAME = "cxr.name"
KEY_CARD = "cxr.card"
KEY_CALIBRATION = "cxr.calibration"

REQUIRED_KEYS = (
    KEY_CONTRACT,
    KEY_CLASSES,
    KEY_PREPROCESS,
    KEY_MODEL,
    KEY_TARGET_LAYER,
    KEY_OUTPUTS,
    KEY_EXPLAIN,
    KEY_TRAINED_ON,
    KEY_METRICS,
    KEY_TOOLKIT_VERSION,
    KEY_EXPORTED_AT,
    KEY_OPSET,
)
OPTIONAL_KEYS = (KEY_QUANTIZED, KEY_QUANTIZATION, KEY_NAME, KEY_CARD, KEY_CALIBRATION)
ALL_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS


class ContractError(ValueError):
    """An ONNX file whose metadata or tensors this toolkit does not understand; names the file."""


@dataclass(frozen=True)
class ModelInfo:
    """Everything an ONNX file says about itself, validated.

    ``outputs`` lists the graph outputs in contract order; ``explain`` is true when both
    Grad-CAM outputs are present. ``quantized`` is ``None`` for float models or a name from
    :data:`QUANTIZATIONS`; ``quantization`` then holds the calibration and agreement report.
    ``trained_on`` is ``{"datasets": [...], "file_list_sha256": ...}`` and ``metrics`` maps a
    data-set name to its report, both as the checkpoint recorded them.
    """

    classes: tuple[str, ...]
    preprocess: PreprocessSpec
    model: str
    target_layer: str
    outputs: tuple[str, ...]
    trained_on: dict[str, Any]
    metrics: dict[str, Any]
    toolkit_version: str
    exported_at: str
    opset: int
    quantized: str | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    card: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # temperature scaling folded into probs; {} = none

    def __post_init__(self) -> None:
        problems = _field_problems(self)
        if problems:
            raise ContractError("invalid model info: " + "; ".join(problems))

    @property
    def explain(self) -> bool:
        """Whether the graph outputs the activations and per-class gradients Grad-CAM needs."""
        return all(name in self.outputs for name in EXPLAIN_OUTPUTS)

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` of the ONNX file: every ``cxr.*`` key, values as JSON text."""
        values: dict[str, Any] = {
            KEY_CONTRACT: CONTRACT_VERSION,
            KEY_CLASSES: list(self.classes),
            KEY_MODEL: self.model,
            KEY_TARGET_LAYER: self.target_layer,
            KEY_OUTPUTS: list(self.outputs),
            KEY_EXPLAIN: self.explain,
            KEY_TRAINED_ON: self.trained_on,
            KEY_METRICS: self.metrics,
            KEY_TOOLKIT_VERSION: self.toolkit_version,
            KEY_EXPORTED_AT: self.exported_at,
            KEY_OPSET: self.opset,
            KEY_QUANTIZED: self.quantized,
            KEY_QUANTIZATION: self.quantization,
            KEY_NAME: self.name,
            KEY_CARD: self.card,
            KEY_CALIBRATION: self.calibration,
        }
        props = {key: json.dumps(value, sort_keys=True) for key, value in values.items()}
        props[KEY_PREPROCESS] = self.preprocess.to_json()
        return props

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str | Path) -> "ModelInfo":
        """Parse and validate ``metadata_props``; the error names ``source`` and every problem.

        Unknown ``cxr.*`` keys are tolerated (a newer exporter may add informational keys);
        an unknown contract version, a missing key or a value of the wrong type is refused.
        """
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ContractError(f"{source}: not a cxr-toolkit model or too old: missing metadata {', '.join(missing)}")
        values: dict[str, Any] = {}
        for key in ALL_KEYS:
            if key in props and key != KEY_PREPROCESS:
                try:
                    values[key] = json.loads(props[key])
                except json.JSONDecodeError as error:
                    raise ContractError(f"{source}: metadata {key} is not JSON ({error})") from error
        if values[KEY_CONTRACT] != CONTRACT_VERSION:
            raise ContractError(
                f"{source}: model contract version {values[KEY_CONTRACT]!r}, this toolkit understands {CONTRACT_VERSION}"
            )
        try:
            preprocess = PreprocessSpec.from_json(props[KEY_PREPROCESS])
        except (ValueError, TypeError) as error:
            raise ContractError(f"{source}: metadata {KEY_PREPROCESS}: {error}") from error
        try:
            info = cls(
                classes=_as_tuple(values[KEY_CLASSES]),
                preprocess=preprocess,
                model=values[KEY_MODEL],
                target_layer=values[KEY_TARGET_LAYER],
                outputs=_as_tuple(values[KEY_OUTPUTS]),
                trained_on=values[KEY_TRAINED_ON],
                metrics=values[KEY_METRICS],
                toolkit_version=values[KEY_TOOLKIT_VERSION],
                exported_at=values[KEY_EXPORTED_AT],
                opset=values[KEY_OPSET],
                quantized=values.get(KEY_QUANTIZED),
                quantization=values.get(KEY_QUANTIZATION) or {},
                name=values.get(KEY_NAME) or "",
                card=values.get(KEY_CARD) or {},
                calibration=values.get(KEY_CALIBRATION) or {},
            )
        except ContractError as error:
            raise ContractError(f"{source}: {error}") from error
        if values[KEY_EXPLAIN] is not info.explain:
            raise ContractError(
                f"{source}: metadata {KEY_EXPLAIN}={values[KEY_EXPLAIN]!r} contradicts {KEY_OUTPUTS}={list(info.outputs)}"
            )
        return info

    def check_io(self, inputs: Sequence[str], outputs: Sequence[str], source: str | Path) -> None:
        """Refuse a graph whose real input/output names differ from what its metadata promises."""
        if list(inputs) != [INPUT]:
            raise ContractError(f"{source}: graph inputs {list(inputs)}, expected [{INPUT!r}]")
        if set(outputs) != set(self.outputs):
            raise ContractError(f"{source}: graph outputs {sorted(outputs)} differ from {KEY_OUTPUTS} {sorted(self.outputs)}")


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _field_problems(info: ModelInfo) -> list[str]:
    """Type and consistency checks shared by construction and parsing."""
    problems = []
    classes = info.classes
    if not isinstance(classes, tuple) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        problems.append(f"classes must be at least two non-empty names, got {classes!r}")
    elif len(set(classes)) != len(classes):
        problems.append(f"classes repeat a name: {list(classes)}")
    if not isinstance(info.preprocess, PreprocessSpec):
        problems.append("preprocess must be a PreprocessSpec")
    for name in ("model", "target_layer", "toolkit_version", "exported_at", "name"):
        if not isinstance(getattr(info, name), str):
            problems.append(f"{name} must be a string")
    if not info.model:
        problems.append("model name is empty")
    outputs = info.outputs
    if not isinstance(outputs, tuple) or tuple(o for o in ALL_OUTPUTS if o in outputs) != outputs:
        problems.append(f"outputs must be drawn from {list(ALL_OUTPUTS)} in that order, got {outputs!r}")
    else:
        if not all(o in outputs for o in CLASSIFY_OUTPUTS):
            problems.append(f"outputs lack {', '.join(o for o in CLASSIFY_OUTPUTS if o not in outputs)}")
        if sum(o in outputs for o in EXPLAIN_OUTPUTS) == 1:
            problems.append(f"outputs must hold both or none of {list(EXPLAIN_OUTPUTS)}, got {list(outputs)}")
    if info.explain and not info.target_layer:
        problems.append("an explaining model must name its target layer")
    for name in ("trained_on", "metrics", "quantization", "card"):
        if not isinstance(getattr(info, name), dict):
            problems.append(f"{name} must be a JSON object")
    if not isinstance(info.opset, int) or isinstance(info.opset, bool) or info.opset < 7:
        problems.append(f"opset must be an ONNX opset number, got {info.opset!r}")
    if info.quantized is not None and info.quantized not in QUANTIZATIONS:
        problems.append(f"quantization {info.quantized!r} unknown (known: {', '.join(QUANTIZATIONS)})")
    return problems
