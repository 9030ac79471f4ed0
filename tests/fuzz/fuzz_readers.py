"""libFuzzer harness (atheris) for the input path every file takes: ``read_image`` then ``preprocess``.

A bad file must end as a :class:`~cxr_infer.readers.ReadError` or ``ValueError`` (its row's
error); any other exception, a crash of a native decoder, a hang or memory beyond the RSS limit
is a finding. ``test_fuzz_readers.py`` runs it briefly in the test suite (atheris is a dev
dependency); the long run is::

    mkdir -p /tmp/fuzz-corpus && cp exported/samples/*.jpg ../shared/data/dicom/*.dcm /tmp/fuzz-corpus/
    python tests/fuzz/fuzz_readers.py /tmp/fuzz-corpus -rss_limit_mb=1500 -timeout=20 -runs=1000000

Inputs are written to a temporary file because readers take paths; the first byte picks the
file name's extension, so extension-led and content-led reader choice are both exercised.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["cxr_infer"]):  # our code; numpy, OpenCV, pydicom stay uninstrumented
    import cxr_infer.dicom  # noqa: F401 (imported inside the readers' functions: instrumented only if imported here)
    import cxr_infer.image_header  # noqa: F401
    from cxr_infer.preprocess import PreprocessSpec, preprocess
    from cxr_infer.readers import ReadError, available_readers, quiet_decoder_warnings, read_image

EXTENSIONS = ("", ".png", ".jpg", ".dcm", ".tif", ".webp", ".bmp", ".hdr")
READERS = available_readers()
SPEC = PreprocessSpec(size=64)
FOLDER = tempfile.mkdtemp(prefix="cxr-fuzz-")


def one_input(data: bytes) -> None:
    if not data:
        return
    path = os.path.join(FOLDER, "input" + EXTENSIONS[data[0] % len(EXTENSIONS)])
    with open(path, "wb") as handle:
        handle.write(data[1:])
    try:
        with quiet_decoder_warnings():  # per input: around the whole run it would hide libFuzzer's own stderr
            preprocess(read_image(path, READERS), SPEC)
    except (ReadError, ValueError):
        pass  # the documented outcome for a bad file: an error row with its reason
    finally:
        os.unlink(path)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
