"""The listener's classification worker processes.

Building the Secondary Capture and the SR is pure Python (highdicom, pydicom), so worker
*threads* would share one core whatever ``--workers`` says. Each worker process loads the model
once, turns one spooled input into staged result files, and returns their paths; the listener
process then moves them into place (see :meth:`Spool.put_results`).

Workers never outlive the listener: each watches the listener's process and exits when it
ends, a ``kill -9`` included, instead of lingering with a model in memory.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cxr_infer.api import Classifier
from cxr_infer.dicom import read_dataset
from cxr_infer.gate import DEFAULT_MODE, GateResult
from cxr_infer.pacs.identity import ModelIdentity
from cxr_infer.pacs.results import InputRejected, dicom_results
from cxr_infer.pacs.spool import Spool, process_alive

_loaded: dict[str, object] = {}


@dataclass(frozen=True)
class ModelSpec:
    """How each worker process loads the model (picklable: it crosses the process boundary)."""

    model: str
    device: str = "auto"
    threads: int = 1
    gate: str = DEFAULT_MODE


@dataclass(frozen=True)
class Classified:
    """What a worker made of one input: its SOP Instance UID, label and staged result files.
    An input the gate rejected has no label and no files, and ``gate`` says why."""

    sop_instance_uid: str
    label: str | None
    staged: list[Path]
    gate: GateResult = GateResult()


def init_worker(spec: ModelSpec, listener_pid: int) -> None:
    """Process initializer: leave the terminal's process group (a Ctrl-C reaches the listener,
    which decides when work stops), exit with the listener, load the model. SIGTERM keeps its
    default, so the pool can end the surviving workers when one dies."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with(listener_pid)
    classifier = Classifier.load(spec.model, device=spec.device, threads=spec.threads, gate=spec.gate)
    _loaded["classifier"], _loaded["model"] = classifier, ModelIdentity.of(classifier)


def exit_with(pid: int) -> None:
    """Exit this process as soon as process ``pid`` has ended, however it ended."""

    def watch() -> None:
        try:
            with os.fdopen(os.pidfd_open(pid)) as handle:  # readable once the process has ended
                select.select([handle], [], [])
        except (AttributeError, OSError):  # no pidfd (old kernel, not Linux) or already gone: poll
            while process_alive(pid):
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="cxr-exit-with-listener", daemon=True).start()


def classify_spooled(source: Path, spool_root: Path) -> Classified:
    """Classify one spooled input and stage its SC and SR in the spool; while it runs, the
    spool's in-flight marker names this process (see :meth:`Spool.died_on`)."""
    spool = Spool(spool_root)
    spool.claim(source)
    try:
        dataset = read_dataset(source)
        try:
            results = dicom_results(_loaded["classifier"], dataset, _loaded["model"])
        except InputRejected as rejected:
            return Classified(dataset.SOPInstanceUID, None, [], rejected.gate)
        return Classified(dataset.SOPInstanceUID, results.label, [spool.stage(ds) for ds in results.datasets])
    finally:
        spool.release(source)
