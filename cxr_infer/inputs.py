"""What to classify: PATH arguments (files, folders, ``-`` for a list on stdin) turned into a
lazy, ordered stream of inputs, with true labels where the data carries them.

A folder with subfolders named after the model's classes is a labelled data set (DESIGN.md
"Data"): images in ``<folder>/<class>/`` get that class as their true label.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TextIO


@dataclass(frozen=True)
class Input:
    """One file to classify; ``name`` is its path below the argument it came from (folders kept).

    ``skipped`` is the reason a folder entry is not read (hidden, unsupported type, a folder
    not entered): it still gets its row, with that reason, and counts as no failure.
    """

    path: str
    name: PurePath
    label: str | None = None
    skipped: str | None = None


def is_labelled_folder(folder: Path, classes: Collection[str]) -> bool:
    return folder.is_dir() and any((folder / name).is_dir() for name in classes)


def read_labels(csv_path: Path, classes: Collection[str]) -> dict[str, str]:
    """``path,label`` rows (paths relative to the CSV's folder or absolute) -> {resolved path: label}."""
    labels: dict[str, str] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
                raise ValueError(f"{csv_path}: a labels CSV needs the columns path,label")
            for line, row in enumerate(reader, start=2):
                if row["label"] not in classes:
                    raise ValueError(f"{csv_path}:{line}: label {row['label']!r} is not a model class ({', '.join(classes)})")
                labels[_key(csv_path.parent / row["path"])] = row["label"]
    except OSError as error:
        raise ValueError(f"{csv_path}: cannot read labels ({error.strerror or error})") from error
    return labels


def discover(
    arguments: Iterable[str],
    *,
    extensions: Collection[str],
    classes: Collection[str],
    recursive: bool = False,
    labels: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    skip: Iterable[Path | None] = (),
) -> Iterator[Input]:
    """Yield the inputs named by the arguments, lazily and in a stable (sorted) order.

    Folders give their files with a known image extension or none (DICOM exports often have
    none); subfolders only with ``recursive``, except the class subfolders of a labelled folder.
    Every entry of a folder is yielded, once: what is not read (hidden entries, other
    extensions, folders not entered) carries its ``skipped`` reason, and what cannot be read
    (a dangling link, a FIFO) gets its error from the reader, which never opens a non-regular
    file. A path that does not exist is still yielded, so it gets its error row. Folders in
    ``skip`` (the output folders) are never entered, so a run never classifies what it is
    writing, and a folder reached twice through symbolic links is entered once.
    """
    skipped = {_key(folder) for folder in skip if folder is not None}
    for argument in arguments:
        if argument == "-" and stdin is not None:
            paths = (line.strip() for line in stdin)
            found = (Input(p, _safe_name(PurePath(p))) for p in paths if p)
        elif Path(argument).is_dir():
            found = _folder(Path(argument), extensions, classes, recursive, skipped)
        else:
            found = iter([Input(argument, PurePath(Path(argument).name or "input"))])
        for item in found:
            label = item.label if labels is None else labels.get(_key(Path(item.path)), item.label)
            yield Input(item.path, item.name, label, item.skipped)


def counted(inputs: Iterator[Input], arguments: Collection[str]) -> tuple[Iterable[Input], int | None]:
    """The inputs and their number when it can be known before the run, for a progress total.

    Files and folders are listed up front (names only, nothing is decoded); a list on stdin
    (``-``) stays lazy, so a stream of unknown length starts at once: its number is ``None``.
    """
    if "-" in arguments:
        return inputs, None
    listed = list(inputs)
    return listed, len(listed)


def _folder(root: Path, extensions: Collection[str], classes: Collection[str], recursive: bool, skipped: Collection[str]) -> Iterator[Input]:
    labelled = is_labelled_folder(root, classes)
    base = PurePath(root.resolve().name or "root")
    visited = {_identity(root)}
    for path, reason in _walk(root, extensions, recursive, set(classes) if labelled else set(), skipped, visited):
        relative = path.relative_to(root)
        label = relative.parts[0] if labelled and len(relative.parts) > 1 and reason is None else None
        yield Input(str(path), base / relative, label, reason)


def _walk(
    folder: Path, extensions: Collection[str], recursive: bool, descend: Collection[str], skipped: Collection[str], visited: set
) -> Iterator[tuple[Path, str | None]]:
    """``(path, skip reason or None)`` for every entry: first the entries not entered (files and
    skipped folders), then the entered subfolders' entries, each sorted by name."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    entered = []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            yield path, "hidden entry"
        elif not _is_dir(entry):
            yield path, _unsupported(entry.name, extensions)
        elif _key(path) in skipped:
            yield path, "output folder of this run"
        elif not (recursive or entry.name in descend):
            yield path, "folder not entered (subfolders are read with --recursive)"
        elif _identity(path) in visited:
            yield path, "folder already read through another path (symbolic link cycle)"
        else:
            visited.add(_identity(path))
            entered.append(path)
    for path in entered:
        yield from _walk(path, extensions, recursive, (), skipped, visited)


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder (links followed); a broken link or a link loop is not, and gets its reader's error."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _identity(folder: Path) -> tuple[int, int]:
    info = folder.stat()
    return info.st_dev, info.st_ino


def _unsupported(name: str, extensions: Collection[str]) -> str | None:
    """Why a file is not read for its extension (None: a known image extension, or none at all)."""
    suffix = Path(name).suffix.lower()
    return None if suffix == "" or suffix in extensions else f"unsupported file type {suffix!r}"


def _safe_name(path: PurePath) -> PurePath:
    """A relative path that cannot climb out of the output folder (no root, no '..')."""
    parts = [part for part in path.parts if part not in (path.anchor, "", ".", "..")]
    return PurePath(*parts) if parts else PurePath("input")


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))
