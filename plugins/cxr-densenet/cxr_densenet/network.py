"""torchvision's DenseNet-121 adapted to 1-channel radiographs and K classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet, DenseNet121_Weights, densenet121 as tv_densenet121

from cxr_train.models import one_channel, torchvision_model


class GrayDenseNet(DenseNet):
    """DenseNet whose final ReLU is not in place.

    torchvision applies ``relu(features, inplace=True)``, which overwrites the output of
    ``features`` (the Grad-CAM target layer) after a forward hook has captured it; the
    activations and gradients the exporter reads would then belong to another tensor.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(F.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(pooled, 1))


def densenet121(num_classes: int, pretrained: bool = False) -> nn.Module:
    """DenseNet-121 with a 1-channel stem (RGB filters averaged when pretrained) and a K-class head."""
    model = GrayDenseNet(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64)
    if pretrained:
        model.load_state_dict(torchvision_model(tv_densenet121, DenseNet121_Weights.IMAGENET1K_V1).state_dict())
    model.features.conv0 = one_channel(model.features.conv0)
    model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    return model
