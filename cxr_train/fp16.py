"""float16 variant of an exported model, for GPUs (CUDA and TensorRT run fp16 on tensor cores).

Weights and the forward convolutions become float16; the ``image`` input and every output stay
float32, so callers and the contract do not change. The in-graph backward pass and the
classification head stay float32 (:func:`cxr_train.quantize.float_nodes`): the gradients of a
GAP head are ``W[k] / (h * w)``, small enough that float16's 6e-5 smallest normal number would
flush part of them, and probabilities keep float resolution. On a CPU the file still runs
(onnxruntime computes float16 nodes through casts), which is how it is tested without a GPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from cxr_infer.contract import ModelInfo
from cxr_train.export import read_info, write_model
from cxr_train.quantize import float_nodes, name_nodes

FP16 = "fp16"


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float16 graph: float32 at the borders, the backward pass and the head."""
    model = name_nodes(model)
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=float_nodes(model))
    return tidied(converted)


def tidied(model: onnx.ModelProto) -> onnx.ModelProto:
    """Repair what the converter leaves behind around blocked nodes. It rounds float32 tensors
    through float16 on their way between two float32 parts and to the float32 outputs (so
    ``gradients``, ``logits`` and ``probs`` lost their precision), inserts one Cast per consumer
    of a tensor, all writing the same name, appends them at the graph's end and leaves some
    intermediate types stale; the ONNX checker refuses the last three. Round trips become
    Identity (free in onnxruntime), casts left unused go, identical ones merge, the nodes are
    sorted topologically and the intermediate types dropped (shape inference restores them)."""
    del model.graph.value_info[:]
    seen: set[tuple[str, ...]] = set()
    unique = []
    for node in model.graph.node:
        key = (node.op_type, *node.input, *node.output)
        if node.op_type == "Cast" and key in seen:
            continue
        seen.add(key)
        unique.append(node)
    nodes = _used(_without_round_trips(unique), {o.name for o in model.graph.output})
    del model.graph.node[:]
    model.graph.node.extend(_sorted(nodes, {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}))
    return model


def _cast_to(node: onnx.NodeProto, dtype: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == dtype for a in node.attribute)


def _without_round_trips(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Cast(float16) then Cast(float32) of a float32 tensor becomes Identity of that tensor."""
    producers = {out: node for node in nodes for out in node.output}
    for node in nodes:
        first = producers.get(node.input[0]) if node.input else None
        if _cast_to(node, onnx.TensorProto.FLOAT) and first is not None and _cast_to(first, onnx.TensorProto.FLOAT16):
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = first.input[0]
    return nodes


def _used(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop nodes none of whose outputs is consumed or a graph output, until none is left."""
    while True:
        consumed = outputs | {name for node in nodes for name in node.input}
        kept = [node for node in nodes if any(out in consumed for out in node.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def _sorted(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Each node after the producers of its inputs (the converter appends its casts at the end)."""
    ready = available | {""}
    pending, ordered = nodes, []
    while pending:
        runnable = [node for node in pending if all(name in ready for name in node.input)]
        if not runnable:
            raise ValueError(f"graph has a cycle or a dangling input near node {pending[0].name!r}")
        for node in runnable:
            ordered.append(node)
            ready.update(node.output)
        pending = [node for node in pending if node not in runnable]
    return ordered


def convert_fp16(fp32_path: str | Path, out: str | Path) -> ModelInfo:
    """Write the float16 version of ``fp32_path`` to ``out`` with the same metadata, marked
    ``quantized: fp16`` and named ``<name>-fp16``."""
    fp32_path, out = Path(fp32_path), Path(out)
    info = read_info(fp32_path)
    if info.quantized is not None:
        raise ValueError(f"{fp32_path}: already {info.quantized}; convert the float32 file")
    final = dataclasses.replace(info, quantized=FP16, name=f"{info.name}-fp16")
    write_model(to_fp16(onnx.load(str(fp32_path))), final, out)
    return final
