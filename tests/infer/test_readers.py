"""Readers on real files (every original: JPEG, PNG RGB/RGBA/gray, WebP, JFIF) and on bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from cxr_infer.readers import ReadError, jpeg_reduction, read_image
from infer_support import ORIGINALS, make_bad_inputs, png_header_only


@pytest.mark.data
@pytest.mark.parametrize("path", ORIGINALS, ids=[p.name[:30] for p in ORIGINALS])
def test_every_original_decodes_at_full_resolution(path):
    image = read_image(path)
    with Image.open(path) as reference:
        width, height = reference.size
    assert image.shape[:2] == (height, width)
    assert image.dtype == np.uint8


def test_sixteen_bit_png_keeps_its_depth(tmp_path):
    ramp = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 20).astype(np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), ramp)
    image = read_image(path)
    assert image.dtype == np.uint16 and np.array_equal(image, ramp)


@pytest.mark.parametrize("orientation, expected", [(1, (40, 60)), (3, (40, 60)), (6, (60, 40)), (8, (60, 40))])
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    """A 60x40 image whose top-left quarter is white; after orientation the white corner moves."""
    pixels = np.zeros((40, 60), np.uint8)
    pixels[:20, :30] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    image = read_image(path)
    assert image.shape[:2] == expected
    with Image.open(path) as stored:
        reference = np.asarray(ImageOps.exif_transpose(stored))
    assert np.abs(image.astype(int) - reference.astype(int)).max() <= 2


def test_rgba_png_decodes_with_alpha(tmp_path):
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 128
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), rgba)
    assert read_image(path).shape == (30, 40, 4)


@pytest.mark.data
@pytest.mark.parametrize(
    "kind, message, error_kind",
    [
        ("zero-byte", "empty file", "truncated"),
        ("truncated", "JPEG ends inside its scan data", "truncated"),
        ("text", "not a recognised image", "not-an-image"),
        ("bomb", "PNG of 12000x12000 pixels exceeds the 40,000,000-pixel limit", "too-large"),
        ("no-pixel-dicom", "no pixel data", "no-pixels"),
    ],
)
def test_bad_input_is_a_read_error_with_a_reason(tmp_path, kind, message, error_kind):
    path = make_bad_inputs(tmp_path)[kind]
    with pytest.raises(ReadError, match=message) as refused:
        read_image(path)
    assert refused.value.kind == error_kind


def test_pillow_bomb_limit_is_also_a_read_error(tmp_path):
    """Beyond Pillow's own limit its DecompressionBombError must not let the decoder run."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(200_000, 200_000))
    with pytest.raises(ReadError, match="decompression bomb|pixel limit"):
        read_image(path)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(ReadError, match="file not found"):
        read_image(tmp_path / "absent.png")
    odd = tmp_path / "table.xyz"
    odd.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(ReadError, match="unsupported file type"):
        read_image(odd)


@pytest.mark.parametrize(
    "width, height, min_side, min_long_side, factor",
    [(2000, 1600, 192, 0, 8), (2000, 1600, 256, 0, 4), (2000, 1600, 256, 1024, 1), (4000, 3000, 192, 1024, 2),
     (320, 390, 192, 0, 1), (320, 390, 0, 0, 1), (1600, 2000, 100, 0, 8), (1537, 1537, 193, 0, 8), (1536, 1536, 193, 0, 4)],
)
def test_jpeg_reduction_keeps_the_sides_asked_for(width, height, min_side, min_long_side, factor):
    assert jpeg_reduction(width, height, min_side, min_long_side) == factor


@pytest.mark.data
@pytest.mark.parametrize("index", [3, 8], ids=["rgb-2059x1483", "gray-1496x1137"])
def test_large_jpeg_decodes_reduced_with_the_same_channels_and_content(index):
    path = ORIGINALS[index]
    full = read_image(path)
    reduced = read_image(path, min_side=192)
    height, width = full.shape[:2]
    assert reduced.shape[:2] == (-(-height // 4), -(-width // 4))  # 1/4: the short side stays >= 192
    assert reduced.shape[2:] == full.shape[2:] and reduced.dtype == full.dtype
    shrunk = cv2.resize(full, (reduced.shape[1], reduced.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(float) - reduced).mean() < 2.0  # the same picture, not a crop or a shift


def test_reduced_decode_keeps_exif_orientation(tmp_path):
    """A 640x400 JPEG (white top-left quarter) turned by EXIF 6, decoded at 1/4: the white corner
    lands where the upright full-size image has it."""
    pixels = np.zeros((400, 640), np.uint8)
    pixels[:200, :320] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    full, reduced = read_image(path), read_image(path, min_side=100)
    assert full.shape == (640, 400) and reduced.shape == (160, 100)
    expected = cv2.resize(full, (100, 160), interpolation=cv2.INTER_AREA)
    assert np.abs(expected.astype(int) - reduced).mean() < 3


def test_only_jpeg_is_reduced_and_the_pixel_limit_still_holds(tmp_path):
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.full((800, 900), 128, np.uint8))
    assert read_image(path, min_side=50).shape == (800, 900)  # PNG has no reduced decode
    with pytest.raises(ReadError, match="pixel limit") as refused:
        read_image(path, max_pixels=700_000, min_side=50)
    assert refused.value.kind == "too-large"
