"""Result writers: one row per input, in input order, flushed as it goes.

CSV, JSON Lines and Parquet are built-in plugins registered through ``register_writers``; a third-party
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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (it begins with ``= + - @``, tab or CR,
    as a file named ``=HYPERLINK(...).jpg`` does) gets a leading ``'``; other values pass."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


class CsvWriter:
    """CSV with a fixed header; extra fields a post-processing plugin adds are kept as JSON in ``extra``.

    Values JSON cannot encode (paths, numpy scalars a plugin put in) are written as their text,
    so one odd field never costs the row. Text cells are made spreadsheet-safe
    (:func:`spreadsheet_safe`), and a file name that is not valid UTF-8 (Python holds its bytes
    as surrogates) is written with those bytes escaped as ``\\udcXX``, so the file stays UTF-8.
    """

    def __init__(self, path: Path, columns: Sequence[str]):
        self._columns = list(columns)
        self._handle = open(path, "w", newline="", encoding="utf-8", errors="backslashreplace")
        self._csv = csv.DictWriter(self._handle, fieldnames=[*self._columns, "extra"], extrasaction="ignore")
        self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        extra = {key: value for key, value in row.items() if key not in self._columns}
        cells = {**row, "extra": json.dumps(extra, sort_keys=True, default=str) if extra else ""}
        self._csv.writerow({key: spreadsheet_safe(value) for key, value in cells.items()})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class JsonLinesWriter:
    """One JSON object per line; like the CSV writer, unencodable values are written as text.

    JSON escapes non-ASCII (``ensure_ascii``), so a name that is not valid UTF-8 comes out as
    ``\\udcXX`` escapes, which ``json.loads`` reads back to the same Python string.
    """

    def __init__(self, path: Path, columns: Sequence[str]):
        self._handle = open(path, "w", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class WriterUnavailable(RuntimeError):
    """A writer that cannot run on this host (a missing optional package): a usage error, not a bug."""


class ParquetWriter:
    """Apache Parquet, for archives too large for a spreadsheet (pyarrow: ``pip install 'cxr-toolkit[ray]'``).

    The CSV's columns and ``extra``: probabilities and the gate score as nullable doubles (empty:
    null), the rest as text, written as the CSV writes it (unencodable values as their text, a
    name that is not valid UTF-8 with ``\\udcXX`` escapes). Rows go out in row groups of
    :attr:`ROW_GROUP` to bound memory; the file is readable only once closed (Parquet's footer
    is written last), so a run killed midway leaves no readable Parquet: use CSV or JSON Lines
    where a partial file must survive a crash.
    """

    ROW_GROUP = 10_000

    def __init__(self, path: Path, columns: Sequence[str]):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as error:
            raise WriterUnavailable(f"--format parquet needs pyarrow ({error}): pip install 'cxr-toolkit[ray]'") from error
        self._pa, self._columns = pa, list(columns)
        fields = [(name, pa.float64() if is_number_column(name) else pa.string()) for name in [*self._columns, "extra"]]
        self._schema = pa.schema(fields)
        self._writer = pq.ParquetWriter(path, self._schema)
        self._rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        extra = {key: value for key, value in row.items() if key not in self._columns}
        self._rows.append({**row, "extra": json.dumps(extra, sort_keys=True, default=str) if extra else ""})
        if len(self._rows) >= self.ROW_GROUP:
            self._flush()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def _flush(self) -> None:
        if self._rows:
            cells = {name: [_parquet_cell(row.get(name, ""), is_number_column(name)) for row in self._rows] for name in self._schema.names}
            self._writer.write_table(self._pa.Table.from_pydict(cells, schema=self._schema))
            self._rows = []


def is_number_column(name: str) -> bool:
    """The numeric columns of :func:`cxr_infer.results.columns`: probabilities and the gate score."""
    return name.startswith("prob_") or name == "gate_score"


def utf8_text(value: Any) -> str:
    """``value`` as text that encodes as UTF-8: a file name's undecodable bytes (surrogates)
    appear as ``\\udcXX``, as the CSV writer writes them."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _parquet_cell(value: Any, number: bool) -> Any:
    if number:
        return None if value == "" else float(value)
    return utf8_text(value)


@hookimpl
def register_writers(register):
    register("csv", CsvWriter, extension=".csv")
    register("jsonl", JsonLinesWriter, extension=".jsonl")
    register("parquet", ParquetWriter, extension=".parquet")


def available_writers() -> dict[str, Writer]:
    from cxr_infer.plugins import build_registry, collect, get_plugin_manager

    return build_registry(collect(get_plugin_manager(), "register_writers"), "register_writers", Writer)
