"""Readers on real files (every original: JPEG, PNG RGB/RGBA/gray, WebP, JFIF) and on bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from cxr_infer.readers import ReadError, read_image
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
