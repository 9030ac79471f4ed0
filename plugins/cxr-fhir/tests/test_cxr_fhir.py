"""The installed ``cxr-fhir`` plugin: its writer and post-processor, alone and inside ``cxr-infer``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from click.testing import CliRunner
from fhir.resources.R4B.bundle import Bundle

from cxr_fhir import CONCEPTS
from cxr_infer.cli import main as infer_main
from cxr_infer.plugins import describe_plugins, get_plugin_manager, process_result
from cxr_infer.results import columns
from cxr_infer.writers import available_writers

CLASSES = ("covid", "normal", "pneumonia")


def resources(path: Path, kind: str) -> list[dict]:
    """The resources of ``kind`` in a bundle that validates against the FHIR R4B models."""
    text = path.read_text()
    Bundle.model_validate_json(text)
    bundle = json.loads(text)
    assert bundle["type"] == "collection"
    return [entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == kind]


def test_installed_and_listed() -> None:
    writer = available_writers()["fhir"]
    assert (writer.plugin, writer.extension) == ("fhir", ".fhir.json")
    row = next(row for row in describe_plugins(get_plugin_manager()) if row["name"] == "fhir")
    assert row["package"] == "cxr-fhir" and row["hooks"] == ["process_result", "register_writers"]


def test_process_result_adds_the_snomed_code() -> None:
    rows = [{"path": "a.png", "label": "pneumonia", "error": ""}, {"path": "b.png", "label": "", "error": "empty file"}]
    for row in rows:
        process_result(get_plugin_manager(), row)
    assert [row["snomed"] for row in rows] == ["233604007", ""]


def test_bundle_links_each_report_to_its_observation(tmp_path: Path) -> None:
    writer = available_writers()["fhir"].factory(tmp_path / "r.fhir.json", columns(CLASSES, labelled=False))
    probabilities = {"prob_covid": 0.7, "prob_normal": 0.1, "prob_pneumonia": 0.2}
    writer.write({"path": "a.png", "label": "covid", **probabilities, "heatmap": str(tmp_path / "a.png"), "error": ""})
    writer.write({"path": "b.png", "label": "", "prob_covid": "", "prob_normal": "", "prob_pneumonia": "", "heatmap": "", "error": "empty file"})
    writer.write({"path": "c.png", "label": "", "gate": "reject", "gate_reason": "not a frontal chest radiograph", "error": ""})
    writer.close()
    observations = resources(tmp_path / "r.fhir.json", "Observation")
    reports = resources(tmp_path / "r.fhir.json", "DiagnosticReport")
    assert [r["status"] for r in reports] == ["preliminary", "cancelled", "cancelled"] and len(observations) == 1
    assert reports[2]["conclusion"] == "not classified: not a frontal chest radiograph"
    assert reports[0]["result"] == [{"reference": f"urn:uuid:{observations[0]['id']}"}]
    assert reports[0]["conclusionCode"][0]["coding"][0]["code"] == CONCEPTS["covid"][0]
    assert reports[0]["presentedForm"][0]["url"] == (tmp_path / "a.png").as_uri()
    assert [c["valueQuantity"]["value"] for c in observations[0]["component"]] == [0.7, 0.1, 0.2]
    assert "empty file" in reports[1]["conclusion"] and "result" not in reports[1]


def test_cxr_infer_writes_one_report_per_input_and_snomed_in_every_format(tiny_model_path: Path, dozen_images: Path, tmp_path: Path) -> None:
    """One test for both runs: they share the model, which ``pytest -n 2`` would export per worker."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    args = [str(dozen_images), str(broken), "--model", str(tiny_model_path), "--quiet", "--batch-size", "5"]
    result = CliRunner().invoke(infer_main, [*args, "--out", str(tmp_path / "fhir"), "--format", "fhir", "--explain"])
    assert result.exit_code == 1, result.output  # one input failed, and has its row
    reports = resources(tmp_path / "fhir" / "results.fhir.json", "DiagnosticReport")
    assert [r["identifier"][0]["value"] for r in reports][-1] == str(broken)
    assert [r["status"] for r in reports] == ["preliminary"] * 12 + ["cancelled"]
    assert all(Path(url2pathname(urlparse(r["presentedForm"][0]["url"]).path)).is_file() for r in reports[:12])
    assert len(resources(tmp_path / "fhir" / "results.fhir.json", "Observation")) == 12

    result = CliRunner().invoke(infer_main, [*args, "--out", str(tmp_path / "csv")])
    with open(tmp_path / "csv" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 13 and rows[-1]["error"]
    assert all(json.loads(row["extra"])["snomed"] == CONCEPTS[row["label"]][0] for row in rows[:12])


def test_allow_list_excludes_it(allow_only) -> None:
    allow_only("clahe,densenet")
    assert "fhir" not in available_writers()
    row = {"path": "a.png", "label": "covid", "error": ""}
    process_result(get_plugin_manager(), row)
    assert "snomed" not in row
