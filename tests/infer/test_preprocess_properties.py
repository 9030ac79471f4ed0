"""Property tests of the one preprocessing function: any finite image of a supported kind gives a
model input in range, and nothing else passes (it raises ValueError naming the problem)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cxr_infer.preprocess import PreprocessSpec, preprocess

SPECS = [PreprocessSpec(size=16), PreprocessSpec(size=16, intensity="equalize")]
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
SHAPES = st.one_of(
    st.tuples(st.integers(2, 48), st.integers(2, 48)),
    st.tuples(st.integers(2, 48), st.integers(2, 48), st.sampled_from([1, 3, 4])),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _finite(dtype) -> st.SearchStrategy:
    if np.issubdtype(dtype, np.floating):
        return st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
    return st.integers(np.iinfo(dtype).min, np.iinfo(dtype).max)


@st.composite
def finite_images(draw) -> np.ndarray:
    dtype = draw(DTYPES)
    return draw(arrays(dtype, draw(SHAPES), elements=_finite(dtype)))


@SETTINGS
@given(image=finite_images(), which=st.integers(0, len(SPECS) - 1))
def test_any_finite_image_gives_an_input_in_range(image, which) -> None:
    spec = SPECS[which]
    out = preprocess(image, spec)
    assert out.shape == (1, spec.size, spec.size) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


@SETTINGS
@given(image=finite_images(), bad=st.sampled_from([np.nan, np.inf, -np.inf]), data=st.data())
def test_a_non_finite_pixel_is_refused(image, bad, data) -> None:
    image = image.astype(np.float32)
    index = tuple(data.draw(st.integers(0, n - 1)) for n in image.shape)
    image[index] = bad
    with pytest.raises(ValueError):
        preprocess(image, SPECS[0])


@SETTINGS
@given(shape=st.one_of(
    st.tuples(st.integers(0, 1), st.integers(0, 48)),           # too small
    st.tuples(st.integers(2, 8), st.integers(2, 8), st.sampled_from([2, 5])),  # channel counts that mean nothing
    st.tuples(st.integers(1, 4), st.integers(2, 8), st.integers(2, 8), st.integers(1, 3)),  # 4-D
    st.tuples(st.integers(2, 48)),                               # 1-D
))
def test_shapes_that_are_no_image_are_refused(shape) -> None:
    with pytest.raises(ValueError):
        preprocess(np.ones(shape, np.uint8), SPECS[0])


@pytest.mark.parametrize("array", [np.ones((8, 8), complex), np.array([["a", "b"], ["c", "d"]]), np.ones((8, 8), bool)])
def test_arrays_of_no_pixel_type_are_refused(array) -> None:
    with pytest.raises(ValueError):
        preprocess(array, SPECS[0])
