"""Structured logs: one JSON object per line, so a log shipper can index every field.

Events carry their fields as data (``sop_instance_uid``, ``status``, ``delay_s``...) rather
than prose, which is what lets an operator count received, ignored, forwarded and failed
objects from the log alone.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

LOGGER = logging.getLogger("cxr_infer.pacs")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "event", ...fields}``; exceptions go in ``error``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_event(level: int, event: str, **fields: Any) -> None:
    """Log ``event`` (a short snake_case name) with its fields."""
    LOGGER.log(level, event, extra={"fields": fields})


def configure_json_logging(stream: TextIO = sys.stderr, level: int = logging.INFO) -> None:
    """Send this package's and pynetdicom's records, as JSON lines, to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    for name, logger_level in (("cxr_infer.pacs", level), ("pynetdicom", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logger_level)
        logger.propagate = False
