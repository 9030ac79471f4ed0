"""Internal errors of the command line: one line for the user, the traceback in a log file.

A bug must neither look like "some inputs failed" (exit code 1) nor bury the user in a
traceback; it exits with its own code and says where the details are, for the bug report.
"""

from __future__ import annotations

import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

from cxr_infer import __version__

EXIT_INTERNAL = 3


def write_crash_log(error: BaseException, command: list[str]) -> Path:
    """Write the traceback, the command and the version to a new log file; return its path."""
    with tempfile.NamedTemporaryFile("w", prefix="cxr-infer-crash-", suffix=".log", delete=False, encoding="utf-8", errors="backslashreplace") as log:
        log.write(f"cxr-infer {__version__}, {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
        log.write(f"command: {command!r}\n\n")
        log.write("".join(traceback.format_exception(error)))
    return Path(log.name)


def one_line(error: BaseException) -> str:
    """``TypeName: first line of the message``, for the terminal."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
