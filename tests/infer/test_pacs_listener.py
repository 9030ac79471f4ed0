"""The listener without a PACS behind it: results stay in the spool, and a dying worker
process (a crashing decoder, the OOM killer) loses nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pydicom
from pacs_support import radiograph_dataset, send_datasets

from cxr_infer.pacs.listener import Listener, ListenerConfig
from cxr_infer.pacs.worker import ModelSpec

AET = "CXRTEST"


def _worker_pids() -> list[int]:
    return [child.pid for child in multiprocessing.active_children()]


def _kill_workers_when_busy(listener: Listener, timeout: float = 30) -> None:
    """SIGKILL the worker processes as soon as they exist (the model is loading or running)."""
    deadline = time.monotonic() + timeout
    while not (pids := _worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_worker_deaths_lose_nothing(tiny_model_path, tmp_path, external_jpegs, caplog):
    config = ListenerConfig(aet=AET, port=0, host="127.0.0.1", spool=tmp_path / "spool", workers=1)
    listener = Listener(ModelSpec(str(tiny_model_path), "cpu"), config)
    listener.start()
    sources = [radiograph_dataset(path, max_side=96) for path in external_jpegs[:4]]
    try:
        assert send_datasets(sources[:2], listener.port, AET) == [0, 0]
        _kill_workers_when_busy(listener)  # in flight: both inputs are retried on a new pool
        assert listener.wait_idle(90)
        for pid in _worker_pids():
            os.kill(pid, signal.SIGKILL)  # idle: the next input starts a new pool
        time.sleep(0.5)
        assert send_datasets(sources[2:], listener.port, AET) == [0, 0]
        assert listener.wait_idle(90)
    finally:
        listener.stop()
    events = [record.getMessage() for record in caplog.records if record.name == "cxr_infer.pacs"]
    assert "worker_died" in events and "workers_restarted" in events
    spool = listener.spool
    assert list(spool.failed_dir.iterdir()) == [] and spool.incoming() == []
    referenced = {
        pydicom.dcmread(path).SourceImageSequence[0].ReferencedSOPInstanceUID
        for path in spool.results()
        if pydicom.dcmread(path, stop_before_pixels=True).Modality == "OT"
    }
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    assert len(spool.results()) == 2 * len(sources)
