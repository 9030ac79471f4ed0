"""DICOM input through pydicom: read a file (with or without a Part-10 header) and turn its
pixel data into the image a radiologist sees.

The display pipeline is the standard one: stored values -> Modality LUT (rescale) -> VOI LUT or
window -> MONOCHROME1 inverted, so bright is dense (bone) in every image the model gets, whatever
the modality vendor chose to store.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cxr_infer import errors
from cxr_infer.image_header import DeclaredSize
from cxr_infer.readers import ReadError, is_dicom

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
GRAY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
FIRST_GROUPS = (0x0002, 0x0008)  # a dataset without preamble starts with file meta or group 0008 (SOP Class UID is Type 1)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class DicomError(ReadError):
    """The file is DICOM (or claims to be) but holds no usable radiograph; the message says why."""


def read_dataset(path: str | Path) -> Dataset:
    """Read a DICOM file, including ACR-NEMA style files without preamble and file meta.

    ``force=True`` lets pydicom parse such files; it then knows their encoding from the data
    itself, and the transfer syntax it needs for decoding pixels is filled in from that. What
    is not DICOM at all is told apart first, by the preamble or the first data element, and a
    file cut short is named truncated (pydicom itself only warns and returns what it read).
    """
    _require_dicom_content(path)
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as error:
        _raise_if_truncated(path)
        raise DicomError(f"not a readable DICOM file ({type(error).__name__}: {error})", errors.CORRUPT) from error
    if len(ds) == 0 or "PixelData" not in ds or not _values_parse(ds):
        _raise_if_truncated(path)
    if len(ds) == 0:
        raise DicomError("DICOM file with no data elements", errors.NO_PIXELS)
    _ensure_transfer_syntax(ds)
    return ds


def declared_size(path: str | Path) -> DeclaredSize | None:
    """Rows x Columns x NumberOfFrames from the header alone (pixels are not read)."""
    _require_dicom_content(path)
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["Rows", "Columns", "NumberOfFrames"])
        return _declared(ds)
    except Exception:
        return None  # unreadable, or a value cut short: reading it in full names the problem


def _declared(ds: Dataset) -> DeclaredSize | None:
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    except (TypeError, ValueError):
        return None
    return DeclaredSize("DICOM", columns, rows, _frames(ds)) if rows and columns else None


def _frames(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _values_parse(ds: Dataset) -> bool:
    """Whether every top-level value parses: pydicom parses each on first access, and one cut
    short by the end of the file fails only then (a sloppy but whole file may fail too, so this
    only decides whether to look for a cut)."""
    try:
        for _ in ds:
            pass
    except Exception:
        return False
    return True


def _raise_if_truncated(path: str | Path) -> None:
    cut = _truncation(Path(path).read_bytes())
    if cut:
        raise DicomError(f"truncated DICOM: {cut}", errors.TRUNCATED)


def _require_dicom_content(path: str | Path) -> None:
    """Tell DICOM from other content by the preamble and 'DICM' or by the first data element; a
    file that ends before either can be seen (a zero preamble, the first element's group) is
    named truncated, not 'not DICOM'."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    if not head:
        raise DicomError("empty file (0 bytes)", errors.TRUNCATED)
    if is_dicom(head):
        return
    if len(head) < 132 and not any(head[:128]) and b"DICM".startswith(head[128:]):
        raise DicomError(f"truncated DICOM: the file ends after {len(head)} bytes, inside the 128-byte preamble or the 'DICM' marker", errors.TRUNCATED)
    if 2 <= len(head) < 8 and struct.unpack_from("<H", head)[0] in FIRST_GROUPS:
        raise DicomError(f"truncated DICOM: the file ends after {len(head)} bytes, inside its first data element", errors.TRUNCATED)
    if len(head) < 8 or struct.unpack_from("<H", head)[0] not in FIRST_GROUPS:
        raise DicomError(
            "not DICOM: no 'DICM' marker at byte 128 and no DICOM data element (group 0002 or 0008) at the start",
            errors.NOT_AN_IMAGE,
        )


def _truncation(data: bytes) -> str | None:
    """Where a DICOM file is cut short: the first element whose value runs past the end, or None.

    Walks the data elements (sequences and items included) from after the preamble and file
    meta; the file meta is explicit VR little endian, and so is the rest unless the data say
    implicit (the common encodings; big endian is retired).
    """
    try:
        offset = _after_meta(data) if is_dicom(data[:132]) else 0
        vr = data[offset + 4 : offset + 6]
        _walk(data, offset, implicit=not (len(vr) == 2 and vr.isalpha() and vr.isupper()), until=None)
    except _Cut as cut:
        return str(cut)
    return None


class _Cut(Exception):
    """The file ends inside the element named in the message."""


def _after_meta(data: bytes) -> int:
    offset = 132
    while offset + 8 <= len(data) and struct.unpack_from("<H", data, offset)[0] == 0x0002:
        offset = _skip_element(data, offset, implicit=False)
    return offset


def _walk(data: bytes, offset: int, implicit: bool, until: int | None) -> int:
    """Skip elements from ``offset`` until the end of the data or the delimiter tag ``until``
    (an undefined-length item or sequence, whose items are walked the same way)."""
    while offset < len(data):
        if offset + 8 > len(data):
            raise _Cut(f"the file ends inside a data element header at byte {offset:,}")
        group, element = struct.unpack_from("<HH", data, offset)
        if until is not None and (group << 16 | element) == until:
            return offset + 8
        offset = _skip_element(data, offset, implicit)
    if until is not None:
        raise _Cut("the file ends inside a sequence or item (no delimiter)")
    return offset


def _skip_element(data: bytes, offset: int, implicit: bool) -> int:
    group, element = struct.unpack_from("<HH", data, offset)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        (length,), value = struct.unpack_from("<I", data, offset + 4), offset + 8
    elif data[offset + 4 : offset + 6] in _LONG_VRS:
        if offset + 12 > len(data):
            raise _Cut(f"the file ends inside the header of element ({group:04X},{element:04X})")
        (length,), value = struct.unpack_from("<I", data, offset + 8), offset + 12
    else:
        (length,), value = struct.unpack_from("<H", data, offset + 6), offset + 8
    if length == 0xFFFFFFFF:
        if tag == _ITEM:
            return _walk(data, value, implicit, until=_ITEM_END)
        return _walk(data, value, implicit, until=_SEQUENCE_END)
    if value + length > len(data):
        raise _Cut(f"element ({group:04X},{element:04X}) declares {length:,} bytes, the file ends after {len(data) - value:,}")
    return value + length


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a header-less dataset the (uncompressed) transfer syntax it was actually read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    implicit = ds.original_encoding[0] if ds.original_encoding[0] is not None else True
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def dataset_to_image(ds: Dataset, max_pixels: int | None = None) -> np.ndarray:
    """Return the displayed radiograph as a 2-D float32 array (bright = dense).

    Colour images (secondary captures, screenshots) are reduced to gray; multi-frame data is
    refused because which frame is "the" radiograph is not ours to guess. Over ``max_pixels``
    (Rows x Columns x frames) is refused before the pixel data is decoded.
    """
    held = [ds[keyword] for keyword in PIXEL_KEYWORDS if keyword in ds]
    if not held:
        raise DicomError("DICOM file has no pixel data", errors.NO_PIXELS)
    if all(element.is_empty for element in held):
        raise DicomError("DICOM file's pixel data element is empty", errors.NO_PIXELS)
    size = _declared(ds)
    if max_pixels is not None and size is not None and size.pixels > max_pixels:
        raise DicomError(f"{size.describe()} exceeds the {max_pixels:,}-pixel limit (--max-pixels)", errors.TOO_LARGE)
    frames = _frames(ds)
    if frames > 1:
        raise DicomError(f"multi-frame DICOM ({frames} frames) is not a single radiograph", errors.UNSUPPORTED)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    short = _short_pixel_data(ds)
    if short:
        raise DicomError(f"truncated DICOM: {short}", errors.TRUNCATED)
    try:
        stored = ds.pixel_array
    except Exception as error:
        raise DicomError(f"cannot decode the pixel data ({type(error).__name__}: {error})", errors.CORRUPT) from error
    if photometric in COLOUR_PHOTOMETRICS:
        return _colour_to_gray(stored, photometric)
    if photometric not in GRAY_PHOTOMETRICS:
        raise DicomError(f"unsupported photometric interpretation {photometric!r}", errors.UNSUPPORTED)
    image = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float32, copy=False)
    if photometric == "MONOCHROME1":
        image = image.max() + image.min() - image
    return image


def _short_pixel_data(ds: Dataset) -> str | None:
    """Uncompressed pixel data shorter than Rows x Columns x samples x bits say, or None."""
    from pydicom.pixels.utils import get_expected_length

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in ds or syntax is None or syntax.is_compressed:
        return None
    try:
        expected = get_expected_length(ds, unit="bytes")
    except Exception:
        return None  # incomplete attributes: decoding names the problem
    held = len(ds.PixelData)
    return f"pixel data holds {held:,} bytes of the {expected:,} its image attributes need" if held < expected else None


def _colour_to_gray(pixels: np.ndarray, photometric: str) -> np.ndarray:
    """pydicom already converts YBR to RGB; reduce to luminance."""
    import cv2

    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DicomError(f"{photometric} pixel data of unexpected shape {pixels.shape}", errors.UNSUPPORTED)
    return cv2.cvtColor(pixels.astype(np.float32), cv2.COLOR_RGB2GRAY)
