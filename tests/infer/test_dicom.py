"""DICOM input on the three real files of ../shared/data/dicom: header-less ACR-NEMA, VOI window,
10-bit stored, JPEG Baseline, MONOCHROME1 inversion, and files that hold no radiograph."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from cxr_infer.dicom import DicomError, dataset_to_image, read_dataset
from cxr_infer.readers import ReadError, read_image

from infer_support import DATA

MONO1_10BIT = DATA / "dicom" / "cr_mono1_10_chest.dcm"
SIIM = next((DATA / "dicom").glob("siim_acr_1.2.*.dcm"), None)  # None without the data (its tests are marked data)
SIIM_FAKE_MONO1 = DATA / "dicom" / "siim_acr_fake_monochrome1.dcm"


@pytest.mark.data
def test_headerless_10_bit_monochrome1_is_read_windowed_and_inverted():
    ds = read_dataset(MONO1_10BIT)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 10
    image = dataset_to_image(ds)
    assert image.shape == (440, 440) and image.dtype == np.float32
    # the 550/1024 window maps onto the 10-bit output range
    assert 0 <= image.min() and image.max() <= 1023
    # after inversion the air around the chest is dark and the mediastinum bright
    corners = np.concatenate([image[:40, :40].ravel(), image[:40, -40:].ravel()])
    centre = image[180:260, 200:240]
    assert centre.mean() > corners.mean() + 100


@pytest.mark.data
def test_jpeg_baseline_decodes_and_monochrome1_header_inverts_it():
    normal = dataset_to_image(read_dataset(SIIM))
    inverted = dataset_to_image(read_dataset(SIIM_FAKE_MONO1))
    assert normal.shape == inverted.shape == (1024, 1024)
    assert np.array_equal(inverted, normal.max() + normal.min() - normal)


@pytest.mark.data
def test_read_image_picks_dicom_by_content_and_extension(tmp_path):
    renamed = tmp_path / "looks_like.png"
    renamed.write_bytes(SIIM.read_bytes())
    assert read_image(renamed).shape == (1024, 1024)
    assert read_image(MONO1_10BIT).shape == (440, 440)


@pytest.mark.data
def test_dicom_without_pixel_data_is_a_clear_error(tmp_path):
    ds = read_dataset(SIIM)
    del ds.PixelData
    path = tmp_path / "no_pixels.dcm"
    ds.save_as(path)
    with pytest.raises(ReadError, match="no pixel data"):
        read_image(path)


def test_multi_frame_and_odd_photometric_are_refused():
    ds = Dataset()
    ds.PixelData = b"\0" * 8
    ds.NumberOfFrames = 2
    with pytest.raises(DicomError, match="multi-frame"):
        dataset_to_image(ds)


def test_not_dicom_at_all(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("just some text, not a DICOM file\n")
    with pytest.raises(DicomError):
        dataset_to_image(read_dataset(path))
