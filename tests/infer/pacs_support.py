"""Test support for the PACS tests: a real Orthanc server, DICOMs made from real radiographs,
and a DICOM sender (pynetdicom SCU)."""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts


@functools.cache
def dcmtk_storescu() -> str | None:
    """dcmtk's ``storescu`` on PATH, skipping pynetdicom's same-named app (first in an activated venv)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "storescu"
        if not os.access(candidate, os.X_OK):
            continue
        version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=10)
        if "dcmtk" in version.stdout + version.stderr:
            return str(candidate)
    return None

ORTHANC_BINARY = "Orthanc"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Orthanc:
    """One Orthanc server in its own folder, on free loopback ports, with a fresh database.

    ``stop()`` and ``start()`` again keep ports and data (to simulate a PACS outage).
    """

    aet = "ORTHANC"

    def __init__(self, root: Path):
        self.root = root
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = root / "orthanc.json"
        self.log = root / "orthanc.log"
        self._process: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(self._settings()), encoding="utf-8")

    def _settings(self) -> dict:
        storage = str(self.root / "db")
        return {
            "Name": "cxr-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": False,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "OverwriteInstances": True,
            "Plugins": [],
            "StableAge": 1,
        }

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen([ORTHANC_BINARY, str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self._process.returncode}; see {self.log}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer within {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)
        self._process = None

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=json.dumps(payload).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def find_instances(self, **query: str) -> list[dict]:
        """Instances matching DICOM tag values (Orthanc /tools/find), with their main tags."""
        return self.post("/tools/find", {"Level": "Instance", "Query": query, "Expand": True})


def radiograph_dataset(
    jpeg: Path,
    *,
    modality: str = "CR",
    view: str = "PA",
    study_uid: str | None = None,
    max_side: int | None = None,
) -> Dataset:
    """Wrap a real radiograph JPEG as an uncompressed 8-bit MONOCHROME2 DICOM instance."""
    gray = cv2.imread(str(jpeg), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"{jpeg}: not a readable image")
    if max_side and max(gray.shape) > max_side:
        scale = max_side / max(gray.shape)
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return dataset_from_pixels(gray, modality=modality, view=view, study_uid=study_uid, patient_id=jpeg.stem[:64])


def synthetic_radiograph(side: int = 96, **keywords) -> Dataset:
    """A CR instance of a generated ``side`` x ``side`` gradient (no data set needed)."""
    gray = (np.add.outer(np.arange(side), np.arange(side)) * 255 // max(2 * side - 2, 1)).astype(np.uint8)
    return dataset_from_pixels(gray, **keywords)


def dataset_from_pixels(gray: np.ndarray, *, modality: str = "CR", view: str = "PA", study_uid: str | None = None, patient_id: str = "synthetic") -> Dataset:
    """An uncompressed 8-bit MONOCHROME2 DICOM instance of the ``gray`` image."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = "Test^Radiograph"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "A1", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = modality, view, "CHEST"
    ds.PatientOrientation = ""
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = gray.tobytes()
    return ds


def send_datasets(datasets: Sequence[Dataset], port: int, aet: str) -> list[int]:
    """C-STORE ``datasets`` over one association (pynetdicom SCU); returns the status codes."""
    sender = AE(ae_title="TESTSCU")
    sender.requested_contexts = StoragePresentationContexts
    # pynetdicom's default 30 s wait for a C-STORE response was exceeded once in a full `pytest -n 2`
    # (20 associations beside the torchrun and Ray tests on 2 cores): these tests count losses and
    # duplicates, not latency, so a loaded CI host gets more time before the sender gives up.
    sender.dimse_timeout = 120
    assoc = sender.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        raise ConnectionError(f"no association with {aet} on port {port}")
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def encoded(ds: Dataset) -> bytes:
    """``ds`` as Part-10 bytes, as a DICOM peer or a file would hold it."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
