"""DICOM results of real radiographs: Secondary Capture and TID 1500 Structured Report content."""

from __future__ import annotations

import io

import highdicom as hd
from highdicom.sr.utils import find_content_items
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import SecondaryCaptureImageStorage

from cxr_infer.dicom import read_dataset
from cxr_infer.pacs.identity import ModelIdentity
from cxr_infer.pacs.results import build_results, dicom_out_annotator, dicom_results
from cxr_infer.pacs.secondary_capture import NOT_FOR_DIAGNOSTIC_USE
from cxr_infer.pacs.structured_report import class_code

from infer_support import DICOMS
from pacs_support import encoded, radiograph_dataset

PATIENT_STUDY_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "AccessionNumber")


@pytest.fixture(scope="module")
def model(pacs_classifier) -> ModelIdentity:
    return ModelIdentity.of(pacs_classifier)


@pytest.fixture(scope="module", params=DICOMS, ids=[path.name[:24] for path in DICOMS])
def classified(request, pacs_classifier, model):
    source = read_dataset(request.param)
    prediction = pacs_classifier.predict_one(source, explain=True)
    return source, prediction, dicom_results(pacs_classifier, source, model)


@pytest.mark.data
def test_secondary_capture_shows_the_result_on_the_radiograph(classified, model):
    source, prediction, results = classified
    sc = results.secondary_capture
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.BurnedInAnnotation == "YES"
    assert NOT_FOR_DIAGNOSTIC_USE in sc.SeriesDescription and prediction.label in sc.SeriesDescription
    for tag in PATIENT_STUDY_TAGS:
        assert str(sc.get(tag) or "") == str(source.get(tag) or ""), tag
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID and sc.SOPInstanceUID != source.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    ours = [item for item in sc.ContributingEquipmentSequence if item.Manufacturer == "cxr-toolkit"]
    assert len(ours) == 1 and model.sha256 in ours[0].ContributionDescription
    assert ours[0].ManufacturerModelName == model.name
    pixels = pydicom.dcmread(io.BytesIO(encoded(sc))).pixel_array
    assert pixels.shape == (source.Rows, source.Columns, 3)
    band = pixels[-pixels.shape[0] // 8 :]
    yellow = (band[..., 0] > 200) & (band[..., 1] > 200) & (band[..., 2] < 80)
    assert yellow.sum() > 50, "the NOT FOR DIAGNOSTIC USE line is not drawn"
    assert np.abs(pixels[..., 0].astype(int) - pixels[..., 2]).mean() > 1, "no colour overlay burned in"


@pytest.mark.data
def test_structured_report_follows_tid_1500(classified, model):
    source, prediction, results = classified
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(encoded(results.structured_report))))
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.Modality == "SR"
    assert NOT_FOR_DIAGNOSTIC_USE in sr.SeriesDescription
    groups = sr.content.get_image_measurement_groups()
    probabilities, present = {}, []
    for group in groups:
        (measurement,) = group.get_measurements(name=codes.DCM.Probability)
        probabilities[group.finding_type.meaning] = measurement.value
        (evaluation,) = group.get_qualitative_evaluations(name=group.finding_type)
        if evaluation.value == codes.SCT.Present:
            present.append(group.finding_type)
        algorithm = {
            concept: [item.value for item in find_content_items(group[0], name=concept, recursive=True)]
            for concept in (codes.DCM.AlgorithmName, codes.DCM.AlgorithmVersion, codes.DCM.AlgorithmParameters)
        }
        assert list(algorithm.values()) == [[model.name], [model.version], [f"sha256={model.sha256}"]]
        assert group.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID
    assert present == [class_code(prediction.label)]
    expected = {class_code(name).meaning: value for name, value in prediction.probabilities.items()}
    assert probabilities == pytest.approx(expected, abs=1e-6)
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {source.SOPInstanceUID, results.secondary_capture.SOPInstanceUID}


def test_results_are_idempotent_per_source_and_model(pacs_classifier, model, external_jpegs):
    """A result made again (retry, restart) has the same UIDs, so the PACS replaces it."""
    source = radiograph_dataset(external_jpegs[0], max_side=256)
    first, second = (dicom_results(pacs_classifier, source, model) for _ in range(2))
    assert [ds.SOPInstanceUID for ds in first.datasets] == [ds.SOPInstanceUID for ds in second.datasets]
    other = radiograph_dataset(external_jpegs[1], max_side=256, study_uid=source.StudyInstanceUID)
    assert dicom_results(pacs_classifier, other, model).secondary_capture.SOPInstanceUID != first.secondary_capture.SOPInstanceUID


@pytest.mark.data
def test_model_without_heatmap_still_gets_results(pacs_classifier, model):
    source = read_dataset(DICOMS[0])
    prediction = pacs_classifier.predict_one(source)
    assert prediction.heatmap is None
    results = build_results(source, np.asarray(source.pixel_array, dtype=np.float32), prediction, model)
    assert results.secondary_capture.BurnedInAnnotation == "YES"


def test_dicom_out_writes_results_for_dicom_inputs_only(pacs_classifier, model, tmp_path, external_jpegs):
    out = tmp_path / "dicom-out"
    inputs = [DICOMS[0], external_jpegs[0]]
    rows = list(pacs_classifier.stream(inputs, explain=True, annotators=[dicom_out_annotator(out, model)]))
    (dicom_prediction, dicom_fields), (jpeg_prediction, jpeg_fields) = rows
    assert dicom_prediction.error is None and jpeg_prediction.error is None
    assert jpeg_fields == {}
    written = sorted(out.iterdir())
    assert [path.name[:3] for path in written] == ["SC_", "SR_"]
    assert dicom_fields["dicom_out"] == ";".join(str(out / name) for name in sorted(p.name for p in written))
    assert {pydicom.dcmread(path).StudyInstanceUID for path in written} == {read_dataset(DICOMS[0]).StudyInstanceUID}


@pytest.mark.data
def test_cli_dicom_out(tiny_model_path, tmp_path):
    """``cxr-infer PATH --dicom-out DIR`` writes an SC and an SR per DICOM instance."""
    from click.testing import CliRunner

    from cxr_infer.cli import main

    out = tmp_path / "dicom"
    result = CliRunner().invoke(main, [str(DICOMS[0]), "--model", str(tiny_model_path), "--out", str(tmp_path / "res"), "--dicom-out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    written = [pydicom.dcmread(path) for path in sorted(out.iterdir())]
    assert [ds.Modality for ds in written] == ["OT", "SR"]
    assert written[0].BurnedInAnnotation == "YES"
