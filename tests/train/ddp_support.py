"""A model without BatchNorm or Dropout for the torchrun test, and the worker that trains it.

Both built-in models normalise with BatchNorm (statistics of the batch a process sees) and
SimpleCNN drops out at random; on CPU, where PyTorch has no SyncBatchNorm, either makes two
processes differ from one by design. This model has neither, so the comparison isolates what
``cxr_train.distributed`` must get right: the shared draw, the shares, the loss and the gradients.

``python tests/train/ddp_support.py fit ...`` (what torchrun starts) registers the model and runs
``cxr-train`` unchanged.
"""

from __future__ import annotations

from torch import nn

from cxr_train.hookspecs import hookimpl

MODEL = "plaincnn"
PLUGIN = "tests-plaincnn"


class PlainCNN(nn.Module):
    """Two convolutions, global average pooling and a linear head: deterministic in training mode."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class Plugin:
    @hookimpl
    def register_models(self, register):
        register(MODEL, lambda num_classes, pretrained: PlainCNN(num_classes), target_layer="features", input_size=32)


def register() -> None:
    from cxr_train.plugins import get_plugin_manager

    manager = get_plugin_manager()
    if manager.get_plugin(PLUGIN) is None:
        manager.register(Plugin(), name=PLUGIN)


def unregister() -> None:
    from cxr_train.plugins import get_plugin_manager

    get_plugin_manager().unregister(name=PLUGIN)


if __name__ == "__main__":
    register()
    from cxr_train.cli import main

    main()
