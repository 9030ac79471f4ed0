"""Grad-CAM arithmetic against an explicit loop, and overlays that keep the radiograph's geometry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_infer.gradcam import class_maps, upsample
from cxr_infer.overlay import OverlayStyle, render_overlay, to_display, write_overlay
from cxr_infer.readers import read_image
from infer_support import DICOMS, ORIGINALS


def test_class_maps_follow_the_formula():
    rng = np.random.default_rng(0)
    act = rng.normal(size=(3, 5, 4, 6)).astype(np.float32)
    grad = rng.normal(size=(3, 2, 5, 4, 6)).astype(np.float32)
    picked = np.array([1, 0, 1])
    cams = class_maps(act, grad, picked)
    for n, k in enumerate(picked):
        expected = np.zeros((4, 6))
        for c in range(5):
            expected += grad[n, k, c].mean() * act[n, c]
        np.testing.assert_allclose(cams[n], np.maximum(expected, 0), rtol=1e-5, atol=1e-5)


def test_upsample_scales_to_unit_range_and_keeps_zero_maps_zero():
    cam = np.array([[0.0, 2.0], [1.0, 4.0]], np.float32)
    big = upsample(cam, 30, 50)
    assert big.shape == (30, 50) and big.dtype == np.float32
    assert big.min() >= 0 and big.max() == pytest.approx(1.0)
    assert not upsample(np.zeros((2, 2), np.float32), 7, 9).any()


@pytest.mark.data
# ORIGINALS[4], ORIGINALS[8] and DICOMS[0], taken as slices so that collecting without the data finds none
@pytest.mark.parametrize("path", ORIGINALS[4:5] + ORIGINALS[8:9] + DICOMS[:1], ids=lambda p: p.name[:24])
def test_overlay_keeps_size_and_aspect_and_draws_a_legend(path):
    image = read_image(path)
    height, width = image.shape[:2]
    heat = np.zeros((7, 7), np.float32)
    heat[3, 3] = 1.0  # another size than the image: the overlay resizes it
    overlay = render_overlay(image, heat, "covid", 0.91)
    assert overlay.shape == (height, width, 3) and overlay.dtype == np.uint8
    plain = to_display(image)
    centre = overlay[height // 2 - 2 : height // 2 + 2, width // 2 - 2 : width // 2 + 2].astype(int)
    assert np.abs(centre[..., 0] - centre[..., 2]).mean() > 20, "the hot centre is not coloured"
    corner = overlay[height - 5 :, width - 5 :]
    assert np.array_equal(corner[..., 0], plain[height - 5 :, width - 5 :]), "cold regions must stay untouched"
    top, left = height // 8, width // 3
    drawn = (overlay[:top, :left] == 255).all(axis=2) & (plain[:top, :left] < 255)
    assert drawn.sum() > 20, "no legend text in the top-left corner"


@pytest.mark.data
def test_overlay_at_display_size_keeps_the_aspect_and_never_enlarges():
    image = read_image(ORIGINALS[4])  # 1458 x 1303
    heat = np.ones((7, 7), np.float32)
    small = render_overlay(image, heat, "normal", 0.5, long_side=512)
    assert small.shape == (round(1303 * 512 / 1458), 512, 3)
    assert render_overlay(image, heat, "normal", 0.5, long_side=4096).shape[:2] == image.shape[:2]


@pytest.mark.parametrize("style, suffix", [(OverlayStyle(), ".jpg"), (OverlayStyle(format="png", quality=9), ".png")])
def test_overlay_files_decode_back(tmp_path, style, suffix):
    film = np.add.outer(np.arange(120), np.arange(90)).astype(np.uint8)  # smooth, as radiographs are
    heat = np.zeros((3, 3), np.float32)
    heat[1, 1] = 1.0
    drawn = render_overlay(film, heat, "covid", 0.7)
    path = tmp_path / f"sub/o{style.suffix}"
    write_overlay(path, drawn, style)
    back = cv2.imread(str(path))
    assert style.suffix == suffix and back.shape == drawn.shape
    error = np.abs(back.astype(int) - drawn)
    assert error.max() == 0 if suffix == ".png" else error.mean() < 8  # PNG is lossless; JPEG 90 stays close


@pytest.mark.parametrize("kwargs, message", [({"format": "gif"}, "not one of"), ({"format": "jpg", "quality": 0}, "out of range"),
                                             ({"long_side": -1}, "overlay size")])
def test_overlay_style_refuses_what_it_cannot_write(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OverlayStyle(**kwargs)
