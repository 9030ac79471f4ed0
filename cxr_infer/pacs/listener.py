"""The DICOM listener behind ``cxr-infer serve-dicom``: C-ECHO and C-STORE in, results out.

A received object is checked first (CR or DX with a frontal ViewPosition; anything else is
logged and acknowledged, never failed, since a PACS routing a whole study to us must not see
errors for its lateral views or reports). A selected object is written to the spool and only
then acknowledged; a fixed pool of worker threads classifies spooled inputs (bounded CPU use
whatever the number of associations), and the :class:`Forwarder` sends the results on.
Restarting on the same spool resumes everything that was acknowledged but not finished.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from cxr_infer.dicom import read_dataset
from cxr_infer.pacs.forwarder import Destination, Forwarder
from cxr_infer.pacs.logs import log_event
from cxr_infer.pacs.spool import Spool

SELECTED_MODALITIES = ("CR", "DX")
FRONTAL_VIEWS = ("PA", "AP")
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STOP_TIMEOUT_S = 60  # a C-STORE in flight may take this long; what is unsent stays spooled anyway

MakeResults = Callable[[Dataset], Sequence[Dataset]]


def rejection_reason(ds: Dataset) -> str | None:
    """Why an object is not a frontal chest radiograph for us, or None when it is."""
    modality = str(ds.get("Modality", "")).upper()
    if modality not in SELECTED_MODALITIES:
        return f"modality {modality or 'missing'} is not {'/'.join(SELECTED_MODALITIES)}"
    view = str(ds.get("ViewPosition", "")).upper()
    if view not in FRONTAL_VIEWS:
        return f"view position {view or 'missing'} is not frontal ({'/'.join(FRONTAL_VIEWS)})"
    return None


@dataclass(frozen=True)
class ListenerConfig:
    """Where to listen, where to spool and forward, and how much to do at once."""

    aet: str
    port: int
    spool: Path
    host: str = "0.0.0.0"
    forward: Destination | None = None
    workers: int = 2
    max_associations: int = 32
    retry_initial: float = 1.0
    retry_max: float = 60.0


class Listener:
    """Storage SCP + spool + classification workers + forwarder, started and stopped together."""

    def __init__(self, make_results: MakeResults, config: ListenerConfig):
        self.config = config
        self.spool = Spool(config.spool)
        self._make_results = make_results
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._workers = [threading.Thread(target=self._work, name=f"cxr-worker-{i}", daemon=True) for i in range(config.workers)]
        self.forwarder = (
            Forwarder(self.spool, config.forward, config.aet, config.retry_initial, config.retry_max) if config.forward else None
        )
        self._ae = AE(ae_title=config.aet)
        self._ae.maximum_associations = config.max_associations
        for context in AllStoragePresentationContexts:  # any transfer syntax: modalities send JPEG too
            self._ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._ae.add_supported_context(Verification)
        self._server = None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Resume the spool, start workers and forwarder, then accept associations."""
        self.spool.open()
        resumed = self.spool.incoming()
        for path in resumed:
            self._queue.put(path)
        for worker in self._workers:
            worker.start()
        if self.forwarder:
            self.forwarder.start()
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo)]
        self._server = self._ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        log_event(
            logging.INFO,
            "listening",
            aet=self.config.aet,
            port=self.port,
            spool=str(self.spool.root),
            forward=str(self.config.forward or ""),
            workers=self.config.workers,
            resumed_inputs=len(resumed),
            resumed_results=len(self.spool.results()),
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.config.port

    def stop(self) -> None:
        """Stop accepting, let each worker finish its current input, stop the forwarder.

        What is left stays in the spool for the next start; nothing acknowledged is lost.
        """
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server:
            self._server.shutdown()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
        if self.forwarder:
            self.forwarder.stop(timeout=STOP_TIMEOUT_S)
        log_event(logging.INFO, "stopped", pending_inputs=len(self.spool.incoming()), pending_results=len(self.spool.results()))

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then stop cleanly (for the CLI)."""
        stop_requested = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, frame: stop_requested.set())
        self.start()
        stop_requested.wait()
        log_event(logging.INFO, "stopping")
        self.stop()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every spooled input is classified and (when forwarding) every result sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0 and not (self.forwarder and self.spool.results()):
                return True
            time.sleep(0.1)
        return False

    def _on_echo(self, event) -> int:
        log_event(logging.INFO, "echo", calling_aet=event.assoc.requestor.ae_title)
        return STATUS_SUCCESS

    def _on_store(self, event) -> int:
        """Acknowledge only what is safely on disk (or deliberately ignored)."""
        try:
            ds = event.dataset
        except Exception as error:
            log_event(logging.ERROR, "undecodable", calling_aet=event.assoc.requestor.ae_title, reason=str(error))
            return STATUS_CANNOT_UNDERSTAND
        fields = {"sop_instance_uid": ds.get("SOPInstanceUID", ""), "calling_aet": event.assoc.requestor.ae_title}
        reason = rejection_reason(ds)
        if reason:
            log_event(logging.INFO, "ignored", reason=reason, **fields)
            return STATUS_SUCCESS
        try:
            path = self.spool.put_incoming(event.encoded_dataset())
        except OSError as error:
            log_event(logging.ERROR, "spool_failed", reason=str(error), **fields)
            return STATUS_OUT_OF_RESOURCES
        self._queue.put(path)
        log_event(logging.INFO, "received", file=path.name, **fields)
        return STATUS_SUCCESS

    def _work(self) -> None:
        """Classify queued inputs until stopped; after a stop the rest stays spooled for the next start."""
        while (path := self._queue.get()) is not None:
            try:
                if not self._stopped.is_set():
                    self._process(path)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _process(self, path: Path) -> None:
        """Classify one spooled input; an input that cannot be classified goes to ``failed/``."""
        try:
            source = read_dataset(path)
            results = self._make_results(source)
            written = self.spool.put_results(path, list(results))
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            self.spool.fail(path, reason)
            log_event(logging.ERROR, "classification_failed", file=path.name, reason=reason)
            return
        log_event(
            logging.INFO,
            "classified",
            file=path.name,
            sop_instance_uid=source.SOPInstanceUID,
            results=[p.name for p in written],
        )
        if self.forwarder:
            self.forwarder.wake()
