"""Forward spooled results to a DICOM destination by C-STORE, retrying with back-off.

One thread drains ``results/`` over one association at a time. A file leaves the spool only
after the destination answered success (or a warning, which DICOM counts as stored), so an
unreachable or crashing PACS delays results but never loses them; the delay between attempts
doubles up to a ceiling and resets after a round that stored everything.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Comprehensive3DSRStorage, SecondaryCaptureImageStorage
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cxr_infer.pacs.logs import log_event
from cxr_infer.pacs.spool import Spool

RESULT_SOP_CLASSES = (SecondaryCaptureImageStorage, Comprehensive3DSRStorage)
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Destination:
    """A DICOM peer: host, port and AE title."""

    host: str
    port: int
    aet: str

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """Parse ``HOST:PORT:AET``; the error says what is wrong with the text."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not 0 < int(parts[1]) < 65536 or not parts[2]:
            raise ValueError(f"forward destination {text!r} is not HOST:PORT:AET")
        if len(parts[2]) > 16:
            raise ValueError(f"forward destination {text!r}: AE title longer than 16 characters")
        return cls(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.aet}"


class ForwardError(ConnectionError):
    """The destination could not be reached or dropped the association."""


class Forwarder:
    """Background thread that sends ``spool.results()`` to ``destination``."""

    def __init__(self, spool: Spool, destination: Destination, calling_aet: str, retry_initial: float, retry_max: float):
        self.spool = spool
        self.destination = destination
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.stored = 0
        self._ae = AE(ae_title=calling_aet)
        self._ae.connection_timeout = CONNECT_TIMEOUT_S  # a silent host must not block a shutdown for minutes
        for sop_class in RESULT_SOP_CLASSES:
            self._ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cxr-forwarder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New results are in the spool: send them now instead of at the next retry."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the file being sent, then stop; the rest stays spooled for the next start."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = self.retry_initial
        while not self._stop.is_set():
            self._wake.clear()
            pending = self.spool.results()
            if not pending:
                self._wake.wait()
                continue
            try:
                if self.send(pending):
                    delay = self.retry_initial
                    continue
            except ForwardError as error:
                log_event(logging.WARNING, "forward_unreachable", destination=str(self.destination), reason=str(error), pending=len(pending), retry_in_s=delay)
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_max)

    def send(self, paths: list[Path]) -> bool:
        """Send ``paths`` over one association; True when every one was stored."""
        assoc = self._ae.associate(self.destination.host, self.destination.port, ae_title=self.destination.aet)
        if not assoc.is_established:
            raise ForwardError(f"association with {self.destination} not established")
        try:
            return all([self._send_one(assoc, path) for path in paths if not self._stop.is_set()])
        finally:
            if assoc.is_established:
                assoc.release()

    def _send_one(self, assoc, path: Path) -> bool:
        version = path.stat().st_ino  # a result made again while this one is sent gets a new inode
        ds = pydicom.dcmread(path)
        status = assoc.send_c_store(ds)
        code = status.get("Status") if status else None
        fields = {"file": path.name, "sop_instance_uid": ds.SOPInstanceUID, "destination": str(self.destination)}
        if code is None:
            raise ForwardError(f"no C-STORE response for {path.name} (association lost)")
        if code not in STORED_STATUSES:
            log_event(logging.ERROR, "forward_refused", status=f"0x{code:04X}", **fields)
            return False
        self.spool.retire_result(path, version)
        self.stored += 1
        log_event(logging.INFO, "forwarded", modality=ds.get("Modality", ""), status=f"0x{code:04X}", **fields)
        return True
