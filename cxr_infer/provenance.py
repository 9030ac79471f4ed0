"""What every output of a run says about where it came from (DESIGN.md "Results").

A results file or a metrics report read months later must name the model that made it: its
name, version and the sha256 of the ONNX file (:class:`~cxr_infer.pacs.identity.ModelIdentity`,
the same identity the DICOM results carry), and the toolkit version that ran it. ``run.json``,
written beside the results, adds what the run was: providers, times, counts and settings.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cxr_infer import __version__ as TOOLKIT_VERSION
from cxr_infer.pacs.identity import ModelIdentity

RUN_FILE = "run.json"


def model_provenance(classifier) -> dict[str, Any]:
    """``{"model": {name, version, sha256, file}, "toolkit_version": ...}`` of a loaded
    :class:`~cxr_infer.api.Classifier`: the part every output carries."""
    identity = ModelIdentity.of(classifier)
    return {"model": {**asdict(identity), "file": str(classifier.info.path)}, "toolkit_version": TOOLKIT_VERSION}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_record(
    classifier,
    started_at: str,
    tally: dict[str, Any],
    settings: dict[str, Any],
    files: dict[str, str | None],
    providers: list[str] | None = None,
    finished: bool = True,
) -> dict[str, Any]:
    """The content of ``run.json``: provenance, execution providers, start and end (UTC;
    ``finished_at`` is null in the record written as the run starts, so a run that never ends
    still names its model), ``tally`` (inputs, counts per class, gate rejections, errors by
    kind, images/s), the run's ``settings`` and its output ``files`` (relative to the output
    folder). ``providers``: those of the sessions that classified, when they are not the
    ``classifier``'s own (another engine's workers)."""
    return {
        **model_provenance(classifier),
        "providers": list(classifier.providers) if providers is None else list(providers),
        "started_at": started_at,
        "finished_at": utc_now() if finished else None,
        **tally,
        "settings": settings,
        "files": files,
    }


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, default=str) + "\n", encoding="utf-8")
