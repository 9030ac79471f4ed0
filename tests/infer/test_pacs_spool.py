"""The listener's parts that need no network: selection, spool, destination parsing, JSON logs."""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest
from pacs_support import encoded, radiograph_dataset, synthetic_radiograph

from cxr_infer.pacs.forwarder import Destination
from cxr_infer.pacs.listener import rejection_reason
from cxr_infer.pacs.logs import JsonFormatter, LOGGER, log_event
from cxr_infer.pacs.spool import Spool, write_dataset


@pytest.mark.parametrize(
    ("modality", "view", "reason"),
    [
        ("CR", "PA", None),
        ("DX", "AP", None),
        ("CR", "LL", "view position LL is not frontal (PA/AP)"),
        ("DX", "", "view position missing is not frontal (PA/AP)"),
        ("CT", "PA", "modality CT is not CR/DX"),
    ],
)
def test_only_frontal_cr_and_dx_are_selected(external_jpegs, modality, view, reason):
    assert rejection_reason(radiograph_dataset(external_jpegs[0], modality=modality, view=view, max_side=64)) == reason


def test_spool_keeps_arrival_order_and_sweeps_partial_writes(tmp_path, external_jpegs):
    spool = Spool(tmp_path).open()
    sources = [radiograph_dataset(path, max_side=64) for path in external_jpegs[:3]]
    paths = [spool.put_incoming(encoded(ds)) for ds in sources]
    (spool.incoming_dir / "crashed.dcm.tmp").write_bytes(b"half a file")
    spool = Spool(tmp_path).open()  # a restart
    assert spool.incoming() == paths
    assert [pydicom.dcmread(path).SOPInstanceUID for path in spool.incoming()] == [ds.SOPInstanceUID for ds in sources]
    assert list(spool.incoming_dir.glob("*.tmp")) == []


def test_results_replace_the_input_and_a_newer_result_is_not_retired(tmp_path, external_jpegs):
    spool = Spool(tmp_path).open()
    source, result = (radiograph_dataset(path, max_side=64) for path in external_jpegs[:2])
    incoming = spool.put_incoming(encoded(source))
    (written,) = spool.put_results(incoming, [spool.stage(result)])
    assert spool.incoming() == [] and spool.results() == [written] and written.name == f"{result.SOPInstanceUID}.dcm"
    sent_version = written.stat().st_ino
    spool.put_results(spool.put_incoming(encoded(source)), [spool.stage(result)])  # made again while being sent
    assert spool.retire_result(written, sent_version) is False and spool.results() == [written]
    assert spool.retire_result(written, written.stat().st_ino) is True and spool.results() == []


def test_failed_input_is_kept_with_its_reason(tmp_path, external_jpegs):
    spool = Spool(tmp_path).open()
    incoming = spool.put_incoming(encoded(radiograph_dataset(external_jpegs[0], max_side=64)))
    moved = spool.fail(incoming, "DicomError: cannot decode the pixel data")
    assert spool.incoming() == [] and moved.exists()
    assert moved.with_suffix(".txt").read_text() == "DicomError: cannot decode the pixel data"


def test_destination_parsing():
    assert Destination.parse("pacs.example.org:104:ORTHANC") == Destination("pacs.example.org", 104, "ORTHANC")
    for bad in ("pacs:104", "pacs:port:AET", "pacs:70000:AET", ":104:AET", "pacs:104:" + "A" * 17):
        with pytest.raises(ValueError, match="forward destination"):
            Destination.parse(bad)


def test_logs_are_json_lines_with_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    LOGGER.addHandler(handler)
    try:
        log_event(logging.WARNING, "forward_unreachable", pending=3, retry_in_s=2.0)
    finally:
        LOGGER.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["event"] == "forward_unreachable" and entry["level"] == "warning"
    assert (entry["pending"], entry["retry_in_s"]) == (3, 2.0)


def test_two_writers_of_one_file_at_once_both_succeed(tmp_path):
    """Two inputs with one SOP Instance UID (a study exported twice) written by parallel decode
    threads (``cxr-infer --dicom-out``): they shared a temporary name, so one rename failed."""
    ds = synthetic_radiograph(256)
    target = tmp_path / f"SC_{ds.SOPInstanceUID}.dcm"
    with ThreadPoolExecutor(4) as pool:
        written = list(pool.map(lambda _: write_dataset(target, ds), range(40)))
    assert written == [target] * 40 and [p.name for p in tmp_path.iterdir()] == [target.name]
    assert pydicom.dcmread(target).SOPInstanceUID == ds.SOPInstanceUID
