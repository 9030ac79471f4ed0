"""Fixtures of the inference tests: a real Orthanc PACS, real radiographs, a loaded tiny classifier."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from infer_support import DATA
from pacs_support import ORTHANC_BINARY, Orthanc, dcmtk_storescu


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A running Orthanc; skipped, saying why, where the Debian packages orthanc and dcmtk are missing."""
    missing = [name for name, found in ((ORTHANC_BINARY, shutil.which(ORTHANC_BINARY)), ("dcmtk storescu", dcmtk_storescu())) if found is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian packages orthanc, dcmtk; .ci/run installs them where apt works)")
    server = Orthanc(tmp_path / "orthanc")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def external_jpegs() -> list[Path]:
    """Real radiographs of the external collection, all classes interleaved, in a fixed order."""
    folders = [sorted((DATA / "cxr3-external" / label).glob("*.jpg")) for label in ("covid", "pneumonia", "normal")]
    return [path for group in zip(*folders) for path in group]


@pytest.fixture(scope="session")
def pacs_classifier(tiny_model_path):
    """The tiny exported model, loaded once, with two threads (the tests share two cores)."""
    from cxr_infer.api import Classifier

    with Classifier.load(tiny_model_path, threads=2, gate="warn") as classifier:  # every DICOM gets results; test_gate.py tests rejection
        yield classifier
