"""The model contract refuses metadata it does not understand and names what is wrong."""

from __future__ import annotations

import json

import pytest

from cxr_infer.contract import (
    ALL_OUTPUTS,
    CLASSIFY_OUTPUTS,
    KEY_CLASSES,
    KEY_CONTRACT,
    KEY_EXPLAIN,
    KEY_OUTPUTS,
    KEY_PREPROCESS,
    REQUIRED_KEYS,
    ContractError,
    ModelInfo,
)
from cxr_infer.preprocess import PreprocessSpec


def make_info(**changes) -> ModelInfo:
    values = dict(
        classes=("covid", "normal", "pneumonia"),
        preprocess=PreprocessSpec(size=64),
        model="simplecnn",
        target_layer="features.2",
        outputs=ALL_OUTPUTS,
        trained_on={"datasets": ["cxr3-internal/train"], "file_list_sha256": "ab" * 32},
        metrics={"cxr3-internal/test": {"accuracy": 0.9}},
        toolkit_version="0.1.0",
        exported_at="2026-01-01T00:00:00+00:00",
        opset=20,
    )
    return ModelInfo(**{**values, **changes})


def test_round_trip_writes_every_key_as_json():
    info = make_info(quantized="int8-qdq", quantization={"agreement": {"top1_agreement": 1.0}}, card={"epoch": 3})
    props = info.to_metadata()
    assert all(isinstance(v, str) for v in props.values())
    assert all(key in props for key in REQUIRED_KEYS)
    assert json.loads(props[KEY_EXPLAIN]) is True
    assert ModelInfo.from_metadata(props, "m.onnx") == info


def test_plain_model_says_it_has_no_explain_outputs():
    info = make_info(outputs=CLASSIFY_OUTPUTS)
    assert not info.explain
    assert json.loads(info.to_metadata()[KEY_EXPLAIN]) is False


def test_missing_keys_are_named_with_the_file():
    props = make_info().to_metadata()
    del props[KEY_CLASSES], props[KEY_PREPROCESS]
    with pytest.raises(ContractError, match=r"m\.onnx.*cxr\.classes, cxr\.preprocess"):
        ModelInfo.from_metadata(props, "m.onnx")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (KEY_CONTRACT, "2", "contract version 2"),
        (KEY_OUTPUTS, json.dumps(["logits", "probs", "activations"]), "both or none"),
        (KEY_OUTPUTS, json.dumps(["logits", "probs", "saliency"]), "outputs must be drawn"),
        (KEY_EXPLAIN, "false", "contradicts"),
        (KEY_CLASSES, json.dumps(["covid"]), "at least two"),
        (KEY_CLASSES, "[covid", "not JSON"),
        (KEY_PREPROCESS, json.dumps({"size": 64, "resize": "crop"}), "resize rule"),
    ],
)
def test_values_it_does_not_understand_are_refused(key, value, message):
    props = make_info().to_metadata()
    props[key] = value
    with pytest.raises(ContractError, match=message):
        ModelInfo.from_metadata(props, "m.onnx")


def test_graph_names_must_match_the_metadata():
    info = make_info(outputs=CLASSIFY_OUTPUTS)
    info.check_io(["image"], ["probs", "logits"], "m.onnx")
    with pytest.raises(ContractError, match="graph outputs"):
        info.check_io(["image"], ["logits", "probs", "activations", "gradients"], "m.onnx")
    with pytest.raises(ContractError, match="graph inputs"):
        info.check_io(["input"], ["logits", "probs"], "m.onnx")
