"""The float16 variant for GPUs: same contract, float32 at the borders, answers close to fp32
(checked on the CPU provider, which runs float16 nodes through casts)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from cxr_infer.contract import ALL_OUTPUTS, GRADIENTS, INPUT
from cxr_train.cli import main
from cxr_train.export import read_info
from cxr_train.fp16 import FP16, convert_fp16
from cxr_train.quantize import explain_only_nodes
from cxr_train.verify import load_model


@pytest.fixture(scope="module")
def fp16_path(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "tiny-fp16.onnx"
    convert_fp16(tiny_model_path, out)
    return out


def test_fp16_keeps_the_contract_and_float32_borders(tiny_model_path, fp16_path):
    info = read_info(fp16_path)
    assert info.quantized == FP16 and info.name == f"{read_info(tiny_model_path).name}-fp16"
    assert info.outputs == ALL_OUTPUTS and info.classes == read_info(tiny_model_path).classes
    model = onnx.load(str(fp16_path))
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in [*model.graph.input, *model.graph.output])
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    producers = {out: node for node in model.graph.node for out in node.output}
    backward = set(explain_only_nodes(model))
    assert producers[GRADIENTS].name in backward and producers[GRADIENTS].op_type != "Cast"


def test_fp16_answers_match_fp32_on_the_cpu(tiny_model_path, fp16_path):
    images = np.random.default_rng(0).random((4, 1, 64, 64), dtype=np.float32)
    fp32 = load_model(tiny_model_path)[0].run(None, {INPUT: images})
    fp16 = load_model(fp16_path)[0].run(None, {INPUT: images})
    for name, a, b in zip(ALL_OUTPUTS, fp32, fp16):
        assert b.dtype == np.float32, name
        assert np.abs(a - b).max() <= 1e-2 * max(1.0, float(np.abs(a).max())), name
    assert (fp32[1].argmax(1) == fp16[1].argmax(1)).all()


def test_a_quantized_file_is_refused(fp16_path, tmp_path):
    with pytest.raises(ValueError, match="already fp16"):
        convert_fp16(fp16_path, tmp_path / "again.onnx")


def test_export_writes_fp16_and_refuses_it_with_int8(tiny_checkpoint_path, tmp_path):
    out = tmp_path / "tiny-fp16.onnx"
    result = CliRunner().invoke(main, ["export", str(tiny_checkpoint_path), "--out", str(out), "--fp16"])
    assert result.exit_code == 0, result.output
    assert read_info(out).quantized == FP16 and sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    both = CliRunner().invoke(main, ["export", str(tiny_checkpoint_path), "--out", str(out), "--fp16", "--int8",
                                     "--calibration", str(tmp_path)])
    assert both.exit_code == 2 and "--int8 and --fp16" in both.output
