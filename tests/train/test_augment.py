"""Augmentations keep [0, 1], are the identity at p=0, and have the strength they promise."""

from __future__ import annotations

import pytest
import torch

from cxr_train.augment import available_augmentations, build_pipeline, parse_option

BUILTINS = ("gaussian_noise", "speckle_noise", "contrast", "gamma", "affine", "crop", "blur")


def _batch(n: int = 16, size: int = 32) -> torch.Tensor:
    ramp = torch.linspace(0.1, 0.9, size)
    return (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).expand(n, 1, size, size).contiguous()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_builtins_are_registered_through_the_hook() -> None:
    specs = available_augmentations()
    for name in BUILTINS:
        assert specs[name].plugin == "cxr_train.augment"
        assert "p" in specs[name].params


@pytest.mark.parametrize("name", BUILTINS)
def test_p0_is_identity_and_p1_keeps_range(name: str) -> None:
    batch = _batch()
    assert build_pipeline([f"{name}:p=0"])(batch, _gen()) is batch
    out = build_pipeline([f"{name}:p=1"])(batch, _gen())
    assert out.shape == batch.shape and not torch.equal(out, batch)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_gaussian_noise_has_the_promised_std() -> None:
    batch = torch.full((8, 1, 64, 64), 0.5)
    out = build_pipeline(["gaussian_noise:p=1,std=0.05"])(batch, _gen())
    assert (out - batch).std().item() == pytest.approx(0.05, rel=0.05)
    assert (out - batch).mean().item() == pytest.approx(0.0, abs=0.005)


def test_speckle_noise_scales_with_signal() -> None:
    batch = torch.full((8, 1, 64, 64), 0.4)
    out = build_pipeline(["speckle_noise:p=1,std=0.1"])(batch, _gen())
    assert (out - batch).std().item() == pytest.approx(0.04, rel=0.05)


def test_contrast_factor_stays_in_range() -> None:
    batch = _batch(64)
    out = build_pipeline(["contrast:p=1,strength=0.3"])(batch, _gen())
    ratio = out.std(dim=(1, 2, 3)) / batch.std(dim=(1, 2, 3))
    assert ratio.min() >= 0.7 - 1e-4 and ratio.max() <= 1.3 + 1e-4
    assert ratio.max() - ratio.min() > 0.3  # factors really vary


def test_probability_selects_about_p_of_the_images() -> None:
    batch = _batch(400, 8)
    out = build_pipeline(["gaussian_noise:p=0.25"])(batch, _gen())
    changed = (out != batch).flatten(1).any(dim=1).float().mean().item()
    assert changed == pytest.approx(0.25, abs=0.07)


def test_same_seed_same_result() -> None:
    batch = _batch()
    options = ["affine:p=0.8", "contrast", "speckle_noise"]
    assert torch.equal(build_pipeline(options)(batch, _gen(3)), build_pipeline(options)(batch, _gen(3)))


def test_affine_identity_parameters_reproduce_the_input() -> None:
    batch = _batch()
    out = build_pipeline(["affine:p=1,degrees=0,scale=0,translate=0"])(batch, _gen())
    assert torch.allclose(out, batch, atol=1e-5)


def test_option_errors_name_the_problem() -> None:
    specs = available_augmentations()
    with pytest.raises(ValueError, match="unknown augmentation 'sharpen'"):
        parse_option("sharpen", specs)
    with pytest.raises(ValueError, match="bad parameter 'sigma=1'"):
        parse_option("gaussian_noise:sigma=1", specs)
    with pytest.raises(ValueError, match="not a float"):
        parse_option("gaussian_noise:p=lots", specs)
    assert parse_option("contrast:p=1", specs) == ("contrast", {"p": 1.0, "strength": 0.3})


def test_crop_of_the_whole_image_is_the_identity() -> None:
    batch = _batch()
    out = build_pipeline(["crop:p=1,min_area=1,max_aspect=1"])(batch, _gen())
    assert torch.allclose(out, batch, atol=1e-5)


def test_crop_zooms_into_the_image_without_leaving_it() -> None:
    ramp = torch.linspace(0.0, 1.0, 64).expand(32, 1, 64, 64).contiguous()  # brightness = column
    out = build_pipeline(["crop:p=1,min_area=0.25,max_aspect=1"])(ramp, _gen())
    spans = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert spans.max() < 1.0 and spans.min() > 0.45  # each window is 50-100 % of the width
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_blur_smooths_noise_and_keeps_flat_images() -> None:
    noisy = torch.rand(8, 1, 64, 64, generator=_gen(1))
    out = build_pipeline(["blur:p=1,sigma=2"])(noisy, _gen())
    assert out.std() < 0.7 * noisy.std()
    assert out.mean().item() == pytest.approx(noisy.mean().item(), abs=0.01)
    flat = torch.full((4, 1, 16, 16), 0.3)
    assert torch.allclose(build_pipeline(["blur:p=1"])(flat, _gen()), flat, atol=1e-6)
