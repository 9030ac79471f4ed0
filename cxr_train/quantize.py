"""int8 variant of an exported model: onnxruntime static quantization, QDQ format.

Weights are int8 per output channel, activations uint8 (on this CPU uint8 activations ran about
3.3x faster than fp32, int8 activations only 1.2x). Calibration feeds real training images
through the shared preprocessing, so the ranges are those the model sees in use.

The explain outputs survive: nodes that only serve ``gradients`` stay in float (they are a few
small matmuls), so Grad-CAM weights are not computed from re-quantized gradients; so do the
nodes producing ``logits`` and ``probs``, so scores keep float resolution. The agreement
with the float model on a labelled folder is measured and stored in the file's metadata.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from cxr_infer.contract import CLASSIFY_OUTPUTS, INPUT, LOGITS, PROBS, ModelInfo
from cxr_infer.metrics import classification_metrics
from cxr_train.data import LabelledSet, discover, load_tensors
from cxr_train.export import read_info, write_model
from cxr_train.verify import load_model, run_session

QUANTIZATION = "int8-qdq"
CALIBRATION_BATCH = 8
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
METHOD_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
MAX_INTERMEDIATE_BATCHES = 4  # bounds calibration memory: ranges are merged every few batches


@dataclasses.dataclass(frozen=True)
class Int8Recipe:
    """How a model is quantized; the default is what ``cxr-train export --int8`` ships.

    ``reduce_range`` keeps weights in 7 bits: x86 CPUs without VNNI multiply u8 x s8 with
    VPMADDUBSW, whose int16 pair sums saturate with full-range weights (that flipped 10 % of
    SimpleCNN's answers on an AVX2 host), so a file meant for any CPU keeps it. ``float_stem``
    leaves the first convolution (one input channel, the rounding of the raw image) in float;
    measured on the shipped models it cost ResNet-50 15 % of its int8 speed and did not raise
    its agreement (``python -m benchmarks int8``), so the default quantizes it.
    """

    per_channel: bool = True
    reduce_range: bool = True
    method: str = "minmax"
    float_stem: bool = False

    def describe(self) -> str:
        """The recipe in words, as the metadata's quantization report records it."""
        weights = f"{'per-channel' if self.per_channel else 'per-tensor'} int8 weights" + (
            " in 7-bit range (reduce_range)" if self.reduce_range else " in full 8-bit range")
        stem = "; first convolution float" if self.float_stem else ""
        return (f"onnxruntime static, QDQ, {weights}, uint8 activations, {METHOD_NAMES[self.method]}; "
                f"output and backward nodes float{stem}")


class ImageBatches(CalibrationDataReader):
    """Feeds preprocessed images to the calibrator in fixed-size batches."""

    def __init__(self, images: np.ndarray, batch: int = CALIBRATION_BATCH):
        self.images = images
        self.batch = batch
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        chunk = self.images[self.position : self.position + self.batch]
        self.position += self.batch
        return {INPUT: chunk}

    def rewind(self) -> None:
        self.position = 0


def whole_batches(images: np.ndarray, batch: int = CALIBRATION_BATCH) -> np.ndarray:
    """The images that fill whole batches: the histogram calibrators (Entropy, Percentile) stack
    every batch's tensors into one array and fail on a shorter last batch."""
    return images[: max(batch, len(images) - len(images) % batch)]


def explain_only_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes no classification output depends on (the in-graph backward pass)."""
    needed = ancestors(model, list(CLASSIFY_OUTPUTS))
    return [node.name for node in model.graph.node if node.name not in needed]


def head_nodes(model: onnx.ModelProto) -> set[str]:
    """The node producing ``logits`` and every node between it and ``probs`` (the calibration
    temperature's scaling and the Softmax): quantizing them would round probabilities to 1/256
    steps, and they are tiny."""
    logits_side = ancestors(model, [LOGITS])
    producers = {output: node for node in model.graph.node for output in node.output}
    head = {producers[LOGITS].name} if LOGITS in producers else set()
    return head | (ancestors(model, [PROBS]) - logits_side)


def ancestors(model: onnx.ModelProto, outputs: list[str]) -> set[str]:
    """Names of the nodes the tensors ``outputs`` depend on (their producers included)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    seen: set[str] = set()
    pending = [name for name in outputs if name in producers]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        pending.extend(node.input)
    return seen


def stem_nodes(model: onnx.ModelProto) -> set[str]:
    """The first convolution (the one reading the ``image`` input)."""
    return {node.name for node in model.graph.node if node.op_type == "Conv" and INPUT in node.input}


def float_nodes(model: onnx.ModelProto, recipe: Int8Recipe = Int8Recipe()) -> list[str]:
    """Nodes left unquantized: the backward pass and the classification head (:func:`head_nodes`),
    and the stem when the recipe says so."""
    stem = stem_nodes(model) if recipe.float_stem else set()
    return sorted(head_nodes(model) | set(explain_only_nodes(model)) | stem)


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name: the quantizer's exclusion list works by name."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return model


def load_folder(folder: str | Path, info: ModelInfo, limit: int | None, seed: int = 0) -> tuple[LabelledSet, np.ndarray, np.ndarray]:
    """A seeded, class-balanced pick of at most ``limit`` images, preprocessed for ``info``."""
    dataset = discover(folder, list(info.classes))
    if limit is not None:
        dataset = dataset.limit_per_class(max(1, limit // len(dataset.classes)), seed)
    images, labels = load_tensors(dataset, info.preprocess)
    return dataset, images.numpy(), labels.numpy()


def agreement(fp32_path: Path, int8_path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Top-1 agreement and largest probability difference of int8 against fp32, plus the
    accuracy and macro-F1 of both against the folder's labels."""
    fp32 = run_session(load_model(fp32_path)[0], images)[PROBS]
    int8 = run_session(load_model(int8_path)[0], images)[PROBS]
    figures = {name: classification_metrics(labels, probs, classes) for name, probs in (("fp32", fp32), ("int8", int8))}
    return {
        "images": int(len(images)),
        "top1_agreement": float((fp32.argmax(1) == int8.argmax(1)).mean()),
        "max_prob_diff": float(np.abs(fp32 - int8).max()),
        **{f"{name}_{key}": figures[name][key] for name in figures for key in ("accuracy", "macro_f1")},
    }


def quantize_int8(
    fp32_path: str | Path,
    out: str | Path,
    calibration: str | Path,
    compare: str | Path,
    calibration_limit: int | None = 200,
    compare_limit: int | None = None,
    recipe: Int8Recipe = Int8Recipe(),
) -> ModelInfo:
    """Write the int8 QDQ version of ``fp32_path`` to ``out`` and return its metadata, whose
    ``quantization`` entry records the calibration set and the agreement measured on ``compare``."""
    fp32_path, out = Path(fp32_path), Path(out)
    info = read_info(fp32_path)
    calib_set, calib_images, _ = load_folder(calibration, info, calibration_limit)
    with tempfile.TemporaryDirectory(prefix="cxr-int8-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        model = name_nodes(onnx.load(str(prepared)))
        onnx.save_model(model, prepared)
        quantize_static(
            str(prepared),
            str(quantized),
            ImageBatches(whole_batches(calib_images) if recipe.method != "minmax" else calib_images),
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=recipe.reduce_range,
            calibrate_method=METHODS[recipe.method],
            nodes_to_exclude=float_nodes(model, recipe),
            extra_options={"CalibMaxIntermediateOutputs": MAX_INTERMEDIATE_BATCHES},
        )
        int8_model = onnx.load(str(quantized))
        draft = dataclasses.replace(info, quantized=QUANTIZATION, name=f"{info.name}-int8")
        write_model(int8_model, draft, out)
    _, images, labels = load_folder(compare, info, compare_limit)
    report = {
        "method": recipe.describe(),
        "explain_nodes_float": bool(info.explain),
        "calibration": {
            "folder": str(calibration),
            "images": len(calib_set),
            "file_list_sha256": calib_set.file_list_sha256(),
        },
        "agreement": {"folder": str(compare), **agreement(fp32_path, out, images, labels, list(info.classes))},
    }
    final = dataclasses.replace(draft, quantization=report)
    write_model(int8_model, final, out)
    return final
