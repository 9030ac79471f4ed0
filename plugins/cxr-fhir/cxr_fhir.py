"""cxr-infer results as FHIR R4: ``cxr-infer IMAGES --format fhir`` writes ``results.fhir.json``.

Two hooks:

- ``register_writers``: the ``fhir`` writer, a Bundle of type ``collection`` holding, per input
  row, one Observation (predicted class and one probability component per class) and one
  DiagnosticReport pointing at it (with the heatmap overlay as ``presentedForm`` when explained).
  An unreadable or gate-rejected input gets a ``cancelled`` report whose conclusion is the error
  (or the gate's reason), so the bundle
  keeps one report per input like every other writer.
- ``process_result``: adds ``snomed`` (the SNOMED CT concept of the predicted class) to every
  row, so CSV and JSON Lines consumers get the coded finding too.

Results are machine output, not a radiologist's read: Observations and reports are
``preliminary``. No patient data is invented; ``subject`` is left for the receiving system.
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cxr_infer.hookspecs import hookimpl

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
IDENTIFIER_SYSTEM = "urn:cxr-toolkit:input-path"
CONCEPTS = {
    "covid": ("840539006", "Disease caused by severe acute respiratory syndrome coronavirus 2"),
    "pneumonia": ("233604007", "Pneumonia"),
    "normal": ("17621005", "Normal"),
}
IMAGING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging", "display": "Imaging"}]}
RADIOLOGY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]}
REPORT_CODE = {"text": "Chest X-ray AI classification (cxr-toolkit)"}


@hookimpl
def register_writers(register):
    register("fhir", FhirBundleWriter, extension=".fhir.json")


@hookimpl
def process_result(result):
    concept = CONCEPTS.get(result.get("label", ""))
    result["snomed"] = concept[0] if concept else ""


def label_concept(label: str) -> dict[str, Any]:
    """A CodeableConcept for a class name: SNOMED CT when the class is known, text otherwise."""
    if label not in CONCEPTS:
        return {"text": label}
    code, display = CONCEPTS[label]
    return {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": label}


class FhirBundleWriter:
    """Streams Bundle entries as rows arrive; the file is complete JSON once :meth:`close` ran."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self._probabilities = [c for c in columns if c.startswith("prob_")]
        self._issued = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._handle = open(path, "w", encoding="utf-8")
        head = {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "collection", "timestamp": self._issued}
        self._handle.write(json.dumps(head)[:-1] + ', "entry": [\n')  # the array stays open until close()
        self._first = True

    def write(self, row: dict[str, Any]) -> None:
        for resource in self._resources(row):
            self._handle.write(("" if self._first else ",\n") + json.dumps(_entry(resource)))
            self._first = False
        self._handle.flush()

    def close(self) -> None:
        self._handle.write("\n]}\n")
        self._handle.close()

    def _resources(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        identifier = [{"system": IDENTIFIER_SYSTEM, "value": str(row["path"])}]
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": str(uuid.uuid4()),
            "identifier": identifier,
            "category": [RADIOLOGY],
            "code": REPORT_CODE,
            "issued": self._issued,
        }
        if row.get("error") or not row.get("label"):  # unreadable, or rejected by the input gate
            reason = row.get("error") or row.get("gate_reason") or "no class"
            return [{**report, "status": "cancelled", "conclusion": f"not classified: {reason}"}]
        observation = self._observation(row, identifier)
        report.update(
            status="preliminary",
            result=[{"reference": f"urn:uuid:{observation['id']}"}],
            conclusion=f"{row['label']} (probability {row.get('prob_' + row['label'], '?')})",
            conclusionCode=[label_concept(row["label"])],
        )
        if row.get("heatmap"):
            overlay = Path(row["heatmap"])
            content_type = mimetypes.guess_type(overlay.name)[0] or "application/octet-stream"  # JPEG by default, PNG on request
            report["presentedForm"] = [{"contentType": content_type, "url": overlay.resolve().as_uri(), "title": "Grad-CAM overlay"}]
        return [observation, report]

    def _observation(self, row: dict[str, Any], identifier: list[dict[str, str]]) -> dict[str, Any]:
        components = [
            {
                "code": {"text": f"probability of {column.removeprefix('prob_')}"},
                "valueQuantity": {"value": float(row[column]), "system": UCUM, "code": "1", "unit": "probability"},
            }
            for column in self._probabilities
            if row.get(column, "") != ""
        ]
        return {
            "resourceType": "Observation",
            "id": str(uuid.uuid4()),
            "identifier": identifier,
            "status": "preliminary",
            "category": [IMAGING],
            "code": REPORT_CODE,
            "issued": self._issued,
            "valueCodeableConcept": label_concept(row["label"]),
            "component": components,
        }


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
