"""The DICOM listener against a real Orthanc PACS: results arrive in the source study, skipped
objects are skipped, an outage and a restart lose nothing, and a concurrent load arrives whole."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from infer_support import DICOMS
from pacs_support import dcmtk_storescu, free_port, radiograph_dataset, send_datasets

from cxr_infer.dicom import read_dataset
from cxr_infer.pacs.forwarder import Destination
from cxr_infer.pacs.identity import ModelIdentity, result_uid
from cxr_infer.pacs.listener import Listener, ListenerConfig
from cxr_infer.pacs.worker import ModelSpec
from cxr_infer.pacs.secondary_capture import NOT_FOR_DIAGNOSTIC_USE

LISTENER_AET = "CXRTEST"
CXR_INFER = Path(sys.executable).with_name("cxr-infer")


@pytest.fixture
def model(pacs_classifier) -> ModelIdentity:
    return ModelIdentity.of(pacs_classifier)


def start_listener(model_path: Path, spool: Path, orthanc, **settings) -> Listener:
    config = ListenerConfig(
        aet=LISTENER_AET,
        port=0,
        host="127.0.0.1",
        spool=spool,
        forward=Destination("127.0.0.1", orthanc.dicom_port, orthanc.aet),
        retry_initial=0.2,
        retry_max=1.0,
        **settings,
    )
    listener = Listener(ModelSpec(str(model_path), "cpu", gate="warn"), config)  # the gate rejects the inverted fake MONOCHROME1
    listener.start()
    return listener


def results_of(orthanc, source_uid: str, model: ModelIdentity) -> dict[str, list[dict]]:
    """The SC and SR instances Orthanc holds for one source instance (found by their UIDs)."""
    return {
        role: orthanc.find_instances(SOPInstanceUID=result_uid(source_uid, model, role)) for role in ("sc", "sr")
    }


def storescu(port: int, aet: str, files: list[Path]) -> subprocess.CompletedProcess:
    """dcmtk's storescu, a second, independent DICOM sender (JPEG baseline proposed: the SIIM files are JPEG)."""
    return subprocess.run(
        [dcmtk_storescu(), "--propose-jpeg8", "-aec", aet, "-aet", "STORESCU", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_results_arrive_in_the_source_study(orthanc, tiny_model_path, model, tmp_path, external_jpegs):
    listener = start_listener(tiny_model_path, tmp_path / "spool", orthanc)
    try:
        for port, aet in ((listener.port, LISTENER_AET), (orthanc.dicom_port, orthanc.aet)):  # us, and the PACS's own copy
            sent = storescu(port, aet, DICOMS)
            assert sent.returncode == 0, sent.stderr
        made = [
            radiograph_dataset(external_jpegs[0], modality="CR", view="PA", max_side=384),
            radiograph_dataset(external_jpegs[1], modality="DX", view="AP", max_side=384),
        ]
        skipped = [
            radiograph_dataset(external_jpegs[2], modality="CR", view="LL", max_side=128),
            radiograph_dataset(external_jpegs[3], modality="CT", view="PA", max_side=128),
        ]
        assert send_datasets(made + skipped, listener.port, LISTENER_AET) == [0] * 4
        send_datasets(made, orthanc.dicom_port, orthanc.aet)
        assert listener.wait_idle(120)
    finally:
        listener.stop()
    sources = {ds.SOPInstanceUID: ds for ds in made + [read_dataset(path) for path in DICOMS]}
    assert len(sources) == 4  # the two SIIM files share one SOP Instance UID: one instance for DICOM
    for uid, source in sources.items():
        found = results_of(orthanc, uid, model)
        assert [len(found["sc"]), len(found["sr"])] == [1, 1], uid
        study = orthanc.find_instances(StudyInstanceUID=source.StudyInstanceUID)
        modalities = sorted(orthanc.get(f"/series/{item['ParentSeries']}")["MainDicomTags"]["Modality"] for item in study)
        assert modalities == sorted([source.Modality, "OT", "SR"])
        sc = pydicom.dcmread(_file(orthanc, found["sc"][0]))
        assert sc.BurnedInAnnotation == "YES" and NOT_FOR_DIAGNOSTIC_USE in sc.SeriesDescription
        assert sc.StudyInstanceUID == source.StudyInstanceUID
        sr = pydicom.dcmread(_file(orthanc, found["sr"][0]))
        referenced = {item.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence for r in s.ReferencedSeriesSequence for item in r.ReferencedSOPSequence}
        assert referenced == {uid, sc.SOPInstanceUID}
    for ds in skipped:
        assert results_of(orthanc, ds.SOPInstanceUID, model) == {"sc": [], "sr": []}
    assert orthanc.get("/statistics")["CountInstances"] == 4 + 2 * 4


def test_outage_and_restart_lose_nothing(orthanc, tiny_model_path, tmp_path, model, external_jpegs):
    """Results made while the PACS is down wait in the spool, survive a SIGTERM of the
    listener, and arrive once a restarted listener finds the PACS back."""
    orthanc.stop()
    spool, port = tmp_path / "spool", free_port()
    command = [
        str(CXR_INFER), "serve-dicom", "--aet", LISTENER_AET, "--port", str(port), "--host", "127.0.0.1",
        "--forward", f"127.0.0.1:{orthanc.dicom_port}:{orthanc.aet}", "--spool", str(spool),
        "--model", str(tiny_model_path), "--retry-max", "1",
    ]  # fmt: skip
    sources = [radiograph_dataset(path, max_side=256) for path in external_jpegs[:3]]
    first = _serve(command, tmp_path / "first.log")
    try:
        _wait_for(lambda: _accepts(port), 60, "the listener to accept associations")
        assert send_datasets(sources, port, LISTENER_AET) == [0, 0, 0]
        _wait_for(lambda: len(list((spool / "results").glob("*.dcm"))) == 6, 60, "six spooled results")
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 0, (tmp_path / "first.log").read_text()
    events = _events(tmp_path / "first.log")
    assert "forward_unreachable" in events and events[-1] == "stopped"
    second = _serve(command, tmp_path / "second.log")
    try:
        _wait_for(lambda: _accepts(port), 60, "the restarted listener")
        orthanc.start()
        _wait_for(lambda: orthanc.get("/statistics")["CountInstances"] == 6, 60, "the six results in Orthanc")
    finally:
        second.terminate()
        assert second.wait(timeout=30) == 0
    for source in sources:
        assert [len(found) for found in results_of(orthanc, source.SOPInstanceUID, model).values()] == [1, 1]
    assert list((spool / "results").glob("*.dcm")) == [] and list((spool / "incoming").glob("*.dcm")) == []


def test_load_of_concurrent_associations_loses_and_duplicates_nothing(orthanc, tiny_model_path, model, tmp_path, external_jpegs):
    associations, per_association = 20, 15
    images = [
        [radiograph_dataset(external_jpegs[(a * per_association + i) % len(external_jpegs)], max_side=96) for i in range(per_association)]
        for a in range(associations)
    ]
    listener = start_listener(tiny_model_path, tmp_path / "spool", orthanc, max_associations=associations + 2)
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(associations) as pool:
            statuses = list(pool.map(lambda batch: send_datasets(batch, listener.port, LISTENER_AET), images))
        received = time.perf_counter() - started
        assert listener.wait_idle(240)
        elapsed = time.perf_counter() - started
    finally:
        listener.stop()
    total = associations * per_association
    assert [status for batch in statuses for status in batch] == [0] * total
    expected = {result_uid(ds.SOPInstanceUID, model, role) for batch in images for ds in batch for role in ("sc", "sr")}
    stored = {instance["MainDicomTags"]["SOPInstanceUID"] for instance in orthanc.find_instances()}
    lost, extra = expected - stored, stored - expected
    failed = list((tmp_path / "spool" / "failed").iterdir())
    figures = {
        "associations": associations,
        "images": total,
        "received_s": round(received, 1),
        "elapsed_s": round(elapsed, 1),
        "images_per_s": round(total / elapsed, 2),
        "results_stored": len(stored),
        "lost": len(lost),
        "unexpected": len(extra),
        "failed": len(failed),
        "forwarded": listener.forwarder.stored,
    }
    print("PACS load test:", json.dumps(figures))
    assert (len(lost), len(extra), len(failed)) == (0, 0, 0)
    assert listener.forwarder.stored == 2 * total  # each result sent exactly once


def _file(orthanc, instance: dict):
    from io import BytesIO

    return BytesIO(orthanc.get(f"/instances/{instance['ID']}/file"))


def _serve(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def _accepts(port: int) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AET)
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().Status == 0
    assoc.release()
    return ok


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _events(log: Path) -> list[str]:
    return [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
