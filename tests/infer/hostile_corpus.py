"""A generated corpus of bad and odd inputs, each with the outcome ``cxr-infer`` must give it.

:func:`build` fills a folder with well over 200 entries of every kind a real inbox holds or an
attacker can make: files cut short at many offsets in every format, wrong and missing
extensions, empty files, headers declaring huge sizes in every format (decompression bombs,
DICOM Rows x Columns x frames, RLE- and JPEG-compressed DICOM declaring 15000 x 15000),
non-UTF-8 and formula-injection names, links that dangle or loop, FIFOs, sockets, devices,
folders named like images, hidden files, unsupported types, and odd but valid images (16-bit,
float, HDR, PFM, palette, alpha, CMYK JPEG, EXIF rotations, 1 x 1 and extreme aspect ratios,
MONOCHROME1, colour, big-endian, deflated, RLE and JPEG DICOM). It returns ``{entry name:
Expected}``: classified, or the error kind (:mod:`cxr_infer.errors`) and a fragment of the
reason the row must carry. Everything is generated; no data set is needed, and every image is
small, so the whole corpus is classified in seconds.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pacs_support import CR_IMAGE_STORAGE
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filereader import data_element_generator
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.22"


@dataclass(frozen=True)
class Expected:
    """What the row of one entry must say: ``kind`` None means classified; ``reason`` is a
    fragment of the error text (after the kind)."""

    kind: str | None = None
    reason: str = ""


CLASSIFIED = Expected()
TRUNCATED = Expected("truncated")


def gradient(height: int = 48, width: int = 48, dtype=np.uint8) -> np.ndarray:
    """A diagonal gradient filling ``dtype``'s range (a constant image says nothing about decoding)."""
    ramp = np.add.outer(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)) / max(height + width - 2, 1)
    if np.issubdtype(dtype, np.floating):
        return ramp.astype(dtype)
    return (ramp * np.iinfo(dtype).max).astype(dtype)


def encode(image: np.ndarray, extension: str, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(extension, image, list(params))
    assert ok, extension
    return data.tobytes()


def pil_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A complete, tiny PNG whose IHDR declares ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose start-of-frame is patched to declare ``width`` x ``height``."""
    data = bytearray(encode(gradient(), ".jpg"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    """A baseline 8-bit gray TIFF declaring ``width`` x ``height`` with one 64-byte strip."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, 64)]
    ifd_size = 2 + 12 * len(entries) + 4
    strip = 8 + ifd_size
    entries[5] = (273, 4, strip)
    body = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        body += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", 0) + bytes(64)


def bmp_declaring(width: int, height: int) -> bytes:
    """An 8-bit BMP header (with its palette) declaring ``width`` x ``height`` and a few pixels."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    pixels = bytes(64)
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def webp_declaring(width: int, height: int) -> bytes:
    """An extended WebP (VP8X) whose canvas is ``width`` x ``height``, holding a tiny lossless image."""
    small = pil_bytes(Image.fromarray(gradient(16, 16)), "WEBP", lossless=True)
    image_chunk = small[12:]  # the VP8L chunk of a simple-format file
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + image_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def radiance(width: int, height: int, pixels: bytes = b"") -> bytes:
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (height, width) + pixels


def pfm(width: int, height: int, pixels: bytes = b"") -> bytes:
    return b"Pf\n%d %d\n-1.0\n" % (width, height) + pixels


# ---------------------------------------------------------------- DICOM


def dicom(
    rows: int = 48,
    columns: int = 48,
    *,
    syntax: str = ExplicitVRLittleEndian,
    pixels: bytes | None = None,
    photometric: str = "MONOCHROME2",
    bits: int = 16,
    signed: bool = False,
    samples: int = 1,
    **attributes,
) -> Dataset:
    """A CR dataset of ``rows`` x ``columns`` (by default uncompressed gradient pixels that fill it)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality, ds.ViewPosition = "Corpus^Test", "corpus", "CR", "PA"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, samples, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, int(signed)
    if samples > 1:
        ds.PlanarConfiguration = 0
    if pixels is None:
        dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[bits, signed]
        image = gradient(rows, columns, dtype)
        pixels = np.repeat(image[..., None], samples, axis=2).tobytes() if samples > 1 else image.tobytes()
    ds.PixelData = pixels
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def dicom_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    """Part-10 bytes (``preamble=False``: an ACR-NEMA style file, the dataset alone, implicit VR)."""
    buffer = io.BytesIO()
    if preamble:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        del ds.file_meta
        ds.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def rle_frame_of_zeros(declared_bytes: int, held_runs: int) -> bytes:
    """One RLE Lossless segment (8-bit) of replicate runs: a bomb holds far fewer runs than it declares."""
    runs = min(held_runs, -(-declared_bytes // 128))
    return struct.pack("<16I", 1, 64, *([0] * 14)) + b"\x81\x00" * runs


def rle_dicom(rows: int, columns: int, held_runs: int, frames: int = 1) -> Dataset:
    """An 8-bit RLE Lossless DICOM of ``frames`` frames of zeros, each holding at most ``held_runs`` runs."""
    fragments = [rle_frame_of_zeros(rows * columns, held_runs)] * frames
    ds = dicom(rows, columns, syntax=RLELossless, bits=8, pixels=encapsulate(fragments))
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def jpeg_dicom(rows: int, columns: int) -> Dataset:
    """A JPEG Baseline DICOM; the frame is a real 48 x 48 JPEG whatever the Rows and Columns say."""
    return dicom(rows, columns, syntax=JPEGBaseline8Bit, bits=8, pixels=encapsulate([encode(gradient(), ".jpg")]), LossyImageCompression="01")


def dicom_cut_points(data: bytes, encapsulated: bool) -> list[int]:
    """Offsets that fall inside data elements (never on a boundary between two, where a cut
    file is indistinguishable from a shorter whole one): mid-preamble, inside 'DICM', then the
    middle of a header and of a value for a spread of the elements, and near the end (inside
    the last fragment of encapsulated pixel data: a cut in its closing delimiter loses no pixel)."""
    points = [64, 130]
    elements = data_element_generator(io.BytesIO(data[132:]), is_implicit_VR=False, is_little_endian=True)
    for element in elements:
        start = 132 + element.value_tell
        points.append(start - 3)
        if 2 <= element.length < 0xFFFFFFFF:
            points.append(start + element.length // 2)
    last = len(data) - (10 if encapsulated else 1)
    return sorted({p for p in points if 0 < p < last})[::3] + [last]


# ---------------------------------------------------------------- the corpus


class Corpus:
    """The folder being filled and the outcomes expected of its entries."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.expected: dict[str, Expected] = {}
        folder.mkdir(parents=True)

    def file(self, name: str | bytes, content: bytes, expected: Expected = CLASSIFIED) -> None:
        with open(self._path(name), "xb") as handle:
            handle.write(content)
        self._expect(name, expected)

    def make(self, name: str | bytes, create: Callable[[bytes], None], expected: Expected) -> None:
        """An entry that is not a plain file (link, FIFO, socket, folder), made by ``create(path)``."""
        create(self._path(name))
        self._expect(name, expected)

    def _path(self, name: str | bytes) -> bytes:
        return os.path.join(os.fsencode(self.folder), os.fsencode(name))

    def _expect(self, name: str | bytes, expected: Expected) -> None:
        key = os.fsdecode(name)
        assert key not in self.expected, key
        self.expected[key] = expected


def build(folder: Path) -> dict[str, Expected]:
    """Make the corpus in ``folder`` (created); returns {entry name (as ``os.listdir`` gives it): Expected}."""
    corpus = Corpus(folder)
    _valid_rasters(corpus)
    _valid_dicoms(corpus)
    _truncated(corpus)
    _bombs(corpus)
    _not_images(corpus)
    _odd_dicoms(corpus)
    _names(corpus)
    _not_files(corpus)
    _skipped(corpus)
    return corpus.expected


def _valid_rasters(corpus: Corpus) -> None:
    gray, gray16 = gradient(), gradient(dtype=np.uint16)
    rgb = np.dstack([gray, gray[::-1], gray[:, ::-1]])
    pil_gray = Image.fromarray(gray)
    files = {
        "gray8.png": encode(gray, ".png"),
        "gray16.png": encode(gray16, ".png"),
        "rgb.png": encode(rgb, ".png"),
        "rgba.png": encode(np.dstack([rgb, gray]), ".png"),
        "rgba16.png": encode(np.dstack([gray16] * 4), ".png"),
        "gray-alpha.png": pil_bytes(Image.merge("LA", [pil_gray, pil_gray]), "PNG"),
        "palette.png": pil_bytes(pil_gray.convert("P"), "PNG"),
        "palette-transparent.png": pil_bytes(pil_gray.convert("P"), "PNG", transparency=0),
        "bilevel.png": pil_bytes(pil_gray.convert("1"), "PNG"),
        "black.png": encode(np.zeros((48, 48), np.uint8), ".png"),
        "white16.png": encode(np.full((48, 48), 65535, np.uint16), ".png"),
        "aspect-2x2000.png": encode(gradient(2, 2000), ".png"),
        "two-pixels.png": encode(np.full((2, 2), 128, np.uint8), ".png"),
        "large-6000x6000.png": encode(np.zeros((6000, 6000), np.uint8), ".png"),  # 36 MP: under the limit, decoded
        "large-6000x6000-bgra16.png": encode(np.zeros((6000, 6000, 4), np.uint16), ".png"),  # the most bytes a PNG under the limit decodes to
        "gray.jpg": encode(gray, ".jpg"),
        "rgb.jpeg": encode(rgb, ".jpeg"),
        "gray.jfif": encode(gray, ".jpg"),
        "progressive.jpg": encode(gray, ".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        "cmyk.jpg": pil_bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "upper-case.PNG": encode(gray, ".png"),
        "upper-case.JPG": encode(gray, ".jpg"),
        "gray.bmp": encode(gray, ".bmp"),
        "rgb.bmp": encode(rgb, ".bmp"),
        "gray8.tif": encode(gray, ".tif"),
        "gray16.tiff": encode(gray16, ".tiff"),
        "float32.tif": encode(gradient(dtype=np.float32), ".tiff"),
        "rgb-lzw.tif": pil_bytes(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"),
        "two-pages.tif": pil_bytes(pil_gray, "TIFF", save_all=True, append_images=[pil_gray]),
        "lossless.webp": pil_bytes(pil_gray, "WEBP", lossless=True),
        "lossy.webp": encode(rgb, ".webp"),
        "radiance-hdr-content.png": encode(np.dstack([gradient(dtype=np.float32)] * 3), ".hdr"),
        "pfm-content.png": encode(gradient(dtype=np.float32), ".pfm"),
        "pgm-content.png": b"P5\n48 48\n255\n" + gradient().tobytes(),
        "jpeg2000-content.jpg": encode(gradient(), ".jp2"),
    }
    for name, content in files.items():
        corpus.file(name, content)
    for orientation in range(2, 9):  # phone photos of films: EXIF says how to turn them upright
        exif = Image.Exif()
        exif[0x0112] = orientation
        corpus.file(f"exif-orientation-{orientation}.jpg", pil_bytes(Image.fromarray(gradient(48, 32)), "JPEG", exif=exif))
    corpus.file("float64.tif", encode(np.dstack([gradient(dtype=np.float64)] * 3), ".tiff"), Expected("unsupported", "TIFF in a layout whose image size cannot be read"))
    corpus.file("ico-content.png", pil_bytes(Image.fromarray(gradient()), "ICO"), Expected("unsupported", "ICO images are not read"))
    too_small = Expected("unsupported", "too small to classify")
    corpus.file("one-pixel.png", encode(np.full((1, 1), 128, np.uint8), ".png"), too_small)
    corpus.file("one-pixel.jpg", encode(np.full((1, 1), 128, np.uint8), ".jpg"), too_small)
    corpus.file("one-row-4000.png", encode(gradient(1, 4000), ".png"), too_small)
    corpus.file("one-column-4000.tif", encode(gradient(4000, 1, np.uint16), ".tif"), too_small)
    nan = gradient(dtype=np.float32)
    nan[3, 3] = np.nan
    corpus.file("float-nan.tif", encode(nan, ".tiff"), Expected("corrupt", "non-finite"))
    corpus.file("float-inf.tif", encode(np.where(nan != nan, np.inf, nan).astype(np.float32), ".tiff"), Expected("corrupt", "non-finite"))


def _valid_dicoms(corpus: Corpus) -> None:
    valid = {
        "mono2-16bit.dcm": dicom(),
        "mono2-8bit.dcm": dicom(bits=8),
        "mono1.dcm": dicom(photometric="MONOCHROME1"),
        "signed.dcm": dicom(signed=True),
        "rescaled.dcm": dicom(RescaleSlope=2, RescaleIntercept=-1024, RescaleType="US"),
        "windowed.dcm": dicom(WindowCenter=30000, WindowWidth=20000),
        "rgb.dcm": dicom(bits=8, samples=3, photometric="RGB"),
        "implicit-vr.dcm": dicom(syntax=ImplicitVRLittleEndian),
        "big-endian.dcm": dicom(syntax=ExplicitVRBigEndian, bits=8),
        "deflated.dcm": dicom(syntax=DeflatedExplicitVRLittleEndian),
        "rle.dcm": dicom(syntax=ExplicitVRLittleEndian),
        "jpeg-baseline.dcm": jpeg_dicom(48, 48),
        "extension.dicom": dicom(),
        "no-extension-dicom": dicom(),
        "dicom-content.png": dicom(),
        "dicom-content.jpg": dicom(),
    }
    valid["rle.dcm"].compress(RLELossless)
    for name, ds in valid.items():
        corpus.file(name, dicom_bytes(ds))
    corpus.file("no-preamble.dcm", dicom_bytes(dicom(), preamble=False))
    corpus.file("no-preamble-no-extension", dicom_bytes(dicom(), preamble=False))
    no_uid = dicom()
    del no_uid.SOPInstanceUID
    corpus.file("no-sop-instance-uid.dcm", dicom_bytes(no_uid), Expected("output", "no SOP Instance UID"))
    bad_uid = dicom()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the invalid UI value, as it should
        bad_uid.SOPInstanceUID = "1.2.3/../../escape"
        corpus.file("path-in-sop-instance-uid.dcm", dicom_bytes(bad_uid), Expected("output", "UID"))


def _truncated(corpus: Corpus) -> None:
    """Every format cut at a spread of offsets, each named truncated (not corrupt, not 'no pixels')."""
    gray = gradient(64, 64)
    whole = {
        "png": encode(gray, ".png"),
        "jpg": encode(gray, ".jpg"),
        "bmp": encode(gray, ".bmp"),
        "webp": pil_bytes(Image.fromarray(gray), "WEBP", lossless=True),
        "tif": encode(gray, ".tif"),
    }
    for extension, data in whole.items():
        tail = 13 if extension == "png" else 1  # a PNG cut in its IEND chunk has all its pixels
        offsets = sorted({1, 2, 5, 9, 17, 30, 45, len(data) // 4, len(data) // 2, 3 * len(data) // 4, len(data) - tail})
        for offset in offsets:
            corpus.file(f"cut-{offset:05d}-of-{len(data)}.{extension}", data[:offset], TRUNCATED)
    for label, ds in (("explicit", dicom()), ("rle", dicom()), ("jpeg", jpeg_dicom(48, 48))):
        if label == "rle":
            ds.compress(RLELossless)
        data = dicom_bytes(ds)
        for offset in dicom_cut_points(data, encapsulated=label != "explicit"):
            corpus.file(f"cut-{offset:05d}-of-{len(data)}-{label}.dcm", data[:offset], TRUNCATED)
    implicit = dicom_bytes(dicom(), preamble=False)
    for offset in (3, 9, 100, len(implicit) // 2, len(implicit) - 7):
        corpus.file(f"cut-{offset:05d}-of-{len(implicit)}-no-preamble.dcm", implicit[:offset], TRUNCATED)
    for extension in ("png", "jpg", "jpeg", "tif", "bmp", "webp", "dcm"):
        corpus.file(f"empty.{extension}", b"", Expected("truncated", "empty file"))
    corpus.file("empty-no-extension", b"", Expected("truncated", "empty file"))
    short = dicom(400, 400, pixels=dicom().PixelData)  # declares 400 x 400 x 16 bit, holds 48 x 48
    corpus.file("short-pixel-data.dcm", dicom_bytes(short), Expected("truncated", "pixel data holds"))


def _bombs(corpus: Corpus) -> None:
    """Headers declaring far more than the 40-MP limit: refused before a byte is decoded."""
    too_large = Expected("too-large", "pixel limit")
    bomb = Expected("too-large", "")  # over Pillow's own bomb limit (179 MP): refused in its words
    files = {
        "bomb-9000x9000.png": (png_declaring(9000, 9000), too_large),
        "bomb-100000x1000.png": (png_declaring(100_000, 1000), too_large),
        "bomb-2147483647-square.png": (png_declaring(2**31 - 1, 2**31 - 1), bomb),
        "bomb-65000x65000.jpg": (jpeg_declaring(65000, 65000), bomb),
        "bomb-jpeg-content.dcm": (jpeg_declaring(20000, 20000), bomb),
        "bomb-50000x50000.tif": (tiff_declaring(50000, 50000), bomb),
        "bomb-30000x30000.bmp": (bmp_declaring(30000, 30000), bomb),
        "bomb-16384x16384.webp": (webp_declaring(16384, 16384), bomb),
        "bomb-radiance-content.png": (radiance(15000, 15000, bytes(64)), too_large),
        "bomb-pfm-content.png": (pfm(20000, 20000, bytes(64)), bomb),
        "bomb-pfm-content.jpg": (pfm(8000, 8000, bytes(64)), too_large),
        "bomb-pgm-content.tif": (b"P5\n10000 10000\n255\n" + bytes(64), too_large),
    }
    for name, (content, expected) in files.items():
        corpus.file(name, content, expected)
    dicoms = {
        "bomb-15000x15000.dcm": dicom(15000, 15000, pixels=dicom().PixelData),
        "bomb-65535x65535.dcm": dicom(65535, 65535, pixels=dicom().PixelData),
        "bomb-2000x2000x20-frames.dcm": dicom(2000, 2000, pixels=dicom().PixelData, NumberOfFrames=20),
        "bomb-1000x1000x100-frames.dcm": dicom(1000, 1000, pixels=dicom().PixelData, NumberOfFrames=100),
        "bomb-rle-15000x15000.dcm": rle_dicom(15000, 15000, 4096),
        "bomb-rle-3000x3000x10-frames.dcm": rle_dicom(3000, 3000, 64, frames=10),
        "bomb-jpeg-20000x20000.dcm": jpeg_dicom(20000, 20000),
        "bomb-dicom-content.png": dicom(15000, 15000, pixels=dicom().PixelData),
    }
    for name, ds in dicoms.items():
        corpus.file(name, dicom_bytes(ds), Expected("too-large", "pixel limit"))
    corpus.file("bomb-no-preamble.dcm", dicom_bytes(dicom(15000, 15000, pixels=dicom().PixelData), preamble=False), Expected("too-large", "pixel limit"))


def _not_images(corpus: Corpus) -> None:
    """Content that is no image (nor DICOM) whatever its name says."""
    rng = np.random.default_rng(14)
    text = b"not a radiograph\n" * 20
    html = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>\n"
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    zeros = bytes(4096)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    contents = {"text": text, "html": html, "pdf": pdf, "zeros": zeros, "noise": noise}
    for label, content in contents.items():
        for extension in (".png", ".jpg", ".tif", ".dcm", ""):
            corpus.file(f"{label}-content{extension}", content, Expected("not-an-image"))


def _odd_dicoms(corpus: Corpus) -> None:
    """DICOM that is whole but holds no single radiograph we can use."""
    no_pixels = dicom()
    del no_pixels.PixelData
    report = dicom()
    del report.PixelData
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = SR_STORAGE
    report.Modality = "SR"
    meta_only = dicom_bytes(dicom())
    meta_end = 132 + sum(12 + e.length if e.VR in ("OB", "UN") else 8 + e.length for e in data_element_generator(io.BytesIO(meta_only[132:]), False, True) if e.tag.group == 2)
    palette = dicom(bits=8, photometric="PALETTE COLOR")
    corpus.file("no-pixel-data.dcm", dicom_bytes(no_pixels), Expected("no-pixels", "has no pixel data"))
    corpus.file("structured-report.dcm", dicom_bytes(report), Expected("no-pixels", "has no pixel data"))
    corpus.file("file-meta-only.dcm", meta_only[:meta_end], Expected("no-pixels", "no data elements"))
    corpus.file("multi-frame.dcm", dicom_bytes(dicom(24, 24, pixels=gradient(24, 48, np.uint16).tobytes(), NumberOfFrames=2)), Expected("unsupported", "multi-frame"))
    corpus.file("palette-colour.dcm", dicom_bytes(palette), Expected("unsupported", "PALETTE COLOR"))
    corpus.file("zero-rows-empty-pixels.dcm", dicom_bytes(dicom(0, 48, pixels=b"")), Expected("no-pixels", "pixel data element is empty"))
    corpus.file("empty-pixel-data.dcm", dicom_bytes(dicom(pixels=b"")), Expected("no-pixels", "pixel data element is empty"))
    corpus.file("corrupt-rle.dcm", dicom_bytes(dicom(48, 48, syntax=RLELossless, bits=8, pixels=encapsulate([b"\xff" * 64]))), Expected("corrupt"))
    corpus.file("corrupt-jpeg-frame.dcm", dicom_bytes(dicom(48, 48, syntax=JPEGBaseline8Bit, bits=8, pixels=encapsulate([b"\xff\xd8" + bytes(200)]))), Expected("corrupt"))


def _names(corpus: Corpus) -> None:
    """Valid images under names a CSV, a spreadsheet or a UTF-8 decoder can trip on."""
    png = encode(gradient(), ".png")
    names: list[str | bytes] = [
        b"caf\xe9.png",  # Latin-1
        b"\xff\xfe-bom.png",
        b"\xed\xa0\x80-surrogate.png",  # a UTF-8-encoded surrogate: invalid UTF-8
        b"cut-\xc3.png",  # a sequence cut short
        "日本語.png",
        "emoji-\U0001fac1.png",
        "spaces in name.png",
        "new\nline.png",
        "carriage\rreturn.png",
        'quote"comma,semicolon;.png',
        "back\\slash.png",
        "=HYPERLINK(\"evil.invalid\",\"open\").png",
        "=cmd|' -C calc'!A0.png",
        "+SUM(1,1).png",
        "-2+3.png",
        "@SUM(A1).png",
        "\ttab-first.png",
        "\rcr-first.png",
        "x" * 200 + ".png",
    ]
    for name in names:
        corpus.file(name, png)
    corpus.file("=formula-dicom.dcm", dicom_bytes(dicom()))


def _not_files(corpus: Corpus) -> None:
    """Entries that must be refused without being opened (a FIFO or a device never ends)."""
    target = corpus.folder / "gray8.png"
    corpus.make("dangling.png", lambda p: os.symlink(b"absent.png", p), Expected("missing", "dangling symbolic link"))
    corpus.make("dangling-no-extension", lambda p: os.symlink(b"/nonexistent/x", p), Expected("missing", "dangling symbolic link"))
    corpus.make("loop-a.png", lambda p: os.symlink(b"loop-b.png", p), Expected("unreadable", "symbolic link loop"))
    corpus.make("loop-b.png", lambda p: os.symlink(b"loop-a.png", p), Expected("unreadable", "symbolic link loop"))
    corpus.make("self-loop.dcm", lambda p: os.symlink(b"self-loop.dcm", p), Expected("unreadable", "symbolic link loop"))
    corpus.make("link-to-image.png", lambda p: os.symlink(os.fsencode(target), p), CLASSIFIED)
    corpus.make("fifo.png", os.mkfifo, Expected("not-a-file", "a FIFO"))
    corpus.make("fifo", os.mkfifo, Expected("not-a-file", "a FIFO"))
    corpus.make("link-to-fifo.dcm", lambda p: os.symlink(b"fifo", p), Expected("not-a-file", "a FIFO"))
    corpus.make("zero-device.png", lambda p: os.symlink(b"/dev/zero", p), Expected("not-a-file", "a character device"))
    corpus.make("null-device.dcm", lambda p: os.symlink(b"/dev/null", p), Expected("not-a-file", "a character device"))
    corpus.make("socket.png", _bind_socket, Expected("not-a-file", "a socket"))
    folder_skip = Expected("skipped", "folder not entered")
    corpus.make("folder.jpg", os.mkdir, folder_skip)
    corpus.make("folder.dcm", os.mkdir, folder_skip)
    corpus.make("folder", os.mkdir, folder_skip)
    corpus.make("link-to-folder.png", lambda p: os.symlink(os.fsencode(corpus.folder / "folder"), p), folder_skip)
    corpus.make("link-to-parent", lambda p: os.symlink(b"..", p), folder_skip)
    if os.geteuid() != 0:  # root reads it anyway
        corpus.file("no-permission.png", encode(gradient(), ".png"), Expected("unreadable", "Permission denied"))
        os.chmod(corpus.folder / "no-permission.png", 0)


def _bind_socket(path: bytes) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)


def _skipped(corpus: Corpus) -> None:
    """Entries a folder holds that are left out on purpose, each with its row and reason."""
    png = encode(gradient(), ".png")
    hidden = Expected("skipped", "hidden entry")
    for name in (".hidden.png", ".DS_Store", "._resource-fork.jpg", ".no-extension"):
        corpus.file(name, png, hidden)
    corpus.make(".git", os.mkdir, hidden)
    unsupported = {
        "anim.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        "notes.txt": b"ward 7",
        "report.pdf": b"%PDF-1.4\n%%EOF\n",
        "drawing.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "photo.heic": bytes(32),
        "scan.jp2": bytes(32),
        "volume.nii": bytes(32),
        "archive.zip": b"PK\x05\x06" + bytes(18),
        "Thumbs.db": bytes(32),
        "labels.csv": b"path,label\n",
        "radiance.hdr": radiance(8, 8, bytes(32)),
        "float.pfm": pfm(2, 2, bytes(16)),
        "image.exr": b"v/1\x01" + bytes(28),
        "png-named.gif": png,
        "backup.png.bak": png,
    }
    for name, content in unsupported.items():
        corpus.file(name, content, Expected("skipped", "unsupported file type"))
