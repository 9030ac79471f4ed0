"""serve-dicom under faults and abuse: a worker dying on one input charges only that input, workers
die with the listener, a full or unwritable spool loses nothing, only allowed callers get in,
50 associations at once are queued rather than rejected, malformed UIDs are refused.

Everything runs on generated images; no data set and no PACS are needed.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pacs_support import encoded, send_datasets, synthetic_radiograph
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from cxr_infer.pacs import spool as spool_module
from cxr_infer.pacs.listener import STATUS_CANNOT_UNDERSTAND, Listener, ListenerConfig
from cxr_infer.pacs.spool import Spool, process_alive
from cxr_infer.pacs.worker import ModelSpec

AET = "CXRTEST"
CLI = [sys.executable, "-c", "from cxr_infer.cli import main; main()"]


def pacs_events(caplog, name: str) -> list[dict]:
    return [record.fields for record in caplog.records if record.name == "cxr_infer.pacs" and record.getMessage() == name]


def listener(tmp_path: Path, model: str = "unused.onnx", **config) -> Listener:
    return Listener(ModelSpec(model, "cpu", gate="off"), ListenerConfig(aet=AET, port=0, spool=tmp_path / "spool", **config))


def test_two_worker_deaths_set_aside_only_the_input_they_died_on(tiny_model_path, tmp_path):
    spool = Spool(tmp_path / "spool").open()
    poison, *queued = [synthetic_radiograph(side) for side in (1600, 64, 64, 64, 64)]  # the big one takes long
    paths = [spool.put_incoming(encoded(ds)) for ds in (poison, *queued)]
    server = listener(tmp_path, str(tiny_model_path), workers=1)
    server.start()  # resumes the five acknowledged inputs, the poison first
    try:
        for _ in range(2):  # kill the worker each time it is on the poison input
            marker = spool.inflight_dir / paths[0].name
            deadline = time.monotonic() + 120
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(int(marker.read_text()), signal.SIGKILL)
            time.sleep(0.5)
        assert server.wait_idle(240)
    finally:
        server.stop()
    assert sorted(p.name for p in spool.failed_dir.glob("*.dcm")) == [paths[0].name]
    assert "died 2 times" in (spool.failed_dir / paths[0].name).with_suffix(".txt").read_text()
    assert spool.incoming() == []
    referenced = {pydicom.dcmread(p).SourceImageSequence[0].ReferencedSOPInstanceUID for p in spool.results() if pydicom.dcmread(p).Modality == "OT"}
    assert referenced == {ds.SOPInstanceUID for ds in queued}  # every queued input classified, none blamed


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_workers_die_with_a_killed_listener(tiny_model_path, tmp_path):
    spool = Spool(tmp_path / "spool").open()
    spool.put_incoming(encoded(synthetic_radiograph(64)))  # resumed at start: the workers start at once
    command = [*CLI, "serve-dicom", "--aet", AET, "--port", "0", "--spool", str(spool.root), "--model", str(tiny_model_path)]
    process = subprocess.Popen([*command, "--gate", "off", "--workers", "2"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while spool.incoming() and time.monotonic() < deadline:  # classified: workers are up
            time.sleep(0.2)
        helpers = _descendants(process.pid)
        assert len(helpers) >= 2, "the worker processes did not start"
    finally:
        process.kill()  # kill -9: no clean-up code runs in the listener
        process.wait()
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in helpers if process_alive(pid)] == []


def test_a_full_disk_keeps_acknowledged_inputs_and_retries_them(tmp_path, monkeypatch, caplog):
    server = listener(tmp_path, retry_initial=0.05)
    spool = server.spool.open()
    path = spool.put_incoming(encoded(synthetic_radiograph(32)))
    resubmitted = []
    monkeypatch.setattr(server, "_submit", resubmitted.append)
    full = Future()
    full.set_exception(OSError(errno.ENOSPC, "No space left on device"))
    server._finish(path, None, full)  # the worker could not stage its results
    monkeypatch.setattr(spool, "fail", lambda *args: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    broken = Future()
    broken.set_exception(ValueError("undecodable"))
    server._finish(path, None, broken)  # cannot even be set aside: kept too
    time.sleep(0.5)
    assert resubmitted == [path, path] and spool.incoming() == [path] and list(spool.failed_dir.iterdir()) == []
    assert [event["retry_in_s"] for event in pacs_events(caplog, "retry_later")] == [0.05, 0.1]


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool").open()

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "fsync", no_space)
    with pytest.raises(OSError):
        spool.put_incoming(encoded(synthetic_radiograph(32)))
    with pytest.raises(OSError):
        spool.stage(synthetic_radiograph(32))
    assert [p.name for folder in (spool.incoming_dir, spool.results_dir) for p in folder.iterdir()] == []


def test_an_unusable_spool_is_one_json_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = subprocess.run([*CLI, "serve-dicom", "--aet", AET, "--port", "0", "--spool", str(tmp_path / "file" / "spool")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert '"event": "spool_unusable"' in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _associate(port: int, calling: str, called: str = AET, hold_s: float = 0.0) -> bool:
    scu = AE(ae_title=calling)
    scu.acse_timeout = scu.dimse_timeout = 300  # queued, and on a loaded two-core host each association costs pynetdicom seconds
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False
    try:
        ok = assoc.send_c_echo().Status == 0
        time.sleep(hold_s)
        return ok
    finally:
        assoc.release()


def test_only_allowed_callers_get_in_and_every_refusal_is_logged(tmp_path, caplog):
    server = listener(tmp_path, allow=("GOODSCU", "PINNED@192.0.2.1"))
    server.start()
    try:
        assert server.config.host == "127.0.0.1"  # the default binds loopback only
        assert _associate(server.port, "GOODSCU")
        assert not _associate(server.port, "STRANGER")
        assert not _associate(server.port, "PINNED")  # allowed, but only from 192.0.2.1
        assert not _associate(server.port, "GOODSCU", called="SOMEONE")
    finally:
        server.stop()
    reasons = [event["reason"] for event in pacs_events(caplog, "association_rejected")]
    assert len(reasons) == 3
    assert "'STRANGER' is not in the allow-list" in reasons[0] and "not allowed from host 127.0.0.1" in reasons[1]
    assert "called AE title 'SOMEONE'" in reasons[2]


def test_fifty_simultaneous_associations_are_queued_not_rejected(tmp_path, caplog):
    server = listener(tmp_path)  # the default limit, 32
    server.start()
    results: list[bool] = []
    try:
        threads = [threading.Thread(target=lambda i=i: results.append(_associate(server.port, f"SCU{i}", hold_s=1.0))) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        server.stop()
    assert results.count(True) == 50
    assert pacs_events(caplog, "association_rejected") == []


def test_malformed_sop_instance_uids_get_a_failure_status(tmp_path, caplog):
    server = listener(tmp_path)
    server.spool.open()
    for uid in ("1.2.840.../../etc", "1.2.3.", "", "1." * 40 + "1"):
        ds = synthetic_radiograph(32)
        ds.SOPInstanceUID = uid
        event = SimpleNamespace(dataset=ds, assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="SCU")))
        status = server._on_store(event)
        assert status.Status == STATUS_CANNOT_UNDERSTAND and "UID" in status.ErrorComment, uid
    assert server.spool.incoming() == []
    assert len(pacs_events(caplog, "refused")) == 4


def test_a_valid_input_is_still_stored(tmp_path, tiny_model_path):
    server = listener(tmp_path, str(tiny_model_path), workers=1)
    server.start()
    try:
        assert send_datasets([synthetic_radiograph(64)], server.port, AET) == [0]
        assert server.wait_idle(180)
    finally:
        server.stop()
    assert len(server.spool.results()) == 2
    sc = next(pydicom.dcmread(p) for p in server.spool.results() if pydicom.dcmread(p).Modality == "OT")
    assert "Laterality" in sc and sc.Laterality == ""  # Type 2C: present (the source has none)
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; .ci/run installs it where apt works)")
    for path in server.spool.results():  # the SC and the SR
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        assert [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")] == [], path.name


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("echoscu", path="/usr/bin:/usr/local/bin") is None, reason="needs openssl and dcmtk's echoscu")
def test_tls_with_dcmtk(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = listener(tmp_path, tls_cert=cert, tls_key=key)
    server.start()
    echoscu = shutil.which("echoscu", path="/usr/bin:/usr/local/bin")  # dcmtk's, not pynetdicom's app of that name
    try:
        over_tls = subprocess.run([echoscu, "+tla", "+cf", str(cert), "-aec", AET, "127.0.0.1", str(server.port)], capture_output=True, timeout=60)
        plain = subprocess.run([echoscu, "-aec", AET, "127.0.0.1", str(server.port)], capture_output=True, timeout=60)
    finally:
        server.stop()
    assert over_tls.returncode == 0, over_tls.stderr
    assert plain.returncode != 0
