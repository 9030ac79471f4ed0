"""The listener's classification worker processes.

Building the Secondary Capture and the SR is pure Python (highdicom, pydicom), so worker
*threads* would share one core whatever ``--workers`` says. Each worker process loads the model
once, turns one spooled input into staged result files, and returns their paths; the listener
process then moves them into place (see :meth:`Spool.put_results`).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from cxr_infer.api import Classifier
from cxr_infer.dicom import read_dataset
from cxr_infer.gate import DEFAULT_MODE, GateResult
from cxr_infer.pacs.identity import ModelIdentity
from cxr_infer.pacs.results import InputRejected, dicom_results
from cxr_infer.pacs.spool import Spool

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


def init_worker(spec: ModelSpec) -> None:
    """Process initializer: load the model; leave SIGINT/SIGTERM to the listener process,
    which decides when work stops (a Ctrl-C reaches the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    classifier = Classifier.load(spec.model, device=spec.device, threads=spec.threads, gate=spec.gate)
    _loaded["classifier"], _loaded["model"] = classifier, ModelIdentity.of(classifier)


def classify_spooled(source: Path, spool_root: Path) -> Classified:
    """Classify one spooled input and stage its SC and SR in the spool."""
    dataset = read_dataset(source)
    try:
        results = dicom_results(_loaded["classifier"], dataset, _loaded["model"])
    except InputRejected as rejected:
        return Classified(dataset.SOPInstanceUID, None, [], rejected.gate)
    spool = Spool(spool_root)
    return Classified(dataset.SOPInstanceUID, results.label, [spool.stage(ds) for ds in results.datasets])
