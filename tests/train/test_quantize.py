"""int8 export through the CLI: QDQ graph, explain outputs kept in float, agreement report stored."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

from cxr_infer.contract import ALL_OUTPUTS
from cxr_train.cli import main
from cxr_train.export import read_info
import numpy as np

from cxr_train.quantize import QUANTIZATION, Int8Recipe, explain_only_nodes, float_nodes, name_nodes, whole_batches
from tests.data_root import DATA



def test_explain_only_nodes_are_the_backward_pass(tiny_model_path, tiny_plain_model_path):
    assert explain_only_nodes(onnx.load(str(tiny_plain_model_path))) == []
    model = onnx.load(str(tiny_model_path))
    backward = set(explain_only_nodes(model))
    assert backward
    producers = {out: node.name for node in model.graph.node for out in node.output}
    assert producers["gradients"] in backward
    assert producers["logits"] not in backward and producers["activations"] not in backward


def test_a_float_stem_recipe_keeps_only_the_first_convolution_float(tiny_model_path):
    model = name_nodes(onnx.load(str(tiny_model_path)))
    stem = {node.name for node in model.graph.node if node.op_type == "Conv" and "image" in node.input}
    assert len(stem) == 1
    default, floating = set(float_nodes(model)), set(float_nodes(model, Int8Recipe(float_stem=True)))
    assert floating - default == stem
    assert "first convolution float" in Int8Recipe(float_stem=True).describe() and "MinMax" in Int8Recipe().describe()


def test_histogram_calibration_gets_whole_batches_only():
    images = np.zeros((21, 1, 4, 4), np.float32)
    assert len(whole_batches(images, 8)) == 16 and len(whole_batches(images[:5], 8)) == 5


@pytest.mark.data
def test_int8_export_runs_and_reports_agreement(tiny_checkpoint_path, tmp_path):
    out = tmp_path / "int8.onnx"
    result = CliRunner().invoke(
        main,
        [
            "export", str(tiny_checkpoint_path), "--out", str(out), "--int8",
            "--calibration", str(DATA / "cxr3-internal" / "train"), "--calibration-limit", "12",
            "--compare", str(DATA / "cxr3-internal" / "val"), "--compare-limit", "9",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]
    info = read_info(out)
    assert info.quantized == QUANTIZATION and info.outputs == ALL_OUTPUTS
    report = info.quantization
    assert report["calibration"]["images"] == 12 and len(report["calibration"]["file_list_sha256"]) == 64
    agreement = report["agreement"]
    assert agreement["images"] == 9 and 0.0 <= agreement["top1_agreement"] <= 1.0
    assert 0.0 <= agreement["max_prob_diff"] <= 1.0
    assert json.loads(result.stdout)["top1_agreement"] == agreement["top1_agreement"]
    model = onnx.load(str(out))
    ops = {node.name: node.op_type for node in model.graph.node}
    assert "QuantizeLinear" in ops.values() and "DequantizeLinear" in ops.values()
    assert not {ops[name] for name in explain_only_nodes(model)} & {"QuantizeLinear", "DequantizeLinear"}
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    assert producers["logits"] == "Gemm" and producers["probs"] == "Softmax"  # float, not dequantized
