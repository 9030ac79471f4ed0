"""Error kinds of result rows: short, stable names for why an input has no classification.

A row's ``error`` reads ``<kind>: <reason>`` (for example ``too-large: image of 15000x15000
pixels exceeds the 40,000,000-pixel limit (--max-pixels)``), so a person reads the reason and a
summary or a script counts by kind with :func:`error_kind`, the one place that parses it.
``skipped`` marks a folder entry left out on purpose (hidden, unsupported type, a subfolder
without ``--recursive``): it has its row but is not a failure (:func:`is_failure`).
"""

from __future__ import annotations

SKIPPED = "skipped"  # a folder entry left out on purpose; not a failure
MISSING = "missing"  # no such file, or a dangling symbolic link
NOT_A_FILE = "not-a-file"  # a FIFO, socket, device or folder where an image file was expected
UNREADABLE = "unreadable"  # permission denied, symbolic link loop, I/O error
UNSUPPORTED = "unsupported"  # a file type or image layout no reader handles
TOO_LARGE = "too-large"  # over the pixel limit, refused before decoding
TRUNCATED = "truncated"  # the file ends before the data it declares
NOT_AN_IMAGE = "not-an-image"  # the content is no image format (nor DICOM) it could be
CORRUPT = "corrupt"  # a recognised format whose data cannot be decoded
NO_PIXELS = "no-pixels"  # DICOM without pixel data
INVALID_INPUT = "invalid-input"  # API: not a path, image or dataset, or an array no image can be
PLUGIN = "plugin"  # a plugin's reader or post-processing raised
OUTPUT = "output"  # classified, but an output step (overlay, DICOM results) failed
INTERNAL = "internal"  # anything not foreseen: a bug to report

KINDS = (
    SKIPPED, MISSING, NOT_A_FILE, UNREADABLE, UNSUPPORTED, TOO_LARGE, TRUNCATED,
    NOT_AN_IMAGE, CORRUPT, NO_PIXELS, INVALID_INPUT, PLUGIN, OUTPUT, INTERNAL,
)  # fmt: skip


def error_text(kind: str, reason: str) -> str:
    """The ``error`` field of a row: ``<kind>: <reason>``."""
    return f"{kind}: {reason}"


def error_kind(error: str | None) -> str | None:
    """The kind of a row's ``error`` (the first one, when several were joined by ``; ``);
    ``None`` when there is no error, :data:`INTERNAL` for text of no known kind."""
    if not error:
        return None
    head = error.split(": ", 1)[0]
    return head if head in KINDS else INTERNAL


def is_failure(error: str | None) -> bool:
    """Whether a row's ``error`` counts as a failed input (exit code 1); skipped entries do not."""
    return error_kind(error) not in (None, SKIPPED)
