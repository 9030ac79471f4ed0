"""The input gate: cheap checks, DICOM header checks, the bundled learned check, and the gate in
every path (API, CLI rows and metrics, serve-dicom)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from infer_support import DATA, DICOMS, labelled_subset
from pydicom import Dataset

from cxr_infer.cli import main
from cxr_infer.dicom import read_dataset
from cxr_infer.gate import (
    PASS,
    REJECT,
    GateModel,
    blank_reason,
    dicom_header,
    header_reason,
    image_reason,
    inspect,
)
from cxr_train.gate_negatives import GENERATORS, generate

SAMPLES = sorted((Path(__file__).parents[2] / "exported" / "samples").glob("*.jpg"))
OOD = DATA / "ood"
HELD_OUT_DENTAL = sorted((OOD / "other-xray").glob("dental_*.jpg"))  # never seen by the bundled gate


@pytest.fixture(scope="module")
def gate() -> GateModel:
    return GateModel.load(device="cpu", threads=1)


def _verdicts(gate: GateModel, images: list[np.ndarray]):
    return gate.decide([inspect(image) for image in images])


def _radiograph(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def test_image_checks_reject_small_elongated_and_blank_images():
    assert "too small" in image_reason(np.zeros((40, 300), np.uint8))
    assert "aspect ratio 4.0:1" in image_reason(np.zeros((100, 400), np.uint8))
    assert image_reason(np.zeros((300, 360), np.uint8)) is None
    for flat in (np.zeros((80, 80)), np.full((80, 80), 255.0), np.full((80, 80), 30_000.0)):
        assert "blank" in blank_reason(flat, np.dtype(np.uint16 if flat.max() > 255 else np.uint8))
    faint = np.random.default_rng(0).normal(128, 3, (512, 512)).clip(0, 255).astype(np.uint8)  # a gray frame with sensor noise
    assert "blank" in inspect(faint).reason
    ten_bit_film = cv2.resize(_radiograph(SAMPLES[0]), (64, 64)).astype(np.float32) * 4  # 0..1020 in a 16-bit file
    assert blank_reason(ten_bit_film, np.dtype(np.uint16)) is None
    assert "blank" in inspect(np.zeros((512, 512, 4), np.uint8)).reason  # a fully transparent PNG
    assert inspect(_radiograph(SAMPLES[0])).tensor.shape == (1, 64, 64)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("Modality", "CT", "Modality CT is not a radiograph"),
        ("Modality", "MG", "Modality MG"),
        ("ViewPosition", "LL", "LL is a lateral view"),
        ("ViewPosition", "RLO", "oblique"),
        ("BodyPartExamined", "HAND", "BodyPartExamined HAND is not the chest"),
        ("BodyPartExamined", "CHEST", None),
        ("ViewPosition", "AP", None),
        ("Modality", "DX", None),
    ],
)
def test_header_checks(field, value, expected):
    ds = Dataset()
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "CR", "PA", "CHEST"
    setattr(ds, field, value)
    reason = header_reason(ds)
    assert (reason is None) if expected is None else (expected in reason)
    assert header_reason(Dataset()) is None  # an empty header is no reason: the learned check decides


@pytest.mark.data
def test_shared_dicoms_pass_the_header_check_and_their_header_is_read():
    for path in DICOMS:
        header = dicom_header(path)
        assert header is not None and "PixelData" not in header
        assert header_reason(header) is None, path
    assert dicom_header(SAMPLES[0]) is None


@pytest.mark.data
def test_learned_gate_rejects_generated_inputs_and_passes_radiographs(gate):
    generated = [generate(kind, seed) for kind in GENERATORS for seed in (101, 202)]
    verdicts = _verdicts(gate, generated)
    assert all(v.verdict == REJECT and v.reason for v in verdicts), [(k, v) for k, v in zip(list(GENERATORS) * 2, verdicts) if not v.rejected]
    radiographs = [_radiograph(p) for p in SAMPLES] + [_radiograph(p) for p in sorted((DATA / "cxr3-external" / "normal").glob("*.jpg"))[:8]]
    passed = _verdicts(gate, radiographs)
    assert all(v.verdict == PASS and v.score >= gate.settings.threshold for v in passed), passed


@pytest.mark.data
def test_learned_gate_rejects_ood_images(gate):
    """A few real non-chest images per ood/ category, and the dental images it never saw."""
    picked = [p for category in ("lateral", "ct", "natural", "document") for p in sorted((OOD / category).glob("*.jpg"))[:3]]
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in picked + HELD_OUT_DENTAL]
    verdicts = _verdicts(gate, images)
    rejected = sum(v.rejected for v in verdicts)
    assert rejected >= len(images) - 1, [(p.name, v.score) for p, v in zip(picked + HELD_OUT_DENTAL, verdicts) if not v.rejected]
    assert all("not a frontal chest radiograph" in v.reason for v in verdicts if v.rejected and v.score is not None)


@pytest.mark.data
def test_api_rejects_warns_and_can_be_off(tiny_model_path):
    from cxr_infer.api import Classifier

    noise = generate("uniform_noise", 7, (300, 300))
    ct = read_dataset(DICOMS[0])
    ct.Modality = "CT"
    film = str(SAMPLES[0])
    with Classifier.load(tiny_model_path, device="cpu", threads=1) as classifier:
        assert classifier.gate == "reject"
        rejected_noise, rejected_ct, passed = classifier.predict([noise, ct, film])
        assert rejected_noise.label is None and rejected_noise.probabilities == {} and rejected_noise.error is None
        assert rejected_noise.gate.rejected and "not a frontal chest radiograph" in rejected_noise.gate.reason
        assert rejected_ct.label is None and "Modality CT" in rejected_ct.gate.reason and rejected_ct.gate.score is None
        assert passed.label in classifier.classes and passed.gate.verdict == PASS
        warned = classifier.predict_one(noise, gate="warn")
        assert warned.label in classifier.classes and warned.gate.rejected
        off = classifier.predict_one(noise, gate="off")
        assert off.label in classifier.classes and off.gate.verdict == "" and off.gate.score is None
    with Classifier.load(tiny_model_path, device="cpu", threads=1, gate="off") as classifier:
        assert classifier.predict_one(noise).gate.verdict == ""


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _mixed_folder(folder: Path) -> Path:
    folder.mkdir()
    cv2.imwrite(str(folder / "a_film.png"), _radiograph(SAMPLES[0]))
    cv2.imwrite(str(folder / "b_noise.png"), generate("uniform_noise", 3, (320, 320)))
    cv2.imwrite(str(folder / "c_page.png"), generate("text_page", 3, (400, 300)))
    cv2.imwrite(str(folder / "d_black.png"), np.zeros((300, 300), np.uint8))
    cv2.imwrite(str(folder / "e_strip.png"), np.tile(np.arange(256, dtype=np.uint8), (120, 3)))
    return folder


def test_cli_rows_carry_the_gate_columns_and_rejection_is_no_error(tiny_model_path, tmp_path):
    folder = _mixed_folder(tmp_path / "in")
    result = CliRunner().invoke(main, [str(folder), "--model", str(tiny_model_path), "--out", str(tmp_path / "out"), "-q", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "4 rejected by the gate" in result.output
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "out")}
    assert rows["a_film.png"]["gate"] == "pass" and rows["a_film.png"]["label"] and float(rows["a_film.png"]["gate_score"]) > 0
    for name in ("b_noise.png", "c_page.png", "d_black.png", "e_strip.png"):
        row = rows[name]
        assert row["gate"] == "reject" and row["label"] == "" and row["error"] == "", row
        assert all(row[f"prob_{c}"] == "" for c in ("covid", "normal", "pneumonia"))
    assert "blank" in rows["d_black.png"]["gate_reason"] and rows["d_black.png"]["gate_score"] == ""
    assert "aspect ratio" in rows["e_strip.png"]["gate_reason"]
    assert "not a frontal chest radiograph" in rows["b_noise.png"]["gate_reason"]


@pytest.mark.parametrize("mode", ["warn", "off"])
def test_cli_gate_modes(tiny_model_path, tmp_path, mode):
    folder = _mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(folder), "--model", str(tiny_model_path), "--out", str(out), "-q", "--gate", mode, "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert all(r["label"] for r in rows.values())  # everything is classified in both modes
    if mode == "warn":
        assert rows["b_noise.png"]["gate"] == "reject" and rows["a_film.png"]["gate"] == "pass"
    else:
        assert all(r["gate"] == r["gate_score"] == r["gate_reason"] == "" for r in rows.values())


@pytest.mark.data
def test_metrics_leave_rejected_inputs_out(tiny_model_path, tmp_path):
    folder = labelled_subset(tmp_path / "labelled", per_class=2)
    cv2.imwrite(str(folder / "covid" / "zz_page.png"), generate("text_page", 5, (400, 300)))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(folder), "--model", str(tiny_model_path), "--out", str(out), "-q", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["n"] == 6 and report["gate_rejected"] == 1
    assert "left out of these metrics: 1 inputs rejected" in result.output


def test_serve_dicom_sends_nothing_for_a_rejected_input(tiny_model_path, tmp_path, caplog):
    from pacs_support import radiograph_dataset, send_datasets

    from cxr_infer.pacs.listener import Listener, ListenerConfig
    from cxr_infer.pacs.worker import ModelSpec

    page = tmp_path / "page.png"
    cv2.imwrite(str(page), generate("text_page", 9, (400, 320)))
    film, scan = radiograph_dataset(SAMPLES[0], max_side=256), radiograph_dataset(page, modality="DX")  # headers say "frontal chest"
    config = ListenerConfig(aet="CXRGATE", port=0, host="127.0.0.1", spool=tmp_path / "spool", workers=1)
    listener = Listener(ModelSpec(str(tiny_model_path), "cpu"), config)
    caplog.set_level(logging.INFO, logger="cxr_infer.pacs")
    listener.start()
    try:
        assert send_datasets([film, scan], listener.port, "CXRGATE") == [0, 0]
        assert listener.wait_idle(90)
    finally:
        listener.stop()
    rejected = [r for r in caplog.records if r.name == "cxr_infer.pacs" and r.getMessage() == "rejected"]
    assert len(rejected) == 1 and rejected[0].fields["sop_instance_uid"] == scan.SOPInstanceUID
    assert "not a frontal chest radiograph" in rejected[0].fields["reason"]
    assert len(listener.spool.results()) == 2  # the film's SC and SR only
    assert listener.spool.incoming() == [] and list(listener.spool.failed_dir.iterdir()) == []
