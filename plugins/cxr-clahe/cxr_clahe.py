"""CLAHE as a training augmentation: ``cxr-train fit --augment clahe[:p=0.5,clip_limit=3.0,tiles=8]``.

Why CLAHE: sites differ in how much local contrast their processing adds (unsharp masking,
equalization, the viewer's window). Equalizing a random subset with a random clip limit teaches
the model not to rely on that, without changing anatomy. It runs on the CPU with OpenCV (16-bit,
so no precision is lost to 8-bit quantization) and returns the batch on its own device.

The module imports neither torch nor the training package at import time: ``cxr-infer`` loads
every plugin of group ``cxr`` and must stay free of both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cxr_infer.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

MAX_16BIT = 65535.0


@hookimpl
def register_augmentations(register):
    register("clahe", clahe, {"p": 0.5, "clip_limit": 3.0, "tiles": 8})


def clahe(p: float = 0.5, clip_limit: float = 3.0, tiles: int = 8) -> Callable[["torch.Tensor", "torch.Generator"], "torch.Tensor"]:
    """Equalize each image with probability ``p``, its clip limit drawn uniformly in [1, ``clip_limit``].

    ``tiles`` is the grid (tiles x tiles) over which histograms are equalized; a clip limit of 1
    is almost the identity, higher values allow more contrast.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"clahe: p={p} is not a probability")
    if clip_limit < 1.0 or tiles < 1:
        raise ValueError(f"clahe: need clip_limit >= 1 and tiles >= 1, got {clip_limit} and {tiles}")

    def augment(batch: "torch.Tensor", generator: "torch.Generator") -> "torch.Tensor":
        import torch

        draws = torch.rand(2, batch.shape[0], generator=generator, device=batch.device).cpu()
        chosen = (draws[0] < p).nonzero().flatten().tolist()
        if not chosen:
            return batch
        out = batch.clone()
        for index in chosen:
            limit = 1.0 + (clip_limit - 1.0) * float(draws[1, index])
            out[index, 0] = torch.from_numpy(_equalize(batch[index, 0].float().cpu().numpy(), limit, tiles)).to(batch)
        return out

    return augment


def _equalize(image, clip_limit: float, tiles: int):
    """CLAHE of one float image in [0, 1], through OpenCV's 16-bit implementation."""
    import cv2
    import numpy as np

    as16 = np.rint(np.clip(image, 0.0, 1.0) * MAX_16BIT).astype(np.uint16)
    equalized = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(as16)
    return equalized.astype(np.float32) / MAX_16BIT
