"""The DICOM listener behind ``cxr-infer serve-dicom``: C-ECHO and C-STORE in, results out.

A received object is checked first (CR or DX with a frontal ViewPosition; anything else is
logged and acknowledged, never failed, since a PACS routing a whole study to us must not see
errors for its lateral views or reports). A selected object is written to the spool and only
then acknowledged; a fixed pool of worker processes classifies spooled inputs (bounded CPU use
whatever the number of associations), and the :class:`Forwarder` sends the results on.
Restarting on the same spool resumes everything that was acknowledged but not finished.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from cxr_infer.pacs.forwarder import Destination, Forwarder
from cxr_infer.pacs.logs import LOGGER, log_event
from cxr_infer.pacs.spool import Spool
from cxr_infer.pacs.worker import ModelSpec, classify_spooled, init_worker

SELECTED_MODALITIES = ("CR", "DX")
FRONTAL_VIEWS = ("PA", "AP")
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STOP_TIMEOUT_S = 60  # a C-STORE in flight may take this long; what is unsent stays spooled anyway
MAX_WORKER_DEATHS = 2  # an input in flight at this many worker deaths is set aside as the likely cause


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

    def __init__(self, model: ModelSpec, config: ListenerConfig):
        self.config = config
        self.spool = Spool(config.spool)
        self._model = model
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        self._deaths: Counter[Path] = Counter()
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
        self._pool = self._new_pool()
        resumed = self.spool.incoming()
        for path in resumed:
            self._submit(path)
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
        with self._pool_lock:
            pool = self._pool
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
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
            if not self._pending and not (self.forwarder and self.spool.results()):
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
        log_event(logging.INFO, "received", file=path.name, **fields)
        self._submit(path)
        return STATUS_SUCCESS

    def _new_pool(self) -> ProcessPoolExecutor:
        # not fork: workers must not inherit this process's threads (server, onnxruntime)
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        return ProcessPoolExecutor(self.config.workers, mp_context=context, initializer=init_worker, initargs=(self._model,))

    def _submit(self, path: Path) -> None:
        """Queue one spooled input for a worker; after a stop it waits in the spool instead."""
        if self._stopped.is_set():
            return
        with self._pool_lock:
            pool = self._pool
            try:
                future = pool.submit(classify_spooled, path, self.spool.root)
            except BrokenProcessPool:  # a worker died while idle: start afresh
                log_event(logging.WARNING, "workers_restarted", reason="a worker process died while idle")
                self._pool = pool = self._new_pool()
                future = pool.submit(classify_spooled, path, self.spool.root)
            except RuntimeError as error:  # shut down meanwhile: the input waits in the spool
                log_event(logging.WARNING, "not_queued", file=path.name, reason=str(error))
                return
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(partial(self._finish, path, pool))

    def _after_worker_death(self, path: Path, pool: ProcessPoolExecutor, error: BaseException) -> None:
        """A worker process died (a crashing decoder, the OOM killer): every input in flight fails
        with the pool. Retry each on a new pool; one in flight at repeated deaths is the likely
        cause and goes to ``failed/``, so a poisonous file cannot stop the listener."""
        self._deaths[path] += 1
        log_event(logging.ERROR, "worker_died", file=path.name, deaths=self._deaths[path], reason=str(error))
        if self._deaths[path] >= MAX_WORKER_DEATHS:
            self.spool.fail(path, f"a worker process died {self._deaths[path]} times while classifying it")
            return
        with self._pool_lock:
            if self._pool is pool and not self._stopped.is_set():
                self._pool = self._new_pool()
        self._submit(path)

    def _finish(self, path: Path, pool: ProcessPoolExecutor, future: Future) -> None:
        """Move a worker's results into place; an input it could not classify goes to ``failed/``."""
        try:
            if future.cancelled():
                return  # stopped before its turn: it stays in incoming/ for the next start
            error = future.exception()
            if isinstance(error, BrokenProcessPool):
                self._after_worker_death(path, pool, error)
                return
            if error is not None:
                reason = f"{type(error).__name__}: {error}"
                self.spool.fail(path, reason)
                log_event(logging.ERROR, "classification_failed", file=path.name, reason=reason)
                return
            classified = future.result()
            written = self.spool.put_results(path, classified.staged)
            if classified.label is None:  # the input gate's call: no SC/SR, said in the log
                gate = classified.gate
                log_event(
                    logging.INFO,
                    "rejected",
                    file=path.name,
                    sop_instance_uid=classified.sop_instance_uid,
                    reason=gate.reason,
                    gate_score=gate.score,
                )
                return
            log_event(
                logging.INFO,
                "classified",
                file=path.name,
                sop_instance_uid=classified.sop_instance_uid,
                label=classified.label,
                results=[p.name for p in written],
            )
            if self.forwarder:
                self.forwarder.wake()
        except Exception:  # a callback must never die silently
            LOGGER.exception("finish_failed", extra={"fields": {"file": path.name}})
        finally:
            with self._pending_lock:
                self._pending.discard(future)
