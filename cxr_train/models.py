"""Built-in architectures, registered through the ``register_models`` hook like any plugin's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def torchvision_model(builder: Callable[..., nn.Module], weights: Any | None) -> nn.Module:
    """Build a torchvision architecture, with its ImageNet ``weights`` when given.

    There is no network on most training hosts, so a failed download says which file to put
    where instead of surfacing urllib's error. Plugins wrapping torchvision models use this too.
    """
    if weights is None:
        return builder(weights=None)
    try:
        return builder(weights=weights, progress=False)
    except Exception as error:
        filename = weights.url.rsplit("/", 1)[-1]
        raise RuntimeError(
            f"cannot load torchvision's ImageNet weights {weights} ({type(error).__name__}: {error}); "
            f"put {filename} in {torch.hub.get_dir()}/checkpoints or train without --pretrained"
        ) from error


def one_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """The same input convolution for 1-channel radiographs, its RGB filters averaged into one.

    Averaging keeps each pretrained filter's spatial pattern (what the ImageNet stem learned),
    which is all a gray image can use.
    """
    gray = nn.Conv2d(
        1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=conv.bias is not None
    )
    with torch.no_grad():
        gray.weight.copy_(conv.weight.mean(dim=1, keepdim=True))
        if conv.bias is not None:
            gray.bias.copy_(conv.bias)
    return gray


def resnet50(num_classes: int, pretrained: bool = False) -> nn.Module:
    """torchvision ResNet-50 with a 1-channel stem and a K-class head."""
    from torchvision.models import ResNet50_Weights, resnet50 as tv_resnet50

    model = torchvision_model(tv_resnet50, ResNet50_Weights.IMAGENET1K_V2 if pretrained else None)
    model.conv1 = one_channel(model.conv1)
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
