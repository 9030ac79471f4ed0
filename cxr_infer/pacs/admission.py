"""Which associations the listener takes, and how many at once.

- **Who.** The called AE title must be the listener's own. With an allow-list (``--allow-aet
  AET`` or ``AET@HOST``, repeatable) only the calling AE titles it names are accepted, each from
  any host or only from the hosts given. Every refusal is an A-ASSOCIATE-RJ with the DICOM
  reason (calling / called AE title not recognised) and a log line saying why.
- **How many.** Beyond ``--max-associations`` a new connection waits in the listen backlog
  until one ends, instead of being rejected: a PACS that opens 50 associations at once gets 50
  successes, and CPU stays bounded by the worker processes anyway.
- **TLS.** The handshake runs in a thread of its own, within :data:`TLS_HANDSHAKE_TIMEOUT_S`,
  not in the accept loop (pynetdicom's place for it), where a caller that connects and never
  says hello stalled every other caller; and before the caller takes an association slot, so
  callers that never finish a handshake cannot keep authenticated ones waiting. At most
  :data:`TLS_HANDSHAKES` handshakes run at once (further connections wait in the backlog). A
  failed handshake (no client certificate, one the CA did not sign, plain DICOM on the TLS
  port) is logged with its reason like any refused association.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field

from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from cxr_infer.pacs.logs import log_event

REJECTED_PERMANENT, SOURCE_SERVICE_USER = 0x01, 0x01
CALLING_AET_NOT_RECOGNISED, CALLED_AET_NOT_RECOGNISED = 0x03, 0x07
BACKLOG = 256  # connections waiting for a free association slot
WAIT_POLL_S = 0.1
TLS_HANDSHAKE_TIMEOUT_S = 30.0
TLS_HANDSHAKES = 64  # handshakes in progress at once


@dataclass(frozen=True)
class Allowed:
    """One allow-list entry: a calling AE title, from any host (``hosts`` empty) or those addresses."""

    aet: str
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, spec: str) -> "Allowed":
        """``AET`` or ``AET@HOST`` (a name is resolved now, to all its addresses)."""
        aet, _, host = spec.partition("@")
        aet = aet.strip()
        if not 1 <= len(aet) <= 16 or "\\" in aet:
            raise ValueError(f"--allow-aet {spec!r}: expected an AE title of 1 to 16 characters, optionally followed by @HOST")
        if not host:
            return cls(aet)
        try:
            return cls(aet, frozenset(_plain(info[4][0]) for info in socket.getaddrinfo(host, None)))
        except socket.gaierror as error:
            raise ValueError(f"--allow-aet {spec!r}: cannot resolve host {host!r} ({error.strerror})") from None


@dataclass(frozen=True)
class AccessPolicy:
    """The called AE title to answer to and the calling AE titles allowed (empty: any)."""

    called_aet: str
    allowed: tuple[Allowed, ...] = ()

    def refusal(self, calling_aet: str, called_aet: str, host: str) -> tuple[int, str] | None:
        """``(A-ASSOCIATE-RJ diagnostic, reason)`` for a request to refuse, or None to accept it."""
        calling, called = calling_aet.strip(), called_aet.strip()
        if called != self.called_aet:
            return CALLED_AET_NOT_RECOGNISED, f"called AE title {called!r} is not this listener's {self.called_aet!r}"
        if not self.allowed:
            return None
        entries = [entry for entry in self.allowed if entry.aet == calling]
        if not entries:
            return CALLING_AET_NOT_RECOGNISED, f"calling AE title {calling!r} is not in the allow-list (--allow-aet)"
        if not any(not entry.hosts or _plain(host) in entry.hosts for entry in entries):
            return CALLING_AET_NOT_RECOGNISED, f"calling AE title {calling!r} is not allowed from host {host}"
        return None


def _plain(address: str) -> str:
    """An IPv4 address seen through an IPv6 socket (``::ffff:a.b.c.d``) as ``a.b.c.d``."""
    return address.removeprefix("::ffff:")


class _WholeAssociationHandler(RequestHandler):
    """pynetdicom's request handler, returning only when its association has ended."""

    def _create_association(self):
        self.association = super()._create_association()
        return self.association

    def handle(self) -> None:
        super().handle()
        self.association.join()


class QueueingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server serving at most ``max_associations`` associations at once:
    the accept loop waits for a free slot, so further connections queue in the backlog."""

    request_queue_size = BACKLOG

    def __init__(self, *args, max_associations: int, **kwargs):
        self._slots = threading.Semaphore(max_associations)
        self._handshakes = threading.Semaphore(TLS_HANDSHAKES)
        self._stopping = threading.Event()
        super().__init__(*args, request_handler=_WholeAssociationHandler, **kwargs)

    def process_request(self, request, client_address) -> None:
        """Plain DICOM: wait for a slot, then serve in a thread. TLS: the handshake first, in a
        thread of its own that holds no association slot (:meth:`_secure_then_serve`)."""
        if self.ssl_context is None:
            if not self._acquire(self._slots):
                self.shutdown_request(request)
                return
            super().process_request(request, client_address)
            return
        if not self._acquire(self._handshakes):
            self.shutdown_request(request)
            return
        threading.Thread(target=self._secure_then_serve, args=(request, client_address), daemon=True).start()

    def _secure_then_serve(self, request, client_address) -> None:
        try:
            secured = self._handshake(request, client_address)
        finally:
            self._handshakes.release()
        if secured is None:
            return
        if not self._acquire(self._slots):
            self.shutdown_request(secured)
            return
        self.process_request_thread(secured, client_address)

    def _acquire(self, semaphore: threading.Semaphore) -> bool:
        """Wait for ``semaphore``; False when the server stops first."""
        while not semaphore.acquire(timeout=WAIT_POLL_S):
            if self._stopping.is_set():
                return False
        return True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept only; the TLS handshake waits for the connection's thread (:meth:`_handshake`)."""
        return self.socket.accept()

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _handshake(self, connection: socket.socket, client_address) -> ssl.SSLSocket | None:
        """The server side of the TLS handshake, bounded in time; None (logged, closed) when it fails."""
        connection.settimeout(TLS_HANDSHAKE_TIMEOUT_S)
        try:
            secured = self.ssl_context.wrap_socket(connection, server_side=True)
        except (OSError, ValueError) as error:
            connection.close()
            log_event(logging.WARNING, "association_rejected", host=client_address[0], reason=f"TLS handshake failed: {_tls_failure(error)}")
            return None
        secured.settimeout(None)
        return secured

    def shutdown(self) -> None:
        self._stopping.set()
        super().shutdown()


_TLS_REASONS = {  # OpenSSL's reason codes a caller's mistake gives, in words
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate (--tls-ca requires one)",
    "WRONG_VERSION_NUMBER": "the caller did not speak TLS (plain DICOM on the TLS port?)",
    "UNEXPECTED_EOF_WHILE_READING": "the caller closed the connection during the handshake",
}


def _tls_failure(error: Exception) -> str:
    """Why a handshake failed, in words: the certificate check's verdict, or OpenSSL's reason."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"client certificate not accepted ({error.verify_message})"
    if isinstance(error, TimeoutError):
        return f"no handshake within {TLS_HANDSHAKE_TIMEOUT_S:g} s"
    reason = getattr(error, "reason", None)
    return f"{_TLS_REASONS[reason]} ({reason})" if reason in _TLS_REASONS else str(reason or error)
