"""Where each image came from: the source table behind source-aware training and the shortcut audit.

A model that is right only for one hospital's look has learned the hospital. To see that (audit)
and to keep one source from dominating a class (training), every image needs its source. It comes
from a ``MANIFEST.csv`` found beside the data (the layout of ``../shared/data``: columns ``path``
relative to the manifest's folder and ``source_repo``) or from any CSV with columns
``path,source`` given explicitly (paths relative to that CSV). Torch-free, so ``cxr-infer`` and
``cxr-train`` read sources the same way.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "MANIFEST.csv"
UNKNOWN = "unknown"
_SOURCE_COLUMNS = ("source", "source_repo")


@dataclass(frozen=True)
class SourceTable:
    """Resolved absolute file path -> source name, and the file the table was read from."""

    origin: Path
    by_path: dict[str, str]

    def lookup(self, path: str | Path) -> str:
        """The source of ``path``, or ``unknown`` for a file the table does not list."""
        return self.by_path.get(_key(path), UNKNOWN)

    def sources_of(self, paths: Iterable[str | Path]) -> list[str]:
        return [self.lookup(p) for p in paths]


def _key(path: str | Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def read_sources(csv_path: str | Path) -> SourceTable:
    """Read a source CSV: ``path`` plus ``source`` (any CSV) or ``source_repo`` (a data MANIFEST).

    Rows without a source are skipped; a file without either column is refused with the reason.
    """
    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        column = next((c for c in _SOURCE_COLUMNS if c in columns), None)
        if "path" not in columns or column is None:
            raise ValueError(f"{csv_path}: a source table needs the columns path and source (or source_repo); has {columns}")
        table = {_key(csv_path.parent / row["path"]): row[column] for row in reader if row.get(column)}
    return SourceTable(csv_path, table)


def find_manifest(folder: str | Path) -> Path | None:
    """The nearest ``MANIFEST.csv`` in ``folder`` or one of its parents (the data root's table)."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / MANIFEST_NAME).is_file():
            return candidate / MANIFEST_NAME
    return None


def sources_for(folder: str | Path, explicit: str | Path | None = None) -> SourceTable | None:
    """The source table for data under ``folder``: ``explicit`` if given, else the nearest manifest."""
    if explicit is not None:
        return read_sources(explicit)
    manifest = find_manifest(folder)
    return read_sources(manifest) if manifest is not None else None


def sources_of_paths(paths: Iterable[str | Path], labels_csv: str | Path | None = None) -> list[str] | None:
    """Each path's source for a labelled ``cxr-infer`` run: the ``source`` column of the labels
    CSV when it has one, else the manifest nearest each file. ``None`` when no source is known
    for any path, so reports without sources stay as they were."""
    paths = [Path(p) for p in paths]
    explicit = _labels_sources(labels_csv)
    nearest: dict[Path, Path | None] = {}  # folder -> its manifest: one search per folder
    tables: dict[Path, SourceTable] = {}  # manifest -> its table: one read per manifest, not per folder
    found = []
    for path in paths:
        source = explicit.lookup(path) if explicit is not None else UNKNOWN
        if source == UNKNOWN:
            folder = Path(os.path.realpath(path)).parent  # a linked file is listed where it really lies
            if folder not in nearest:
                nearest[folder] = find_manifest(folder)
            manifest = nearest[folder]
            if manifest is not None and manifest not in tables:
                tables[manifest] = read_sources(manifest)
            source = tables[manifest].lookup(path) if manifest is not None else UNKNOWN
        found.append(source)
    return found if any(s != UNKNOWN for s in found) else None


def _labels_sources(labels_csv: str | Path | None) -> SourceTable | None:
    """The labels CSV read as a source table, when it has a ``source`` column."""
    if labels_csv is None:
        return None
    try:
        return read_sources(labels_csv)
    except ValueError:
        return None
