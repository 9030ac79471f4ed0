"""ONNX export of a checkpoint, with the Grad-CAM inputs computed inside the graph.

No exporter can put ``torch.autograd.grad`` into ONNX directly, so the explaining graph is built
in two steps that work for ANY registered model, whatever its head:

1. :func:`trace_explain` runs a wrapper that calls ``torch.autograd.grad`` once per class under
   ``make_fx(tracing_mode="symbolic")``. Tracing records the backward ops autograd executes as
   plain aten ops, so the gradient becomes ordinary forward computation in an FX graph.
2. That graph is exported with ``torch.onnx.export(dynamo=True)`` with a dynamic batch axis.

Backward ops that have no ONNX translation are decomposed during tracing into ops that have one
(:func:`backward_decompositions`). The result is one self-contained file whose metadata is the
:class:`cxr_infer.contract.ModelInfo` of the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from torch import nn
from torch.nn import functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from cxr_infer import __version__
from cxr_infer.contract import ALL_OUTPUTS, CLASSIFY_OUTPUTS, INPUT, ModelInfo
from cxr_train.checkpoint import Checkpoint

MAX_BATCH = 4096
TRACE_BATCH = 2  # not 0 or 1: those sizes would be specialised instead of staying symbolic


def target_module(network: nn.Module, name: str) -> nn.Module:
    """The sub-module Grad-CAM explains; the error lists the names that do exist."""
    modules = dict(network.named_modules())
    if name not in modules or not name:
        known = ", ".join(n for n in modules if n and "." not in n)
        raise KeyError(f"target layer {name!r} is not a module of {type(network).__name__} (top-level modules: {known})")
    return modules[name]


def _pool_matrix(n_in: torch.SymInt | int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """The (n_out, n_in) averaging matrix of 1-D adaptive average pooling (PyTorch's windows)."""
    out_index = torch.arange(n_out, device=like.device)
    start = (out_index * n_in) // n_out
    end = ((out_index + 1) * n_in + n_out - 1) // n_out
    position = torch.arange(n_in, device=like.device)
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def _adaptive_avg_pool2d_backward(grad_output: torch.Tensor, self: torch.Tensor) -> torch.Tensor:
    """Adaptive average pooling is separable and linear, so its backward is ``Ah^T g Aw``.

    PyTorch ships no decomposition of this op and ONNX has no kernel for it, yet every
    GAP head (ResNet) and SimpleCNN's 4x4 pool need it.
    """
    rows = _pool_matrix(self.shape[-2], grad_output.shape[-2], grad_output)
    cols = _pool_matrix(self.shape[-1], grad_output.shape[-1], grad_output)
    return torch.einsum("ih,ncij,jw->nchw", rows, grad_output, cols)


def _convolution_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Any,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    transposed: bool,
    output_padding: list[int],
    groups: int,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, None, None]:
    """The input gradient of a convolution is the transposed convolution of the output gradient.

    Only that gradient is ever asked for (weights are constants of the explain graph); PyTorch
    has no decomposition of this op, and a plugin's head may well contain a convolution.
    """
    if transposed or output_mask[1] or output_mask[2]:
        raise NotImplementedError(
            "in-graph Grad-CAM differentiates ordinary convolutions with respect to their input only "
            f"(transposed={transposed}, weight/bias gradient requested={output_mask[1:]})"
        )
    if not output_mask[0]:
        return None, None, None
    spatial = weight.dim() - 2
    transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial - 1]
    reach = [
        (size - 1) * s - 2 * p + d * (k - 1) + 1
        for size, s, p, d, k in zip(grad_output.shape[2:], stride, padding, dilation, weight.shape[2:])
    ]
    extra = [int(size) - int(r) for size, r in zip(input.shape[2:], reach)]  # rows the forward stride skipped
    return transpose(grad_output, weight, None, stride, padding, extra, groups, dilation), None, None


def backward_decompositions() -> dict[Any, Callable]:
    """Decompositions of the backward aten ops only: forward ops stay whole (fused Conv/BN in ONNX)."""
    from torch._decomp import decomposition_table

    table = {op: fn for op, fn in decomposition_table.items() if "backward" in str(op)}
    table[torch.ops.aten._adaptive_avg_pool2d_backward.default] = _adaptive_avg_pool2d_backward
    table[torch.ops.aten.convolution_backward.default] = _convolution_backward
    return table


class GradCamGraph(nn.Module):
    """Outputs logits, probs, the target layer's activations and d logits[:, k] / d activations.

    Gradients come from ``torch.autograd.grad``, so they are right for any architecture; the
    per-sample gradients of ``logits[:, k].sum()`` equal each sample's own because samples do
    not interact in eval mode.
    """

    def __init__(self, network: nn.Module, target_layer: str, num_classes: int, temperature: float = 1.0):
        super().__init__()
        self.network = network
        self.target = target_module(network, target_layer)
        self.num_classes = num_classes
        self.temperature = temperature  # probs = softmax(logits / T): calibration folded into the graph

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        captured: list[torch.Tensor] = []
        handle = self.target.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            logits = self.network(image)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"target layer ran {len(captured)} times in one forward pass; Grad-CAM needs exactly one")
        activations = captured[0]
        gradients = [
            torch.autograd.grad(logits[:, k].sum(), activations, retain_graph=True)[0] for k in range(self.num_classes)
        ]
        probs = torch.softmax(logits / self.temperature, dim=1)
        return logits.detach(), probs.detach(), activations.detach(), torch.stack(gradients, 1)


class ClassifyGraph(nn.Module):
    """Logits and probabilities only, for models exported without explain outputs."""

    def __init__(self, network: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.network = network
        self.temperature = temperature

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(image)
        return logits, torch.softmax(logits / self.temperature, dim=1)


def trace_explain(network: nn.Module, target_layer: str, num_classes: int, size: int,
                  temperature: float = 1.0) -> torch.fx.GraphModule:
    """Trace :class:`GradCamGraph` into a backward-free FX graph (weights become constants)."""
    graph = GradCamGraph(network.eval(), target_layer, num_classes, temperature)
    example = torch.rand(TRACE_BATCH, 1, size, size)
    with torch.enable_grad():
        traced = make_fx(
            graph,
            tracing_mode="symbolic",
            decomposition_table=backward_decompositions(),
            _allow_non_fake_inputs=True,  # the real parameters are baked in as constants
        )(example)
    return traced.eval()


def build_graph(network: nn.Module, target_layer: str, num_classes: int, size: int, explain: bool,
                temperature: float = 1.0) -> nn.Module:
    """The module handed to the ONNX exporter: traced Grad-CAM graph or plain classifier."""
    if explain:
        return trace_explain(network, target_layer, num_classes, size, temperature)
    return ClassifyGraph(network.eval(), temperature).eval()


def graph_to_onnx(module: nn.Module, size: int, outputs: tuple[str, ...], opset: int | None) -> onnx.ModelProto:
    """Export with a dynamic batch axis as one in-memory model (weights inside, no external data)."""
    example = torch.rand(TRACE_BATCH, 1, size, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=list(outputs),
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        optimize=True,
        verbose=False,
    )
    return program.model_proto


def model_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the file really uses (what a runtime must support)."""
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def checkpoint_info(checkpoint: Checkpoint, outputs: tuple[str, ...], opset: int, name: str = "") -> ModelInfo:
    """The contract metadata of a model exported from ``checkpoint``."""
    return ModelInfo(
        classes=tuple(checkpoint.classes),
        preprocess=checkpoint.preprocess,
        model=checkpoint.model,
        target_layer=checkpoint.target_layer,
        outputs=outputs,
        trained_on=dict(checkpoint.trained_on),
        metrics=dict(checkpoint.metrics),
        toolkit_version=__version__,
        exported_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        opset=opset,
        name=name or checkpoint.model,
        card=training_card(checkpoint),
        calibration=dict(checkpoint.calibration),
    )


def training_card(checkpoint: Checkpoint) -> dict[str, Any]:
    """How the model was made, for its model card: a reader can rerun the exact command."""
    args = checkpoint.args
    return {
        "epoch": checkpoint.epoch,
        "command": args.get("command"),
        "seed": args.get("seed"),
        "train_seconds": args.get("train_seconds"),
        "hardware": args.get("device"),
        "augment": args.get("augment"),
        "class_weights": checkpoint.class_weights,
        "trained_with_toolkit": checkpoint.toolkit_version,
        "torch": torch.__version__,
    }


def write_model(model: onnx.ModelProto, info: ModelInfo, out: Path) -> None:
    """Attach the metadata, run the full ONNX checker, and write one file atomically."""
    del model.metadata_props[:]
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "cxr-toolkit"
    model.producer_version = __version__
    onnx.checker.check_model(model, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    onnx.save_model(model, tmp, save_as_external_data=False)
    tmp.replace(out)


def read_info(path: str | Path) -> ModelInfo:
    """The validated contract metadata of an ONNX file (without loading its weights)."""
    model = onnx.load(str(path), load_external_data=False)
    return ModelInfo.from_metadata({p.key: p.value for p in model.metadata_props}, path)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote, and how long tracing and exporting took."""

    path: Path
    info: ModelInfo
    seconds: float
    size_bytes: int


def export_onnx(
    checkpoint: Checkpoint, out: str | Path, explain: bool = True, opset: int | None = None, name: str = ""
) -> ExportResult:
    """Export ``checkpoint`` to ``out``: input ``image`` (N, 1, S, S) in [0, 1] as
    :func:`cxr_infer.preprocess.preprocess` returns it, outputs ``logits`` and ``probs`` and, with
    ``explain``, ``activations`` and ``gradients`` of the checkpoint's target layer."""
    out = Path(out)
    started = time.perf_counter()
    network = checkpoint.build()
    size = checkpoint.preprocess.size
    outputs = ALL_OUTPUTS if explain else CLASSIFY_OUTPUTS
    graph = build_graph(network, checkpoint.target_layer, len(checkpoint.classes), size, explain, checkpoint.temperature)
    model = graph_to_onnx(graph, size, outputs, opset)
    info = checkpoint_info(checkpoint, outputs, model_opset(model), name)
    write_model(model, info, out)
    return ExportResult(out, info, time.perf_counter() - started, out.stat().st_size)

