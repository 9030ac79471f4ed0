"""Fixtures shared by the inference and training tests.

torch is imported inside the fixtures only, so inference tests that never ask for a model keep
it out of ``sys.modules``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

TINY_CLASSES = ["covid", "normal", "pneumonia"]
TINY_SIZE = 64


def _random_checkpoint(model: str, size: int = TINY_SIZE, seed: int = 0, classes: list[str] | None = None):
    """A checkpoint of ``model`` with seeded random weights and non-trivial BatchNorm statistics
    (identity BN would hide a wrongly exported normalization)."""
    import torch
    from torch import nn

    from cxr_infer.preprocess import PreprocessSpec
    from cxr_train.checkpoint import Checkpoint
    from cxr_train.models import get_model_spec

    spec = get_model_spec(model)
    classes = list(classes or TINY_CLASSES)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = spec.factory(len(classes), False)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) * 0.4 - 0.2)
    return Checkpoint(
        model=model,
        classes=classes,
        state_dict=network.eval().state_dict(),
        preprocess=PreprocessSpec(size=size),
        target_layer=spec.target_layer,
        trained_on={"datasets": ["random-init"], "file_list_sha256": "0" * 64},
        metrics={"none": {"note": "random weights, for tests only"}},
    )


@pytest.fixture(scope="session")
def make_checkpoint() -> Callable:
    """Factory ``make_checkpoint(model, size=64, seed=0, classes=None) -> Checkpoint``."""
    return _random_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tmp_path_factory) -> Path:
    """A saved random-weight SimpleCNN checkpoint (image size 64, classes covid/normal/pneumonia)."""
    path = tmp_path_factory.mktemp("tiny_checkpoint") / "simplecnn.pt"
    _random_checkpoint("simplecnn").save(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tiny_checkpoint_path, tmp_path_factory) -> Path:
    """That checkpoint exported to ONNX with the explain outputs (activations, gradients)."""
    return _export_tiny(tiny_checkpoint_path, tmp_path_factory.mktemp("tiny_model"), "tiny", explain=True)


@pytest.fixture(scope="session")
def tiny_plain_model_path(tiny_checkpoint_path, tmp_path_factory) -> Path:
    """The same checkpoint exported without explain outputs (logits and probs only)."""
    return _export_tiny(tiny_checkpoint_path, tmp_path_factory.mktemp("tiny_plain_model"), "tiny-plain", explain=False)


def _export_tiny(checkpoint_path: Path, folder: Path, name: str, explain: bool) -> Path:
    from cxr_train.checkpoint import Checkpoint
    from cxr_train.export import export_onnx

    return export_onnx(Checkpoint.load(checkpoint_path), folder / f"{name}.onnx", explain=explain, name=name).path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real radiographs (:mod:`tests.data_root`); a test using it is marked ``data``."""
    from tests.data_root import DATA

    return DATA
