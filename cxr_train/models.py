"""Built-in architectures, registered through the ``register_models`` hook like any plugin's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cxr_train.hookspecs import hookimpl


@dataclass(frozen=True)
class ModelSpec:
    """What the trainer and exporter need to know about an architecture."""

    name: str
    factory: Callable[[int, bool], nn.Module]
    target_layer: str
    input_size: int = 224
    plugin: str = ""


class SimpleCNN(nn.Module):
    """The seed's baseline: three conv blocks (conv-BN-ReLU-maxpool), then an MLP head with Dropout 0.4.

    The head pools to a fixed 4x4 grid before flattening so the network accepts any input size
    and the head stays small (2,048 -> 128 -> K) instead of growing with the resolution.
    """

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.4):
        super().__init__()
        widths = (width, width * 2, width * 4)
        blocks, c_in = [], 1
        for c_out in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * 16, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def simplecnn(num_classes: int, pretrained: bool = False) -> nn.Module:
    if pretrained:
        raise ValueError("simplecnn has no pretrained weights; train it from scratch")
    return SimpleCNN(num_classes)


def resnet50(num_classes: int, pretrained: bool = False) -> nn.Module:
    """torchvision ResNet-50 with a 1-channel stem and a K-class head.

    With ``pretrained`` the ImageNet weights are loaded and the stem's RGB filters averaged into
    one channel, which keeps their response to a gray image equal to the RGB one.
    """
    from torchvision.models import ResNet50_Weights, resnet50 as tv_resnet50

    model = tv_resnet50(weights=None)
    if pretrained:
        try:
            state = ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=False)
        except Exception as error:
            raise RuntimeError(
                "cannot load torchvision's ImageNet ResNet-50 weights "
                f"({type(error).__name__}: {error}); put resnet50-11ad3fa6.pth in "
                f"{torch.hub.get_dir()}/checkpoints or train without --pretrained"
            ) from error
        model.load_state_dict(state)
    stem = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        stem.weight.copy_(model.conv1.weight.mean(dim=1, keepdim=True))
    model.conv1 = stem
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


@hookimpl
def register_models(register):
    register("simplecnn", simplecnn, target_layer="features.2", input_size=224)
    register("resnet50", resnet50, target_layer="layer4", input_size=224)


def available_models() -> dict[str, ModelSpec]:
    """Every registered architecture, built-in and from plugins, by name."""
    from cxr_infer.plugins import build_registry, collect
    from cxr_train.plugins import get_plugin_manager

    return build_registry(collect(get_plugin_manager(), "register_models"), "register_models", ModelSpec)


def get_model_spec(name: str) -> ModelSpec:
    """Look up one architecture; the error lists what is available."""
    specs = available_models()
    if name not in specs:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(specs))}")
    return specs[name]
