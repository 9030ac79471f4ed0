"""What an image file declares before a pixel is decoded: its format, its size, whether it is whole.

The pixel limit is enforced on the declared size, so a decompression bomb (a few kilobytes
declaring 15000 x 15000 pixels) never reaches a decoder, whatever the format: the raster formats
Pillow can size from their header (PNG, JPEG, BMP, TIFF, WebP, PNM, ...), the ones only OpenCV
decodes (Radiance HDR, PFM: sized here), and DICOM (Rows x Columns x NumberOfFrames). A file
the raster reader would hand to OpenCV but whose size no header tells is refused, and so is
one of a format Pillow knows but OpenCV does not decode (ICO, TGA, ...): unsupported, not corrupt.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from cxr_infer import errors
from cxr_infer.readers import ReadError

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
DECODED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "DIB", "TIFF", "WEBP", "JPEG2000", "GIF", "PPM", "SUN", "Radiance HDR", "PFM")  # OpenCV decodes these
_HDR_SIZE = re.compile(rb"^[-+]([XY]) (\d+) [-+]([XY]) (\d+)$")
_HEADER_BYTES = 65536


@dataclass(frozen=True)
class DeclaredSize:
    """Width, height and frame count a header declares, and the format it was read from."""

    format: str
    width: int
    height: int
    frames: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height * max(self.frames, 1)

    def describe(self) -> str:
        frames = f" x {self.frames} frames" if self.frames > 1 else ""
        return f"{self.format} of {self.width}x{self.height}{frames} pixels"


def raster_format(head: bytes) -> str | None:
    """PNG, JPEG, BMP, TIFF or WebP by magic bytes, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def raster_size(path: Path) -> DeclaredSize | None:
    """The size a raster header declares (Pillow's header parsers, then Radiance HDR and PFM)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as probe:
                return DeclaredSize(probe.format or "image", *probe.size, getattr(probe, "n_frames", 1) if probe.format == "TIFF" else 1)
    except Image.DecompressionBombError as error:
        raise ReadError(f"decompression bomb refused: {error}", errors.TOO_LARGE) from None
    except Exception:
        pass
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    return _radiance_size(head) or _pfm_size(head)


def _radiance_size(head: bytes) -> DeclaredSize | None:
    """Radiance HDR: ``#?RADIANCE`` (or ``#?RGBE``), header lines, a blank line, ``-Y H +X W``."""
    if not head.startswith(b"#?"):
        return None
    lines = head.split(b"\n")
    try:
        blank = lines.index(b"")
        found = _HDR_SIZE.match(lines[blank + 1].strip())
    except (ValueError, IndexError):
        return None
    if found is None:
        return None
    sizes = {found.group(1): int(found.group(2)), found.group(3): int(found.group(4))}
    return DeclaredSize("Radiance HDR", sizes.get(b"X", 0), sizes.get(b"Y", 0))


def _pfm_size(head: bytes) -> DeclaredSize | None:
    """Portable float map: ``PF`` or ``Pf``, then ``width height``."""
    if head[:2] not in (b"PF", b"Pf"):
        return None
    fields = head[2:200].split()
    try:
        return DeclaredSize("PFM", int(fields[0]), int(fields[1]))
    except (ValueError, IndexError):
        return None


def truncation(data: bytes) -> str | None:
    """Why a PNG, JPEG, BMP, TIFF or WebP file is cut short (by its end marker, declared length
    or the offsets it holds), or None.

    Decoders fill a cut image with gray and only warn, or fail as if the data were corrupt; a
    cut file is named so instead, down to one cut inside the format's signature.
    """
    kind = raster_format(data[:16])
    if kind is None:
        return _cut_signature(data)
    if kind == "PNG" and data.rfind(b"IEND") == -1:
        return "PNG ends before its IEND chunk (file cut short)"
    if kind == "JPEG":
        scan = data.rfind(b"\xff\xda")
        if scan == -1:
            return "JPEG ends before its scan data (no start-of-scan marker; file cut short)"
        if data.rfind(b"\xff\xd9") < scan:
            return "JPEG ends inside its scan data, before the end-of-image marker (file cut short)"
    if kind == "BMP" and len(data) < 14:
        return f"BMP ends after {len(data)} bytes, inside its 14-byte file header (file cut short)"
    if kind == "BMP":
        (declared,) = struct.unpack("<I", data[2:6])
        if declared > len(data):
            return f"BMP declares {declared:,} bytes, the file has {len(data):,}"
    if kind == "WebP":
        (declared,) = struct.unpack("<I", data[4:8])
        if declared + 8 > len(data):
            return f"WebP declares {declared + 8:,} bytes, the file has {len(data):,}"
    if kind == "TIFF":
        return _tiff_truncation(data)
    return None


def _cut_signature(data: bytes) -> str | None:
    """A file of a few bytes that are the start of an image format's signature."""
    for magic, name in (*_MAGIC, (b"RIFF", "WebP")):
        if 0 < len(data) < len(magic) and magic.startswith(data):
            return f"the file ends after {len(data)} bytes, inside the {name} signature (cut short)"
    if data.startswith(b"RIFF") and len(data) < 12 and b"WEBP".startswith(data[8:]):
        return f"the file ends after {len(data)} bytes, inside the WebP header (cut short)"
    return None


_TIFF_DATA_TAGS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, TileByteCounts)
_TIFF_VALUE_FORMATS = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8


def _tiff_truncation(data: bytes) -> str | None:
    """Whether the first image directory (IFD) of a TIFF, or the strips or tiles it points to,
    lie past the end of the file."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return f"TIFF ends after {len(data)} bytes, inside its 8-byte header (file cut short)"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd + 2 > len(data):
        return f"TIFF's image directory at byte {ifd:,} lies past the end ({len(data):,} bytes; file cut short)"
    (count,) = struct.unpack_from(order + "H", data, ifd)
    if ifd + 2 + 12 * count + 4 > len(data):
        return f"TIFF ends inside its image directory at byte {ifd:,} (file cut short)"
    tags = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind, number = struct.unpack_from(order + "HHI", data, entry)
        tags[tag] = _tiff_values(data, order, kind, number, entry + 8)
    for offsets_tag, counts_tag in _TIFF_DATA_TAGS:
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets and counts:
            end = max(offset + size for offset, size in zip(offsets, counts))
            if end > len(data):
                return f"TIFF image data runs to byte {end:,}, the file ends at {len(data):,} (file cut short)"
    return None


def _tiff_values(data: bytes, order: str, kind: int, number: int, field: int) -> list[int] | None:
    """The integer values of one IFD entry (inline or at the offset it holds); None if not integers or not in the file."""
    code = _TIFF_VALUE_FORMATS.get(kind)
    if code is None or number == 0:
        return None
    size = struct.calcsize(code) * number
    if size > 4:
        (field,) = struct.unpack_from(order + "I", data, field)
    if field + size > len(data):
        return None
    return list(struct.unpack_from(f"{order}{number}{code}", data, field))


def check_declared_size(path: Path, reader: str, max_pixels: int) -> None:
    """Refuse a file whose header declares more than ``max_pixels`` (frames included).

    The raster reader's input must be sizable (else it is no image we decode); a plugin reader's
    format may be unknown here, and then bounding its decoding is the plugin's task.
    """
    if reader == "dicom":
        from cxr_infer.dicom import declared_size

        size = declared_size(path)
    else:
        size = raster_size(path)
        if size is None and reader == "raster":
            data = path.read_bytes()
            cut = truncation(data) if data else "empty file (0 bytes)"
            if cut:
                raise ReadError(cut, errors.TRUNCATED)
            known = raster_format(data[:16])
            if known:  # whole, with a valid signature, but sized by no parser: refused unsized, and named
                raise ReadError(f"{known} in a layout whose image size cannot be read from its header (such as 64-bit float samples)", errors.UNSUPPORTED)
            raise ReadError("not a recognised image (no PNG, JPEG, BMP, TIFF, WebP or other known image header)", errors.NOT_AN_IMAGE)
        if size is not None and reader == "raster" and size.format not in DECODED_FORMATS:
            raise ReadError(f"{size.format} images are not read (a known format, but not one of PNG, JPEG, BMP, TIFF, WebP, JPEG 2000, PNM)", errors.UNSUPPORTED)
    if size is not None and size.pixels > max_pixels:
        raise ReadError(f"{size.describe()} exceeds the {max_pixels:,}-pixel limit (--max-pixels)", errors.TOO_LARGE)
