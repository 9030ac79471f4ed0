"""Built-in training augmentations, registered through the ``register_augmentations`` hook.

They run after :func:`cxr_infer.preprocess.preprocess`, on whole batches (N, 1, H, W) in [0, 1],
on whatever device the batch is on. Each picks its images with probability ``p`` and leaves the
others bit-for-bit unchanged, so ``p=0`` is the exact identity. All randomness comes from the
``torch.Generator`` the trainer passes in, which makes runs reproducible from the seed.

Intensity, noise and blur augmentations attack the shortcuts the data invites (source-specific
exposure, contrast, sensor noise and sharpness); ``crop`` hides the field of view. The geometric
ones never flip, because chest anatomy is not left-right symmetric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cxr_train.hookspecs import hookimpl

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class AugmentationSpec:
    """A registered augmentation: ``factory(**params)`` returns an :data:`Augment`."""

    name: str
    factory: Callable[..., Augment]
    params: dict[str, Any] = field(default_factory=dict)
    plugin: str = ""


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws from U(low, high), shaped (n, 1, 1, 1) to broadcast over images."""
    draw = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return (low + (high - low) * draw).view(n, 1, 1, 1)


def _on_chosen(batch: torch.Tensor, p: float, generator: torch.Generator, change: Augment) -> torch.Tensor:
    """Apply ``change`` to a random subset (each image with probability ``p``), clamped to [0, 1]."""
    if p <= 0:
        return batch
    chosen = torch.rand(batch.shape[0], generator=generator, device=batch.device) < p
    if not bool(chosen.any()):
        return batch
    out = batch.clone()
    out[chosen] = change(batch[chosen], generator).clamp_(0.0, 1.0)
    return out


def _warp(x: torch.Tensor, top: list[torch.Tensor], bottom: list[torch.Tensor], padding: str) -> torch.Tensor:
    """Resample every image through its own 2x3 affine map (rows ``top`` and ``bottom``, each a
    list of three (N,) tensors, in ``affine_grid``'s units where the image spans -1..1)."""
    theta = torch.stack([torch.stack(top, 1), torch.stack(bottom, 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def gaussian_noise(p: float = 0.5, std: float = 0.03) -> Augment:
    """Additive noise N(0, std^2): sensor and quantization noise differ between sources."""

    def change(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x + std * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)

    return lambda batch, g: _on_chosen(batch, p, g, change)


def speckle_noise(p: float = 0.5, std: float = 0.1) -> Augment:
    """Multiplicative noise x * (1 + N(0, std^2)): grain that scales with the signal."""

    def change(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x * (1.0 + std * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype))

    return lambda batch, g: _on_chosen(batch, p, g, change)


def contrast(p: float = 0.5, strength: float = 0.3) -> Augment:
    """Scale each image's deviation from its mean by a factor in [1 - strength, 1 + strength]."""

    def change(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return mean + (x - mean) * _uniform(x.shape[0], 1.0 - strength, 1.0 + strength, x, g)

    return lambda batch, g: _on_chosen(batch, p, g, change)


def gamma(p: float = 0.5, strength: float = 0.3) -> Augment:
    """x ** gamma with log(gamma) in [-strength, strength]: a non-linear exposure/window change."""

    def change(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        exponent = torch.exp(_uniform(x.shape[0], -strength, strength, x, g))
        return x.clamp(min=0.0).pow(exponent)

    return lambda batch, g: _on_chosen(batch, p, g, change)


def affine(p: float = 0.5, degrees: float = 7.0, scale: float = 0.08, translate: float = 0.05) -> Augment:
    """Small rotation (+-degrees), zoom (1 +- scale) and shift (+-translate of the size), no flip.

    One batched ``affine_grid`` + ``grid_sample`` for all chosen images; the area uncovered by
    the transform is filled with 0 (black), like the film border it replaces.
    """

    def change(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        angle = _uniform(n, -degrees, degrees, x, g).view(n) * (math.pi / 180.0)
        zoom = _uniform(n, 1.0 - scale, 1.0 + scale, x, g).view(n)
        shift = _uniform(2 * n, -2 * translate, 2 * translate, x, g).view(n, 2)  # grid units span 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        return _warp(x, [cos, -sin, shift[:, 0]], [sin, cos, shift[:, 1]], padding="zeros")

    return lambda batch, g: _on_chosen(batch, p, g, change)


def crop(p: float = 0.5, min_area: float = 0.5, max_aspect: float = 1.33) -> Augment:
    """Random resized crop: a window of ``min_area``..1 of the image (aspect up to ``max_aspect``)
    stretched back to full size.

    It hides the field of view and the body's size in it, cues that separate sources (a
    pediatric film shows the whole torso, an adult one is collimated to the chest) rather than
    findings. One batched ``affine_grid`` + ``grid_sample``; the window never leaves the image.
    """

    def change(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        area = _uniform(n, min_area, 1.0, x, g).view(n)
        aspect = torch.exp(_uniform(n, -math.log(max_aspect), math.log(max_aspect), x, g).view(n))
        width, height = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
        centre = _uniform(2 * n, -1.0, 1.0, x, g).view(n, 2) * (1.0 - torch.stack([width, height], 1))
        zero = torch.zeros_like(width)
        return _warp(x, [width, zero, centre[:, 0]], [zero, height, centre[:, 1]], padding="border")

    return lambda batch, g: _on_chosen(batch, p, g, change)


def blur(p: float = 0.5, sigma: float = 1.5) -> Augment:
    """Gaussian blur with a per-image sigma in (0, ``sigma``] pixels.

    Sharpness is a source fingerprint (re-saved web images against original-resolution films);
    blurring some of every class keeps it from deciding the class. Separable, one grouped
    convolution per axis for the whole batch.
    """
    radius = max(1, math.ceil(3 * sigma))

    def change(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        sigmas = _uniform(n, 0.05 * sigma, sigma, x, g).view(n, 1)
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets[None, :] / sigmas) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        planes = F.pad(x.view(1, n, h, w), (radius, radius, radius, radius), mode="replicate")
        planes = F.conv2d(planes, kernel.view(n, 1, 1, -1), groups=n)
        planes = F.conv2d(planes, kernel.view(n, 1, -1, 1), groups=n)
        return planes.view(n, 1, h, w)

    return lambda batch, g: _on_chosen(batch, p, g, change)


@hookimpl
def register_augmentations(register):
    register("gaussian_noise", gaussian_noise, {"p": 0.5, "std": 0.03})
    register("speckle_noise", speckle_noise, {"p": 0.5, "std": 0.1})
    register("contrast", contrast, {"p": 0.5, "strength": 0.3})
    register("gamma", gamma, {"p": 0.5, "strength": 0.3})
    register("affine", affine, {"p": 0.5, "degrees": 7.0, "scale": 0.08, "translate": 0.05})
    register("crop", crop, {"p": 0.5, "min_area": 0.5, "max_aspect": 1.33})
    register("blur", blur, {"p": 0.5, "sigma": 1.5})


def available_augmentations() -> dict[str, AugmentationSpec]:
    """Every registered augmentation, built-in and from plugins, by name."""
    from cxr_infer.plugins import build_registry, collect
    from cxr_train.plugins import get_plugin_manager

    records = collect(get_plugin_manager(), "register_augmentations")
    return build_registry(records, "register_augmentations", AugmentationSpec)


def parse_option(text: str, specs: dict[str, AugmentationSpec]) -> tuple[str, dict[str, Any]]:
    """Parse ``NAME[:k=v,...]`` (the ``--augment`` syntax) into the name and its full parameters.

    Values take the type of the registered default, and unknown names or keys are errors that
    list what is valid, so a typo never silently trains without the intended augmentation.
    """
    name, _, rest = text.partition(":")
    if name not in specs:
        raise ValueError(f"unknown augmentation {name!r}; registered: {', '.join(sorted(specs))}")
    params = dict(specs[name].params)
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in params:
            raise ValueError(f"augmentation {name!r}: bad parameter {item!r}; known: {', '.join(params)}")
        try:
            params[key] = type(params[key])(value)
        except ValueError:
            raise ValueError(f"augmentation {name!r}: {key}={value!r} is not a {type(params[key]).__name__}") from None
    return name, params


def build_pipeline(options: list[str]) -> Augment:
    """Compose the ``--augment`` options, in the order given, into one batch transform."""
    specs = available_augmentations()
    steps = [specs[name].factory(**params) for name, params in (parse_option(o, specs) for o in options)]

    def pipeline(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in steps:
            batch = step(batch, generator)
        return batch

    return pipeline
