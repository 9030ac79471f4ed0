"""The on-disk spool of the DICOM listener: nothing is acknowledged before it is on disk.

Layout under the spool root:

- ``incoming/``: received and acknowledged, not yet classified (named so sorting keeps arrival order);
- ``results/``: Secondary Captures and Structured Reports waiting to be forwarded (named by their
  SOP Instance UID, so a result made twice overwrites itself), or kept when nothing forwards;
- ``failed/``: inputs that cannot be classified, each with a ``.txt`` saying why;
- ``inflight/``: one marker per input a worker process is classifying, holding the worker's
  process id, so that when a worker dies only the input it was on is charged with the death.

Every file appears by an atomic rename of a fully written, fsynced temporary file (worker
processes stage results, the listener renames them into place), so a crash leaves either the
whole file or a ``.tmp`` that :meth:`Spool.open` sweeps away (nothing acknowledged or finished
is ever only a ``.tmp``); a write that fails (a full disk) removes its ``.tmp`` at once. A
restart resumes from ``incoming/`` and ``results/``.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from pydicom import Dataset

TMP_SUFFIX = ".tmp"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_out_of_space(error: BaseException) -> bool:
    """A write failed for want of space (disk or quota): worth retrying later, not the input's fault."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


class Spool:
    """The three spool folders and the atomic moves between them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.incoming_dir = self.root / "incoming"
        self.results_dir = self.root / "results"
        self.failed_dir = self.root / "failed"
        self.inflight_dir = self.root / "inflight"
        self._results_lock = threading.Lock()  # a result replaced while being forwarded is not retired

    def open(self) -> "Spool":
        """Create the folders, drop partial writes and in-flight markers left by a crash, and
        prove the spool writable (raises OSError: read-only, not a folder, no permission)."""
        for folder in (self.incoming_dir, self.results_dir, self.failed_dir, self.inflight_dir):
            folder.mkdir(parents=True, exist_ok=True)
            for partial in folder.glob(f"*{TMP_SUFFIX}"):
                partial.unlink(missing_ok=True)
        for marker in self.inflight_dir.iterdir():
            marker.unlink(missing_ok=True)
        _write_atomic(self.root / ".writable-probe", b"").unlink()
        return self

    def claim(self, source: Path) -> None:
        """Mark ``source`` as being classified by this process (called in the worker)."""
        (self.inflight_dir / source.name).write_text(str(os.getpid()))

    def release(self, source: Path) -> None:
        (self.inflight_dir / source.name).unlink(missing_ok=True)

    def died_on(self, source: Path) -> bool:
        """Whether a worker process died while classifying ``source``: its marker is left and the
        process it names is gone. Clears the marker (the input is requeued either way)."""
        marker = self.inflight_dir / source.name
        try:
            pid = int(marker.read_text() or 0)
        except (OSError, ValueError):
            return False
        marker.unlink(missing_ok=True)
        return pid == 0 or not process_alive(pid)

    def put_incoming(self, encoded: bytes) -> Path:
        """Store one received Part-10 file; returns its spool path. Raises OSError (disk full...)."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.dcm"
        return _write_atomic(self.incoming_dir / name, encoded)

    def incoming(self) -> list[Path]:
        return _listing(self.incoming_dir)

    def results(self) -> list[Path]:
        return _listing(self.results_dir)

    def stage(self, ds: Dataset) -> Path:
        """Write one result under a unique temporary name (any process may do this)."""
        return _save_synced(_temporary(self.results_dir / f"{ds.SOPInstanceUID}.dcm"), ds)

    def put_results(self, source: Path, staged: list[Path]) -> list[Path]:
        """Move the staged results of one input into place, then retire the input.

        In that order: a crash in between leaves the input, which is classified again and
        yields the same UIDs, so the result files are replaced, not duplicated.
        """
        with self._results_lock:
            paths = [path.replace(self.results_dir / (path.name.split(".dcm.")[0] + ".dcm")) for path in staged]
        source.unlink(missing_ok=True)
        return paths

    def retire_result(self, path: Path, version: int) -> bool:
        """Delete a forwarded result unless a newer version (another inode) replaced it meanwhile."""
        with self._results_lock:
            if path.stat().st_ino != version:
                return False
            path.unlink()
            return True

    def fail(self, source: Path, reason: str) -> Path:
        """Move an input that cannot be classified aside, with the reason next to it."""
        target = self.failed_dir / source.name
        _write_atomic(target.with_suffix(".txt"), reason.encode("utf-8"))
        shutil.move(source, target)
        return target



def write_dataset(path: Path, ds: Dataset) -> Path:
    """Write ``ds`` as a Part-10 file that appears complete or not at all (two inputs with the
    same SOP Instance UID, written at once, each replace it whole; neither fails)."""
    return _save_synced(_temporary(path), ds).replace(path)


def _temporary(path: Path) -> Path:
    """A temporary name beside ``path`` that no other writer of the same ``path`` uses."""
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def _save_synced(path: Path, ds: Dataset) -> Path:
    try:
        ds.save_as(path, enforce_file_format=True)
        _fsync(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _listing(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob("*.dcm"))


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_atomic(path: Path, data: bytes) -> Path:
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return True  # no /proc: trust kill()
