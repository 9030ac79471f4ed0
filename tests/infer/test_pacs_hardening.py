"""serve-dicom under faults and abuse: a worker dying on one input charges only that input, workers
die with the listener, a full or unwritable spool loses nothing, only allowed callers get in,
50 associations at once (50 dcmtk storescu processes) are queued rather than rejected and each
input is classified once, malformed UIDs are refused, TLS takes only callers with a certificate
of the configured CA (dcmtk storescu +tls) and logs every refusal, and a caller that never
finishes its TLS handshake holds up no one.

Everything runs on generated images; no data set and no PACS are needed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pacs_support import dcmtk_storescu, encoded, free_port, send_datasets, synthetic_radiograph
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from cxr_infer.pacs import spool as spool_module
from cxr_infer.pacs.admission import TLS_HANDSHAKE_TIMEOUT_S
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


def _storescu_or_skip() -> str:
    storescu = dcmtk_storescu()
    if storescu is None:
        pytest.skip("dcmtk storescu not installed (Debian package dcmtk; .ci/run installs it where apt works)")
    return storescu


def test_fifty_dcmtk_storescu_at_once_are_all_stored_and_classified_once(tmp_path, tiny_model_path, caplog):
    storescu = _storescu_or_skip()
    caplog.set_level(logging.INFO, logger="cxr_infer.pacs")
    (tmp_path / "send").mkdir()
    uids = []
    for number in range(50):
        ds = synthetic_radiograph(64)
        ds.save_as(tmp_path / "send" / f"{number}.dcm", enforce_file_format=True)
        uids.append(ds.SOPInstanceUID)
    server = listener(tmp_path, str(tiny_model_path), workers=1)  # the default limit, 32: 18 callers wait their turn
    server.start()
    try:
        started = time.monotonic()
        senders = [
            subprocess.Popen(
                [storescu, "-aet", f"SCU{number}", "-aec", AET, "-to", "300", "-ta", "300", "-td", "300", "127.0.0.1", str(server.port), str(tmp_path / "send" / f"{number}.dcm")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            for number in range(50)
        ]
        outputs = [sender.communicate(timeout=600)[0] for sender in senders]
        sent_s = time.monotonic() - started
        assert server.wait_idle(300)
    finally:
        server.stop()
    print(f"50 storescu associations: all sent in {sent_s:.1f} s, classified in {time.monotonic() - started:.1f} s")
    assert [sender.returncode for sender in senders] == [0] * 50, [out for out in outputs if out][:3]
    assert pacs_events(caplog, "association_rejected") == []
    assert sorted(event["sop_instance_uid"] for event in pacs_events(caplog, "received")) == sorted(uids)
    assert sorted(event["sop_instance_uid"] for event in pacs_events(caplog, "classified")) == sorted(uids)  # each once
    assert len(server.spool.results()) == 100 and server.spool.incoming() == [] and list(server.spool.failed_dir.iterdir()) == []


@dataclass(frozen=True)
class _Pki:
    """A test CA, a server and a client certificate it signed, and a self-signed client one."""

    ca: Path
    server: tuple[Path, Path]  # (key, certificate)
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]


def _make_pki(folder: Path) -> _Pki:
    folder.mkdir()

    def openssl(*arguments) -> None:
        subprocess.run(["openssl", *map(str, arguments)], check=True, capture_output=True, timeout=60, cwd=folder)

    def signed(name: str, subject: str) -> tuple[Path, Path]:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-out", f"{name}.pem")
        return folder / f"{name}.key", folder / f"{name}.pem"

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=cxr test CA")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger.key", "-out", "stranger.pem", "-days", "1", "-subj", "/CN=stranger")
    return _Pki(folder / "ca.pem", signed("server", "/CN=localhost"), signed("client", "/CN=GOODSCU"), (folder / "stranger.key", folder / "stranger.pem"))


def test_tls_with_client_certificates_through_dcmtk_storescu(tmp_path, tiny_model_path):
    """``serve-dicom --tls-cert --tls-key --tls-ca`` takes dcmtk storescu with a certificate of
    that CA at once, even while another caller sits connected without a handshake and
    --max-associations is 1 (a pending handshake holds no association slot); it refuses one
    without a certificate, one with a self-signed certificate and plain DICOM, and logs why."""
    storescu = _storescu_or_skip()
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make the test certificates")
    pki = _make_pki(tmp_path / "pki")
    lateral = synthetic_radiograph(32, view="LL")  # acknowledged and ignored: no classification needed
    lateral.save_as(tmp_path / "lateral.dcm", enforce_file_format=True)
    port, log = free_port(), tmp_path / "serve.log"
    tls = ["--tls-cert", pki.server[1], "--tls-key", pki.server[0], "--tls-ca", pki.ca]
    with open(log, "wb") as handle:
        server = subprocess.Popen([*CLI, "serve-dicom", "--aet", AET, "--port", str(port), "--spool", str(tmp_path / "spool"), "--model", str(tiny_model_path), "--gate", "off", "--max-associations", "1", *map(str, tls)], stderr=handle)

    def send(*options: str | Path) -> subprocess.CompletedProcess:
        command = [storescu, *map(str, options), "-aec", AET, "-to", "60", "-ta", "60", "127.0.0.1", str(port), str(tmp_path / "lateral.dcm")]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    try:
        deadline = time.monotonic() + 120
        while "listening" not in _events(log) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "listening" in _events(log), log.read_text()
        idle = socket.create_connection(("127.0.0.1", port))  # connects, never says hello
        started = time.monotonic()
        accepted = send("+tls", *pki.client, "+cf", pki.ca)
        waited = time.monotonic() - started
        idle.close()
        without_certificate = send("+tla", "+cf", pki.ca)
        untrusted = send("+tls", *pki.stranger, "+cf", pki.ca)
        plain = send()
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0, log.read_text()
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert waited < TLS_HANDSHAKE_TIMEOUT_S - 5, f"the certified caller waited {waited:.1f} s behind the idle one"
    events = _events(log)
    assert [event["reason"] for event in events.get("ignored", [])] == ["view position LL is not frontal (PA/AP)"]
    assert without_certificate.returncode != 0 and untrusted.returncode != 0 and plain.returncode != 0
    reasons = [event["reason"] for event in events["association_rejected"]]
    assert len(reasons) == 4 and all(reason.startswith("TLS handshake failed") for reason in reasons), reasons
    said = " | ".join(reasons).replace("self signed", "self-signed")
    for why in ("closed the connection", "no client certificate", "self-signed certificate", "did not speak TLS"):  # the idle caller once it gave up, then the three refused
        assert why in said, reasons


def _events(log: Path) -> dict[str, list[dict]]:
    """The listener's JSON log lines by event name."""
    events: dict[str, list[dict]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            events.setdefault(event["event"], []).append(event)
    return events
