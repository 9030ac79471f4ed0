"""DICOM input through pydicom: read a file (with or without a Part-10 header) and turn its
pixel data into the image a radiologist sees.

The display pipeline is the standard one: stored values -> Modality LUT (rescale) -> VOI LUT or
window -> MONOCHROME1 inverted, so bright is dense (bone) in every image the model gets, whatever
the modality vendor chose to store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cxr_infer.readers import ReadError

GRAY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")


class DicomError(ReadError):
    """The file is DICOM (or claims to be) but holds no usable radiograph; the message says why."""


def read_dataset(path: str | Path) -> Dataset:
    """Read a DICOM file, including ACR-NEMA style files without preamble and file meta.

    ``force=True`` lets pydicom parse such files; it then knows their encoding from the data
    itself, and the transfer syntax it needs for decoding pixels is filled in from that.
    """
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as error:
        raise DicomError(f"not a readable DICOM file ({type(error).__name__}: {error})") from error
    if len(ds) == 0:
        raise DicomError("not a DICOM file (no data elements)")
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a header-less dataset the (uncompressed) transfer syntax it was actually read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    implicit = ds.original_encoding[0] if ds.original_encoding[0] is not None else True
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def dataset_to_image(ds: Dataset) -> np.ndarray:
    """Return the displayed radiograph as a 2-D float32 array (bright = dense).

    Colour images (secondary captures, screenshots) are reduced to gray; multi-frame data is
    refused because which frame is "the" radiograph is not ours to guess.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError("DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"multi-frame DICOM ({frames} frames) is not a single radiograph")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        stored = ds.pixel_array
    except Exception as error:
        raise DicomError(f"cannot decode the pixel data ({type(error).__name__}: {error})") from error
    if photometric in COLOUR_PHOTOMETRICS:
        return _colour_to_gray(stored, photometric)
    if photometric not in GRAY_PHOTOMETRICS:
        raise DicomError(f"unsupported photometric interpretation {photometric!r}")
    image = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float32, copy=False)
    if photometric == "MONOCHROME1":
        image = image.max() + image.min() - image
    return image


def _colour_to_gray(pixels: np.ndarray, photometric: str) -> np.ndarray:
    """pydicom already converts YBR to RGB; reduce to luminance."""
    import cv2

    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DicomError(f"{photometric} pixel data of unexpected shape {pixels.shape}")
    return cv2.cvtColor(pixels.astype(np.float32), cv2.COLOR_RGB2GRAY)
