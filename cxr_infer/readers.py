"""Input readers: decode a file into a numpy image. Built-ins register through ``register_readers``.

Training and inference both decode through :func:`read_image`, so a file reads the same way
in both.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cxr_infer import errors
from cxr_infer.hookspecs import hookimpl

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".webp")
DICOM_EXTENSIONS = (".dcm", ".dicom")
DEFAULT_MAX_PIXELS = 40_000_000  # the largest detectors are about 4300 x 3500 (15 MP); far more is a bomb
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
    """A file could not be decoded; the message says why (the caller adds the path) and
    ``kind`` says what went wrong in one word (see :mod:`cxr_infer.errors`)."""

    def __init__(self, message: str, kind: str = errors.CORRUPT):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # keep the kind across processes (the DICOM listener's workers)
        return type(self), (str(self), self.kind)


@dataclass(frozen=True)
class Reader:
    name: str
    read: Callable[[Path], np.ndarray]
    extensions: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    plugin: str = field(default="", compare=False)


def read_raster(path: Path) -> np.ndarray:
    """Decode PNG (8/16 bit), JPEG, BMP, TIFF or WebP keeping bit depth and channels.

    :func:`read_image` has checked the declared size against the pixel limit; here a file that
    ends early is named truncated before the decoder half-fills an image from it, and a phone
    photo of a film comes out upright (EXIF orientation).
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ReadError("empty file (0 bytes)", errors.TRUNCATED)
    from cxr_infer.image_header import truncation

    cut = truncation(data.tobytes())
    if cut:
        raise ReadError(cut, errors.TRUNCATED)
    orientation = _exif_orientation(data)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ReadError("not a decodable image (corrupt data in a known image format)", errors.CORRUPT)
    return apply_exif_orientation(image, orientation)


def _exif_orientation(data: np.ndarray) -> int:
    """The EXIF orientation (1 = upright), from the header only.

    PNG is not asked for EXIF: Pillow would decode the whole image to look for an eXIf chunk
    after the pixels, and radiograph PNGs do not rotate by EXIF.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as probe:
                orientation = probe.getexif().get(EXIF_ORIENTATION, 1) if probe.format in EXIF_FORMATS else 1
    except Exception:
        return 1  # not something Pillow reads (Radiance HDR, PFM): no EXIF
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


def is_raster(head: bytes) -> bool:
    """The magic bytes of PNG, JPEG, BMP, TIFF and WebP: content wins over a misleading extension."""
    from cxr_infer.image_header import raster_format

    return raster_format(head) is not None


@hookimpl
def register_readers(register):
    register("dicom", read_dicom, extensions=DICOM_EXTENSIONS, sniff=is_dicom)
    register("raster", read_raster, extensions=RASTER_EXTENSIONS, sniff=is_raster)


def available_readers() -> dict[str, Reader]:
    from cxr_infer.plugins import build_registry, collect, get_plugin_manager

    return build_registry(collect(get_plugin_manager(), "register_readers"), "register_readers", Reader)


def choose_reader(path: Path, readers: dict[str, Reader]) -> Reader:
    """Content sniffing wins over the extension, so a DICOM named ``.png`` still reads.

    Only a regular file is opened: a FIFO or a device would block or never end.
    """
    require_regular_file(path)
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
    raise ReadError(f"unsupported file type {suffix!r}", errors.UNSUPPORTED)


_FILE_TYPES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def require_regular_file(path: Path) -> None:
    """Refuse, without opening it, anything but a regular file (after following links)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise ReadError(f"dangling symbolic link (to {os.readlink(path)!r})", errors.MISSING) from None
        raise ReadError("file not found", errors.MISSING) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ReadError("symbolic link loop", errors.UNREADABLE) from None
        raise ReadError(f"cannot read ({error.strerror or error})", errors.UNREADABLE) from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")
        raise ReadError(f"not a regular file ({kind})", errors.NOT_A_FILE)


def read_image(path: str | Path, readers: dict[str, Reader] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one file with the reader that claims it; errors are :class:`ReadError` with a reason.

    The size the file's header declares is checked against ``max_pixels`` before any reader
    decodes it (:func:`cxr_infer.image_header.check_declared_size`).
    """
    from cxr_infer.image_header import check_declared_size

    path = Path(path)
    readers = readers if readers is not None else available_readers()
    reader: Reader | None = None
    try:
        reader = choose_reader(path, readers)
        check_declared_size(path, reader.name, max_pixels)
        return reader.read(path)
    except ReadError:
        raise
    except FileNotFoundError:
        raise ReadError("file not found", errors.MISSING) from None
    except OSError as error:
        raise ReadError(f"cannot read ({error.strerror or error})", errors.UNREADABLE) from error
    except MemoryError:
        raise ReadError("not enough memory to decode it", errors.TOO_LARGE) from None
    except Exception as error:
        kind = errors.CORRUPT if _origin(reader) == "" else errors.PLUGIN
        raise ReadError(f"{type(error).__name__}: {error}{_origin(reader)}", kind) from error


@contextlib.contextmanager
def quiet_decoder_warnings() -> Iterator[None]:
    """Keep pydicom's and the C decoders' (libjpeg, libpng, ...) warnings off stderr (``--quiet``).

    Each input's row already says what was wrong with it, and the raw warnings can carry garbage
    bytes from the file. The C libraries write to file descriptor 2 themselves, so it is pointed
    at the null device meanwhile (process-wide: nothing else writes to stderr in a quiet run).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        warnings.filterwarnings("ignore", category=UserWarning)
        pydicom_logger = logging.getLogger("pydicom")
        level, pydicom_logger.level = pydicom_logger.level, logging.CRITICAL
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            pydicom_logger.setLevel(level)


def _claims(reader: Reader, head: bytes) -> bool:
    """Ask a reader's ``sniff`` about a file; one that raises is named, like a failing ``read``."""
    try:
        return bool(reader.sniff(head))
    except Exception as error:
        raise ReadError(f"{type(error).__name__} while sniffing: {error}{_origin(reader)}", errors.PLUGIN) from error


def _origin(reader: Reader | None) -> str:
    """Name a third-party reader in its errors: the user must know which plugin failed on the file."""
    if reader is None or reader.plugin == __name__:
        return ""
    return f" (reader {reader.name!r} of plugin {reader.plugin!r})"
