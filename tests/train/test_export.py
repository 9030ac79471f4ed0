"""ONNX export: parity with eager PyTorch (logits and hook-based Grad-CAM) for the built-in models
and a model that only a plugin registers, dynamic batch, single file, complete metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from cxr_infer.contract import ALL_KEYS, ALL_OUTPUTS, CLASSIFY_OUTPUTS, INPUT, ModelInfo
from cxr_train.checkpoint import Checkpoint
from cxr_train.data import discover, load_tensors
from cxr_train.export import export_onnx, read_info
from cxr_train.hookspecs import hookimpl
from cxr_train.plugins import get_plugin_manager
from cxr_train.verify import compare, load_model
from tests.data_root import DATA

SIZE = 64
TEST_MODEL = "test-silu-maxpool-head"


class SiluMaxPoolNet(nn.Module):
    """A head unlike both built-ins (1x1 conv, SiLU, max pooling, flatten, linear), so its
    gradient needs backward ops that only the generic route handles. Input size 64 only."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
        )
        self.head = nn.Sequential(nn.Conv2d(16, 8, 1), nn.SiLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ExtraModelPlugin:
    @hookimpl
    def register_models(self, register):
        register(TEST_MODEL, lambda num_classes, pretrained: SiluMaxPoolNet(num_classes), target_layer="features", input_size=SIZE)


@pytest.fixture(scope="module")
def extra_model():
    pm = get_plugin_manager()
    plugin = ExtraModelPlugin()
    pm.register(plugin, name="test-export-model")
    try:
        yield TEST_MODEL
    finally:
        pm.unregister(plugin)


@pytest.fixture(scope="module")
def real_images() -> np.ndarray:
    """Six real radiographs (two per class of the internal val split), preprocessed at 64 px."""
    from cxr_infer.preprocess import PreprocessSpec

    dataset = discover(DATA / "cxr3-internal" / "val").limit_per_class(2, seed=0)
    images, _ = load_tensors(dataset, PreprocessSpec(size=SIZE))
    return images.numpy()


def check_file(path: Path) -> onnx.ModelProto:
    """One self-contained file that passes the full checker, with a dynamic batch axis."""
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == [INPUT]
    assert [o.name for o in model.graph.output] == list(ALL_OUTPUTS)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    return model


def check_metadata(model: onnx.ModelProto, path: Path, checkpoint: Checkpoint) -> None:
    """Every key written; the contract round-trips and carries the checkpoint's provenance."""
    assert set(ALL_KEYS) <= {p.key for p in model.metadata_props}
    info = read_info(path)
    assert info == ModelInfo.from_metadata(info.to_metadata(), "again")
    assert info.opset == next(o.version for o in model.opset_import if o.domain == "")
    assert list(info.classes) == checkpoint.classes and info.preprocess == checkpoint.preprocess
    assert info.model == checkpoint.model and info.target_layer == checkpoint.target_layer
    assert info.trained_on == checkpoint.trained_on and info.metrics == checkpoint.metrics
    assert info.explain and info.quantized is None and info.exported_at


def check_parity(path: Path, checkpoint: Checkpoint, images: np.ndarray) -> None:
    """ORT vs eager torch at batch 1 and 5 from the same file: logits and every class's Grad-CAM."""
    session, _info = load_model(path)
    network = checkpoint.build()
    for batch in (1, 5):
        report = compare(session, network, checkpoint.target_layer, images[:batch], batch=batch)
        assert report["images"] == batch
        assert report["logits_rel"] <= 1e-4, report
        assert report["probs"] <= 1e-4, report
        assert len(report["gradcam_per_class"]) == len(checkpoint.classes)
        assert report["gradcam"] <= 1e-3, report


@pytest.mark.data
def test_simplecnn_export(tiny_model_path, tiny_checkpoint_path, real_images):
    checkpoint = Checkpoint.load(tiny_checkpoint_path)
    check_metadata(check_file(tiny_model_path), tiny_model_path, checkpoint)
    check_parity(tiny_model_path, checkpoint, real_images)


@pytest.mark.data
@pytest.mark.parametrize("model", ["resnet50", TEST_MODEL])
def test_export(model, make_checkpoint, extra_model, real_images, tmp_path):
    """One test per model, so each is exported once even when tests are spread over workers."""
    checkpoint = make_checkpoint(model, size=SIZE, seed=1)
    result = export_onnx(checkpoint, tmp_path / "model.onnx")
    print(f"export {model}: {result.seconds:.1f} s, {result.size_bytes / 1e6:.1f} MB")
    assert read_info(result.path) == result.info
    check_metadata(check_file(result.path), result.path, checkpoint)
    check_parity(result.path, checkpoint, real_images)


@pytest.mark.data
def test_plain_model_says_it_cannot_explain(tiny_plain_model_path, tiny_checkpoint_path, real_images):
    session, info = load_model(tiny_plain_model_path)
    assert not info.explain and info.outputs == CLASSIFY_OUTPUTS
    assert [o.name for o in session.get_outputs()] == list(CLASSIFY_OUTPUTS)
    checkpoint = Checkpoint.load(tiny_checkpoint_path)
    report = compare(session, checkpoint.build(), checkpoint.target_layer, real_images)
    assert report["logits_rel"] <= 1e-4 and "gradcam" not in report


def test_unknown_target_layer_is_named(make_checkpoint, tmp_path):
    checkpoint = make_checkpoint("simplecnn", size=SIZE)
    checkpoint.target_layer = "features.9"
    with pytest.raises(KeyError, match="features.9"):
        export_onnx(checkpoint, tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())
