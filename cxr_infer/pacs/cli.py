"""``cxr-infer serve-dicom``: the DICOM listener as a command (added to the ``cxr-infer`` group).

pynetdicom, highdicom and the model load inside the command, so ``cxr-infer`` itself starts
as fast without them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from cxr_infer.gate import DEFAULT_MODE, GATE_MODES
from cxr_infer.session import DEVICES


def _destination(ctx: click.Context, param: click.Parameter, value: str | None):
    from cxr_infer.pacs.forwarder import Destination

    try:
        return Destination.parse(value) if value else None
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.command("serve-dicom")
@click.option("--aet", required=True, help="AE title this listener answers to.")
@click.option("--port", required=True, type=click.IntRange(0, 65535), help="TCP port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface; then use --allow-aet and TLS).")
@click.option("--allow-aet", "allow", multiple=True, metavar="AET[@HOST]", help="Accept only these calling AE titles (repeatable), optionally only from HOST (default: any).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Serve DICOM over TLS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="The certificate's private key (PEM).")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Require callers to present a certificate signed by this CA (PEM).")
@click.option("--forward", callback=_destination, metavar="HOST:PORT:AET", help="Send the SC and SR there by C-STORE; without it they stay in SPOOL/results.")
@click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=Path("cxr-spool"), show_default=True, help="Work folder; restarting on the same folder resumes unfinished work.")
@click.option("--model", "model_name", default=None, help="Bundled model name or .onnx path (default: the bundled default).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="auto uses CUDA only if the session really gets it.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker processes classifying at once (one model each).")
@click.option("--max-associations", type=click.IntRange(1, 1000), default=32, show_default=True, help="Associations served at once; more wait their turn (queued, not rejected).")
@click.option("--retry-max", type=click.FloatRange(0.1), default=60.0, show_default=True, help="Longest wait (s) between forwarding attempts; waits double from 1 s.")
@click.option("--gate", type=click.Choice(GATE_MODES), default=DEFAULT_MODE, show_default=True, help="Input gate: a rejected input gets no SC/SR and a 'rejected' log line (warn: classified and logged).")
def serve_dicom(
    aet: str,
    port: int,
    host: str,
    allow: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    forward,
    spool: Path,
    model_name: str | None,
    device: str,
    workers: int,
    max_associations: int,
    retry_max: float,
    gate: str,
) -> None:
    """Receive chest radiographs by C-STORE, classify them, send back a Secondary Capture and a
    TID 1500 Structured Report. Logs are JSON lines on stderr; SIGTERM stops cleanly. A spool
    that cannot be written or an address that cannot be bound is a JSON log line and exit code 2."""
    from cxr_infer.cli import UsageFailure, load_classifier
    from cxr_infer.pacs.admission import Allowed
    from cxr_infer.pacs.identity import ModelIdentity
    from cxr_infer.pacs.listener import Listener, ListenerConfig
    from cxr_infer.pacs.logs import configure_json_logging, log_event
    from cxr_infer.pacs.spool import Spool
    from cxr_infer.pacs.worker import ModelSpec

    configure_json_logging()
    try:
        [Allowed.parse(spec) for spec in allow]
    except ValueError as error:
        raise UsageFailure(str(error)) from error
    if (tls_key or tls_ca) and not tls_cert:
        raise UsageFailure("--tls-key and --tls-ca need --tls-cert")
    try:
        Spool(spool).open()
    except OSError as error:
        log_event(logging.ERROR, "spool_unusable", spool=str(spool), reason=error.strerror or str(error))
        sys.exit(2)
    with load_classifier(model_name, device, None, gate) as classifier:  # fail here, not in every worker
        model = ModelIdentity.of(classifier)
        log_event(logging.INFO, "model_loaded", name=model.name, sha256=model.sha256, providers=classifier.providers)
        spec = ModelSpec(str(classifier.info.path), device, gate=gate)
    config = ListenerConfig(
        aet=aet,
        port=port,
        host=host,
        spool=spool,
        forward=forward,
        workers=workers,
        max_associations=max_associations,
        retry_initial=min(1.0, retry_max),
        retry_max=retry_max,
        allow=allow,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
    )
    try:
        Listener(spec, config).serve_forever()
    except OSError as error:  # the address is taken or not ours, the spool went away
        log_event(logging.ERROR, "listen_failed", host=host, port=port, reason=error.strerror or str(error))
        sys.exit(2)
