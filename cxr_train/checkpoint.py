"""The checkpoint file: everything needed to rebuild, evaluate, resume and export a model.

One format for fit, evaluate, export, verify and the benchmarks, so none of them guesses the
architecture, classes or preprocessing of a trained network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxr_infer import __version__
from cxr_infer.preprocess import PreprocessSpec

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A trained (or training) model and its provenance.

    ``trained_on`` holds ``{"datasets": [...], "file_list_sha256": ...}``; ``metrics`` maps a
    data-set name to the report of :func:`cxr_infer.metrics.classification_metrics`;
    ``training`` is resumable state (optimizer, scheduler, epoch, RNG) and may be empty;
    ``calibration`` the temperature-scaling report of :mod:`cxr_train.calibrate` (empty: none).
    """

    model: str
    classes: list[str]
    state_dict: dict[str, torch.Tensor]
    preprocess: PreprocessSpec
    target_layer: str
    class_weights: list[float] | None = None
    trained_on: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    toolkit_version: str = __version__
    calibration: dict[str, Any] = field(default_factory=dict)  # cxr_train.calibrate's report; {} = none

    @property
    def temperature(self) -> float:
        """The softmax temperature fitted on val (1.0 for an uncalibrated model)."""
        return float(self.calibration.get("temperature", 1.0))

    def build(self) -> nn.Module:
        """Instantiate the registered architecture and load the weights (eval mode, CPU)."""
        from cxr_train.models import get_model_spec

        network = get_model_spec(self.model).factory(len(self.classes), False)
        network.load_state_dict(self.state_dict)
        return network.eval()

    def save(self, path: str | Path) -> None:
        payload = asdict(self)
        payload["preprocess"] = self.preprocess.to_json()
        payload["format_version"] = FORMAT_VERSION
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)  # atomic: a crash mid-save never leaves a half-written checkpoint

    @classmethod
    def load(cls, path: str | Path) -> "Checkpoint":
        payload = torch.load(path, map_location="cpu", weights_only=False)
        version = payload.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: checkpoint format {version!r}, expected {FORMAT_VERSION}")
        payload["preprocess"] = PreprocessSpec.from_json(payload["preprocess"])
        return cls(**payload)
