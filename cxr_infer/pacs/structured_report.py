"""Structured Report result: the classification as a Comprehensive 3D SR following TID 1500.

Downstream systems parse this one. The content tree is a Measurement Report (TID 1500) with
one TID 1501 group per class: the class as finding type (SNOMED CT where it has a code), its
probability (DCM 122157 "Probability", unitless) and a Present/Absent evaluation (CID 240) that
marks the predicted class. Each group names the algorithm (TID 4019: name, version, file sha256)
and the source image; the evidence sequence references the source radiograph and the Secondary
Capture.
"""

from __future__ import annotations

from collections.abc import Mapping

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cxr_infer.pacs.identity import MANUFACTURER, ModelIdentity, result_uid
from cxr_infer.pacs.secondary_capture import contributing_equipment, series_description

SR_SERIES_NUMBER = 9902
PRIVATE_SCHEME = "99CXR"
CHEST_XRAY = Code("399208008", "SCT", "Plain X-ray of chest")
UNITLESS = Code("1", "UCUM", "no units")
CLASS_CODES = {
    "covid": Code("840539006", "SCT", "COVID-19"),
    "pneumonia": Code("233604007", "SCT", "Pneumonia"),
    "normal": Code("17621005", "SCT", "Normal"),
}


def class_code(name: str) -> Code:
    """SNOMED CT code of a known class; a model-specific class gets a private code with its name."""
    return CLASS_CODES.get(name.lower(), Code(name[:16], PRIVATE_SCHEME, name))


def algorithm(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version, parameters=[f"sha256={model.sha256}"], manufacturer=MANUFACTURER
    )


def _observation_context(model: ModelIdentity) -> hd.sr.ObservationContext:
    """The device observer is the model file itself (its UID derives from the sha256)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=result_uid("device", model, "observer"), name=model.name[:64], manufacturer_name=MANUFACTURER, model_name=model.name[:64]
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    )


def _groups(
    source: Dataset, label: str, probabilities: Mapping[str, float], model: ModelIdentity
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """One group per class: the class as finding type, its probability, and whether it is the
    predicted finding (Present) or not (Absent), each citing the algorithm and the source image."""
    source_image = [hd.sr.SourceImageForMeasurementGroup.from_source_image(source)]
    return [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=result_uid(source.SOPInstanceUID, model, f"class-{name}"), identifier=name),
            finding_type=class_code(name),
            algorithm_id=algorithm(model),
            measurements=[hd.sr.Measurement(name=codes.DCM.Probability, value=float(value), unit=UNITLESS)],
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(class_code(name), codes.SCT.Present if name == label else codes.SCT.Absent)
            ],
            source_images=source_image,
        )
        for name, value in probabilities.items()
    ]


def _describable(source: Dataset) -> bool:
    """Whether highdicom can write the TID 1600 image library entry of a projection radiograph.

    It needs PatientOrientation and ImagerPixelSpacing, which many CR/DX files lack; without them
    the source is still referenced by every measurement group and the evidence sequence.
    """
    return all(source.get(keyword) for keyword in ("PatientOrientation", "ImagerPixelSpacing"))


def structured_report(
    source: Dataset, secondary: Dataset, label: str, probabilities: Mapping[str, float], model: ModelIdentity
) -> Dataset:
    """Build the TID 1500 Comprehensive 3D SR of one source image and its Secondary Capture."""
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=CHEST_XRAY,
        imaging_measurements=_groups(source, label, probabilities, model),
        referenced_images=[source] if _describable(source) else None,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[secondary, source],  # the SC first: highdicom copies Patient/Study from it, all Type 2 present
        content=report,
        series_instance_uid=result_uid(source.SOPInstanceUID, model, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(source.SOPInstanceUID, model, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        contributing_equipment=[contributing_equipment(model)],
    )
    sr.SeriesDescription = series_description(label, model)
    return sr
