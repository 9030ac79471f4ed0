"""Result writers: one row per input, in input order, flushed as it goes.

CSV and JSON Lines are built-in plugins registered through ``register_writers``; a third-party
writer (FHIR, a database) registers the same way.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cxr_infer.hookspecs import hookimpl


class ResultWriter(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Writer:
    name: str
    factory: Callable[[Path, Sequence[str]], ResultWriter]
    extension: str = ""
    plugin: str = field(default="", compare=False)


class CsvWriter:
    """CSV with a fixed header; extra fields a post-processing plugin adds are kept as JSON in ``extra``.

    Values JSON cannot encode (paths, numpy scalars a plugin put in) are written as their text,
    so one odd field never costs the row.
    """

    def __init__(self, path: Path, columns: Sequence[str]):
        self._columns = list(columns)
        self._handle = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._handle, fieldnames=[*self._columns, "extra"], extrasaction="ignore")
        self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        extra = {key: value for key, value in row.items() if key not in self._columns}
        self._csv.writerow({**row, "extra": json.dumps(extra, sort_keys=True, default=str) if extra else ""})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class JsonLinesWriter:
    """One JSON object per line; like the CSV writer, unencodable values are written as text."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self._handle = open(path, "w", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


@hookimpl
def register_writers(register):
    register("csv", CsvWriter, extension=".csv")
    register("jsonl", JsonLinesWriter, extension=".jsonl")


def available_writers() -> dict[str, Writer]:
    from cxr_infer.plugins import build_registry, collect, get_plugin_manager

    return build_registry(collect(get_plugin_manager(), "register_writers"), "register_writers", Writer)
