"""Input readers: decode a file into a numpy image. Built-ins register through ``register_readers``.

Training and inference both decode through :func:`read_image`, so a file reads the same way
in both.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cxr_infer.hookspecs import hookimpl

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".webp")
DICOM_EXTENSIONS = (".dcm", ".dicom")
MAX_PIXELS = 100_000_000  # 10k x 10k; larger is a decompression bomb, not a radiograph
EXIF_ORIENTATION = 0x0112
EXIF_FORMATS = ("JPEG", "MPO", "WEBP", "TIFF")
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: a.swapaxes(0, 1)[::-1],
}


class ReadError(ValueError):
    """A file could not be decoded; the message says why (the caller adds the path)."""


@dataclass(frozen=True)
class Reader:
    name: str
    read: Callable[[Path], np.ndarray]
    extensions: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    plugin: str = field(default="", compare=False)


def read_raster(path: Path) -> np.ndarray:
    """Decode PNG (8/16 bit), JPEG, BMP, TIFF or WebP keeping bit depth and channels.

    The header is checked first (size limit, EXIF orientation) so a decompression bomb is
    refused before a pixel is decoded, and a phone photo of a film comes out upright.
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ReadError("empty file (0 bytes)")
    orientation = _probe_header(data)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ReadError("not a decodable image (corrupt, truncated or not an image format)")
    return apply_exif_orientation(image, orientation)


def _probe_header(data: np.ndarray) -> int:
    """Return the EXIF orientation (1 = upright); refuse images over :data:`MAX_PIXELS`.

    Only the header is parsed. PNG is not asked for EXIF: Pillow would decode the whole image
    to look for an eXIf chunk after the pixels, and radiograph PNGs do not rotate by EXIF.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as probe:
                width, height = probe.size
                if width * height > MAX_PIXELS:
                    raise ReadError(f"image of {width}x{height} pixels exceeds the {MAX_PIXELS:,}-pixel limit")
                orientation = probe.getexif().get(EXIF_ORIENTATION, 1) if probe.format in EXIF_FORMATS else 1
    except ReadError:
        raise
    except Image.DecompressionBombError as error:
        raise ReadError(f"decompression bomb refused: {error}") from None
    except Exception:
        return 1  # not something Pillow can size; the decoder gives its own error
    return orientation if orientation in _ORIENT else 1


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded image upright according to its EXIF orientation tag (values 1-8)."""
    return np.ascontiguousarray(_ORIENT[orientation](image))


def is_dicom(head: bytes) -> bool:
    """Part-10 files carry 'DICM' at offset 128."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_dicom(path: Path) -> np.ndarray:
    """Decode a DICOM radiograph into display orientation: modality/VOI LUT applied, MONOCHROME1 inverted."""
    from cxr_infer.dicom import dataset_to_image, read_dataset

    return dataset_to_image(read_dataset(path))


@hookimpl
def register_readers(register):
    register("dicom", read_dicom, extensions=DICOM_EXTENSIONS, sniff=is_dicom)
    register("raster", read_raster, extensions=RASTER_EXTENSIONS)


def available_readers() -> dict[str, Reader]:
    from cxr_infer.plugins import build_registry, collect, get_plugin_manager

    return build_registry(collect(get_plugin_manager(), "register_readers"), "register_readers", Reader)


def choose_reader(path: Path, readers: dict[str, Reader]) -> Reader:
    """Content sniffing wins over the extension, so a DICOM named ``.png`` still reads."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    for reader in readers.values():
        if reader.sniff is not None and _claims(reader, head):
            return reader
    suffix = path.suffix.lower()
    for reader in readers.values():
        if suffix in reader.extensions:
            return reader
    if suffix == "":
        return readers["dicom"]  # DICOM without a Part-10 header often has no extension
    raise ReadError(f"unsupported file type {suffix!r}")


def read_image(path: str | Path, readers: dict[str, Reader] | None = None) -> np.ndarray:
    """Decode one file with the reader that claims it; errors are :class:`ReadError` with a reason."""
    path = Path(path)
    readers = readers if readers is not None else available_readers()
    reader: Reader | None = None
    try:
        reader = choose_reader(path, readers)
        return reader.read(path)
    except ReadError:
        raise
    except FileNotFoundError:
        raise ReadError("file not found") from None
    except Exception as error:
        raise ReadError(f"{type(error).__name__}: {error}{_origin(reader)}") from error


def _claims(reader: Reader, head: bytes) -> bool:
    """Ask a reader's ``sniff`` about a file; one that raises is named, like a failing ``read``."""
    try:
        return bool(reader.sniff(head))
    except Exception as error:
        raise ReadError(f"{type(error).__name__} while sniffing: {error}{_origin(reader)}") from error


def _origin(reader: Reader | None) -> str:
    """Name a third-party reader in its errors: the user must know which plugin failed on the file."""
    if reader is None or reader.plugin == __name__:
        return ""
    return f" (reader {reader.name!r} of plugin {reader.plugin!r})"
