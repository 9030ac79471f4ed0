"""Test support for the cxr_infer tests: where the real data is, and bad inputs made from it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from cxr_infer.dicom import read_dataset
from tests.data_root import DATA

ORIGINALS = sorted(DATA.glob("originals/*"))  # empty without the data: tests using it are marked data
DICOMS = sorted((DATA / "dicom").glob("*.dcm"))
CLASSES = ("covid", "pneumonia", "normal")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds one tiny IDAT: a decompression-bomb header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    """One file per kind of bad input the readers must turn into an error row (not a crash)."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = next(p for p in ORIGINALS if p.suffix == ".jpeg").read_bytes()
    no_pixels = read_dataset(DICOMS[1])
    del no_pixels.PixelData
    files = {
        "zero-byte": (folder / "empty.png", b""),
        "truncated": (folder / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "text": (folder / "text.png", b"this is not an image\n" * 20),
        "bomb": (folder / "bomb.png", png_header_only(12_000, 12_000)),
    }
    for path, content in files.values():
        path.write_bytes(content)
    no_pixels.save_as(folder / "no_pixels.dcm")
    return {**{kind: path for kind, (path, _) in files.items()}, "no-pixel-dicom": folder / "no_pixels.dcm"}


def labelled_subset(folder: Path, per_class: int) -> Path:
    """A labelled folder (class subfolders) of links to the first real external images of each class."""
    for label in CLASSES:
        (folder / label).mkdir(parents=True)
        for source in sorted((DATA / "cxr3-external" / label).glob("*.jpg"))[:per_class]:
            (folder / label / source.name).symlink_to(source.resolve())
    return folder
