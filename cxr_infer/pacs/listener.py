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
import os
import signal
import ssl
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

from cxr_infer.pacs.admission import REJECTED_PERMANENT, SOURCE_SERVICE_USER, AccessPolicy, Allowed, QueueingServer
from cxr_infer.pacs.forwarder import Destination, Forwarder
from cxr_infer.pacs.identity import uid_problem
from cxr_infer.pacs.logs import LOGGER, log_event
from cxr_infer.pacs.spool import Spool, is_out_of_space
from cxr_infer.pacs.worker import ModelSpec, classify_spooled, init_worker

SELECTED_MODALITIES = ("CR", "DX")
FRONTAL_VIEWS = ("PA", "AP")
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STOP_TIMEOUT_S = 60  # a C-STORE in flight may take this long; what is unsent stays spooled anyway
MAX_WORKER_DEATHS = 2  # an input a worker died on this many times is set aside as the likely cause
HARD_ASSOCIATION_FACTOR = 2  # pynetdicom's own limit, only a backstop: the server queues beyond the configured one


def failure_status(status: int, comment: str) -> Dataset:
    """A C-STORE failure response with its reason as Error Comment (LO: at most 64 characters)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    return response


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
    host: str = "127.0.0.1"
    forward: Destination | None = None
    workers: int = 2
    max_associations: int = 32
    retry_initial: float = 1.0
    retry_max: float = 60.0
    allow: tuple[str, ...] = ()  # calling AE titles (AET or AET@HOST); empty: any
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # with it, callers must present a certificate it signed

    def tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context (None without ``tls_cert``)."""
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_ca is not None:
            context.load_verify_locations(self.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


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
        self._retry_waits: dict[Path, float] = {}
        self.access = AccessPolicy(config.aet, tuple(Allowed.parse(spec) for spec in config.allow))
        self.forwarder = (
            Forwarder(self.spool, config.forward, config.aet, config.retry_initial, config.retry_max) if config.forward else None
        )
        self._ae = AE(ae_title=config.aet)
        self._ae.maximum_associations = config.max_associations * HARD_ASSOCIATION_FACTOR
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
        self._server = self._start_server()
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

    def _start_server(self) -> QueueingServer:
        """pynetdicom's ``start_server(block=False)``, with the queueing server class."""
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        server = self._ae.make_server(
            (self.config.host, self.config.port),
            ssl_context=self.config.tls_context(),
            evt_handlers=handlers,
            server_class=QueueingServer,
            max_associations=self.config.max_associations,
        )
        threading.Thread(target=server.serve_forever, name="cxr-dicom-accept", daemon=True).start()
        self._ae._servers.append(server)  # as start_server does: shutdown() takes it out again
        return server

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

    def _on_requested(self, event) -> None:
        """Refuse an association the access policy does not allow, saying why (A-ASSOCIATE-RJ)."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        refused = self.access.refusal(request.calling_ae_title, request.called_ae_title, assoc.requestor.address)
        if refused is None:
            return
        diagnostic, reason = refused
        log_event(
            logging.WARNING,
            "association_rejected",
            calling_aet=request.calling_ae_title,
            called_aet=request.called_ae_title,
            host=assoc.requestor.address,
            reason=reason,
        )
        assoc.acse.send_reject(REJECTED_PERMANENT, SOURCE_SERVICE_USER, diagnostic)
        assoc.kill()

    def _on_rejected(self, event) -> None:
        """pynetdicom rejected an association itself (its backstop association limit)."""
        assoc = event.assoc
        log_event(
            logging.WARNING,
            "association_rejected",
            calling_aet=assoc.requestor.ae_title,
            host=assoc.requestor.address,
            reason=f"more than {self._ae.maximum_associations} associations at once",
        )

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
        problem = uid_problem(ds.get("SOPInstanceUID"))
        if problem:
            log_event(logging.WARNING, "refused", reason=problem, **fields)
            return failure_status(STATUS_CANNOT_UNDERSTAND, problem)
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
        return ProcessPoolExecutor(self.config.workers, mp_context=context, initializer=init_worker, initargs=(self._model, os.getpid()))

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
        """A worker process died (a crashing decoder, the OOM killer): every input queued on the
        pool fails with it, and each is requeued on a new pool. Only an input a worker died on
        (its in-flight marker names a process that is gone) is charged with the death; one charged
        :data:`MAX_WORKER_DEATHS` times goes to ``failed/``, so a poisonous file cannot stop the
        listener, and the acknowledged inputs queued behind it are never blamed."""
        charged = self.spool.died_on(path)
        self._deaths[path] += charged
        log_event(logging.ERROR, "worker_died", file=path.name, in_flight=charged, deaths=self._deaths[path], reason=str(error))
        if self._deaths[path] >= MAX_WORKER_DEATHS:
            self._set_aside(path, f"a worker process died {self._deaths[path]} times while classifying it")
            return
        with self._pool_lock:
            if self._pool is pool and not self._stopped.is_set():
                self._pool = self._new_pool()
        self._submit(path)

    def _set_aside(self, path: Path, reason: str) -> None:
        """Move an input that cannot be classified to ``failed/`` (or retry, if the disk is full)."""
        try:
            self.spool.fail(path, reason)
        except OSError as error:
            self._retry_later(path, error)
            return
        log_event(logging.ERROR, "classification_failed", file=path.name, reason=reason)

    def _retry_later(self, path: Path, error: OSError) -> None:
        """An acknowledged input could not be finished for want of space (or another I/O error):
        it stays in ``incoming/`` and is queued again after a wait that doubles up to ``retry_max``."""
        delay = self._retry_waits.get(path, self.config.retry_initial)
        self._retry_waits[path] = min(2 * delay, self.config.retry_max)
        log_event(logging.WARNING, "retry_later", file=path.name, reason=str(error), retry_in_s=delay)
        timer = threading.Timer(delay, self._submit, (path,))
        timer.daemon = True
        timer.start()

    def _finish(self, path: Path, pool: ProcessPoolExecutor, future: Future) -> None:
        """Move a worker's results into place; an input it could not classify goes to ``failed/``."""
        try:
            if future.cancelled():
                return  # stopped before its turn: it stays in incoming/ for the next start
            error = future.exception()
            if isinstance(error, BrokenProcessPool):
                self._after_worker_death(path, pool, error)
                return
            if is_out_of_space(error):
                self._retry_later(path, error)
                return
            if error is not None:
                self._set_aside(path, f"{type(error).__name__}: {error}")
                return
            classified = future.result()
            written = self.spool.put_results(path, classified.staged)
            self._retry_waits.pop(path, None)
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
        except OSError as error:  # a full disk while moving results: the input waits, and is retried
            self._retry_later(path, error)
        except Exception:  # a callback must never die silently
            LOGGER.exception("finish_failed", extra={"fields": {"file": path.name}})
        finally:
            with self._pending_lock:
                self._pending.discard(future)
