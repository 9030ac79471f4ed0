"""The one preprocessing function: its output contract and the spec that travels in the model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_infer.preprocess import PreprocessSpec, preprocess, to_gray
from cxr_infer.readers import read_image
from infer_support import ORIGINALS


@pytest.mark.data
def test_output_is_one_channel_square_in_unit_range_for_every_original():
    spec = PreprocessSpec(size=64)
    for path in ORIGINALS:
        x = preprocess(read_image(path), spec)
        assert x.shape == (1, 64, 64) and x.dtype == np.float32, path
        assert x.min() == 0.0 and x.max() == 1.0, path  # percentiles map to the ends of the range


@pytest.mark.data
def test_bit_depth_and_exposure_do_not_change_the_input():
    """A 16-bit copy, or a brighter rescaled copy, of an image gives the same model input."""
    gray = to_gray(read_image(ORIGINALS[10])).astype(np.float64)
    spec = PreprocessSpec(size=64)
    wide = (gray * 257).astype(np.uint16)
    brighter = (gray * 0.5 + 100).astype(np.float32)
    reference = preprocess(gray.astype(np.uint8), spec)
    np.testing.assert_allclose(preprocess(wide, spec), reference, atol=1e-5)
    np.testing.assert_allclose(preprocess(brighter, spec), reference, atol=1e-5)


def test_alpha_is_composited_on_black():
    bgra = np.full((8, 8, 4), 200, np.uint8)
    bgra[..., 3] = 255
    bgra[:4, :, 3] = 0
    gray = to_gray(bgra)
    assert np.all(gray[:4] == 0) and np.allclose(gray[4:], 200)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_alpha_compositing_by_bands_equals_the_whole_image_at_once(dtype):
    rng = np.random.default_rng(3)
    scale = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    bgra = (rng.random((601, 37, 4)) * scale).astype(dtype)  # more rows than one band, and a short last band
    alpha = bgra[:, :, 3:4].astype(np.float32) / scale
    whole = cv2.cvtColor(bgra[:, :, :3].astype(np.float32) * alpha, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(to_gray(bgra), whole)


def test_spec_round_trips_and_refuses_what_it_does_not_know():
    spec = PreprocessSpec(size=96)
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unsupported preprocessing keys: crop"):
        PreprocessSpec.from_json('{"size": 96, "crop": "center"}')
    with pytest.raises(ValueError, match="version 2"):
        PreprocessSpec(version=2)
    with pytest.raises(ValueError, match="resize rule"):
        PreprocessSpec(resize="letterbox")


def test_flat_image_is_all_zero_not_nan():
    assert np.all(preprocess(np.full((32, 32), 7, np.uint8), PreprocessSpec(size=16)) == 0)


def test_equalize_flattens_the_histogram_and_ignores_any_contrast_curve():
    rng = np.random.default_rng(0)
    image = (rng.beta(2, 5, (64, 64)) * 4095).astype(np.uint16)  # a skewed 12-bit histogram, at model size
    spec = PreprocessSpec(size=64, intensity="equalize")
    out = preprocess(image, spec)
    assert out.shape == (1, 64, 64) and out.min() == 0.0 and out.max() == 1.0
    counts, _ = np.histogram(out, bins=4, range=(0, 1))
    assert counts.max() / counts.min() < 1.1  # flat: each quarter of the range holds a quarter of the pixels
    curved = (4095 * (image / 4095.0) ** 0.4).astype(np.float32)  # another source's gamma / film curve
    np.testing.assert_allclose(preprocess(curved, spec), out, atol=0.02)
    assert not np.allclose(preprocess(curved, PreprocessSpec(size=64)), preprocess(image, PreprocessSpec(size=64)), atol=0.02)
    assert preprocess(np.full((40, 40), 7, np.uint8), spec).max() == 0.0
    assert PreprocessSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("image", "kind", "message"),
    [
        (np.full((1, 1), 7, np.uint8), "unsupported", "1x1 pixels is too small"),
        (np.zeros((1, 4000), np.uint16), "unsupported", "4000x1 pixels is too small"),
        (np.where(np.eye(8) > 0, np.nan, 1.0).astype(np.float32), "corrupt", "non-finite"),
        (np.full((8, 8), np.inf, np.float64), "corrupt", "non-finite"),
    ],
)
def test_an_unusable_image_is_refused_with_its_kind(image, kind, message, tiny_model_path):
    """A 1-pixel-wide PNG or a float TIFF holding NaN is the input's problem: its row says so by
    kind, not 'internal' (an unforeseen bug) as when preprocess raised a bare ValueError."""
    from cxr_infer.api import Classifier
    from cxr_infer.errors import error_kind
    from cxr_infer.preprocess import UnusableImage

    with pytest.raises(UnusableImage, match=message) as refused:
        preprocess(image, PreprocessSpec(size=64))
    assert refused.value.kind == kind
    with Classifier.load(tiny_model_path, threads=1, gate="off") as classifier:
        (prediction,) = classifier.predict([image])
    assert error_kind(prediction.error) == kind and message in prediction.error
