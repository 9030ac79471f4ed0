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
    """A registered decoder. ``reduces``: ``read`` also takes the keyword arguments ``min_side``
    and ``min_long_side`` (see :func:`read_image`) and may return a smaller image that keeps them."""

    name: str
    read: Callable[..., np.ndarray]
    extensions: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    reduces: bool = False
    plugin: str = field(default="", compare=False)


@dataclass(frozen=True)
class _Probe:
    """What Pillow tells from a raster file's header: format, channels, size, EXIF orientation."""

    format: str | None = None
    mode: str = ""
    size: tuple[int, int] = (0, 0)
    orientation: int = 1


def read_raster(path: Path, min_side: int = 0, min_long_side: int = 0) -> np.ndarray:
    """Decode PNG (8/16 bit), JPEG, BMP, TIFF or WebP keeping bit depth and channels.

    :func:`read_image` has checked the declared size against the pixel limit; here a file that
    ends early is named truncated before the decoder half-fills an image from it, and a phone
    photo of a film comes out upright (EXIF orientation). A JPEG larger than ``min_side`` (short
    side) and ``min_long_side`` (long side) need is decoded at 1/2, 1/4 or 1/8 of its size in the
    DCT domain (:func:`jpeg_reduction`): the decoder skips most of its work, not just the copy.
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ReadError("empty file (0 bytes)", errors.TRUNCATED)
    from cxr_infer.image_header import truncation

    cut = truncation(data.tobytes())
    if cut:
        raise ReadError(cut, errors.TRUNCATED)
    probe = _probe(data)
    image = cv2.imdecode(data, _decode_flags(probe, min_side, min_long_side))
    if image is None:
        raise ReadError("not a decodable image (corrupt data in a known image format)", errors.CORRUPT)
    return apply_exif_orientation(image, probe.orientation)


_REDUCED_FLAGS = {  # (factor, colour) -> OpenCV flag; JPEG only (libjpeg scales in the DCT domain)
    (2, False): cv2.IMREAD_REDUCED_GRAYSCALE_2, (2, True): cv2.IMREAD_REDUCED_COLOR_2,
    (4, False): cv2.IMREAD_REDUCED_GRAYSCALE_4, (4, True): cv2.IMREAD_REDUCED_COLOR_4,
    (8, False): cv2.IMREAD_REDUCED_GRAYSCALE_8, (8, True): cv2.IMREAD_REDUCED_COLOR_8,
}  # fmt: skip


def jpeg_reduction(width: int, height: int, min_side: int, min_long_side: int = 0) -> int:
    """The largest JPEG scale-down (1, 2, 4 or 8) whose result keeps ``min_side`` on the short
    side and ``min_long_side`` on the long side (libjpeg rounds scaled sizes up)."""
    short, long = sorted((width, height))
    if min_side <= 0 and min_long_side <= 0:
        return 1
    return next((f for f in (8, 4, 2) if -(-short // f) >= min_side and -(-long // f) >= min_long_side), 1)


def _decode_flags(probe: _Probe, min_side: int, min_long_side: int) -> int:
    """Full decode keeping bit depth and channels, or a reduced JPEG decode with the same channels
    (gray stays gray, colour stays BGR): the caller sees the same kind of image, only smaller."""
    factor = jpeg_reduction(*probe.size, min_side, min_long_side) if probe.format in ("JPEG", "MPO") else 1
    if factor == 1 or probe.mode not in ("L", "RGB"):
        return cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    return _REDUCED_FLAGS[factor, probe.mode != "L"] | cv2.IMREAD_IGNORE_ORIENTATION


def _probe(data: np.ndarray) -> _Probe:
    """Format, mode, size and EXIF orientation (1 = upright), from the header only.

    PNG is not asked for EXIF: Pillow would decode the whole image to look for an eXIf chunk
    after the pixels, and radiograph PNGs do not rotate by EXIF.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as probe:
                orientation = probe.getexif().get(EXIF_ORIENTATION, 1) if probe.format in EXIF_FORMATS else 1
                return _Probe(probe.format, probe.mode, probe.size, orientation if orientation in _ORIENT else 1)
    except Exception:
        return _Probe()  # not something Pillow reads (Radiance HDR, PFM): no EXIF, no reduction


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
    register("raster", read_raster, extensions=RASTER_EXTENSIONS, sniff=is_raster, reduces=True)


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


def read_image(
    path: str | Path,
    readers: dict[str, Reader] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    min_side: int = 0,
    min_long_side: int = 0,
) -> np.ndarray:
    """Decode one file with the reader that claims it; errors are :class:`ReadError` with a reason.

    The size the file's header declares is checked against ``max_pixels`` before any reader
    decodes it (:func:`cxr_infer.image_header.check_declared_size`). ``min_side`` and
    ``min_long_side`` say how small the image may come out (0: full size): a reader that can
    decode at a reduced size (``Reader.reduces``: the built-in one for JPEG) does so while
    keeping at least these sides, which saves time and memory on files far larger than needed.
    """
    from cxr_infer.image_header import check_declared_size

    path = Path(path)
    readers = readers if readers is not None else available_readers()
    reader: Reader | None = None
    try:
        reader = choose_reader(path, readers)
        check_declared_size(path, reader.name, max_pixels)
        if reader.reduces and (min_side > 0 or min_long_side > 0):
            return reader.read(path, min_side=min_side, min_long_side=min_long_side)
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
